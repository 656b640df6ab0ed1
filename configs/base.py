"""Every config field, declared once with its meaning. Experiment files import this and override.

Sections: data, sde (the diffusion path), model, loss, schedule, optim, train, eval.
"""
import ml_collections

MODES = ('train', 'eval', 'sample', 'fit_schedule')


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0                        # Base PRNG seed; every random stream is folded from it.

  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'toy'                   # 'toy' (a target below) | 'digits' | 'mnist' | 'cifar10' | 'fake'.
  data.target = 'cantor'                 # Toy target: 'gaussian' | 'bimodal' | 'cantor' | 'gmm'.
  data.dim = 1                           # gaussian: dimension d of N(0, std^2 I_d).
  data.std = 0.1                         # gaussian: c; bimodal: std of each component.
  data.offset = 1.0                      # bimodal: components at -offset and +offset.
  data.cantor_depth = 4                  # cantor: depth K (2^K components).
  data.cantor_tau = 0.005                # cantor: mollifier std tau.
  data.means = [-1.0, 0.5]               # gmm: component means (1-D).
  data.stds = [0.1, 0.3]                 # gmm: component stds.
  data.weights = [0.3, 0.7]              # gmm: component weights (sum to 1).
  data.fake_shape = (8, 8, 1)            # fake: shape of the random in-memory images.
  data.random_flip = False               # Random horizontal flips of training images.
  data.tfds_data_dir = ''                # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets).

  config.sde = sde = ml_collections.ConfigDict()
  sde.name = 've'                        # 've' (alpha = 1, EDM) | 'vp' (alpha^2 + sigma^2 = 1).
  sde.sigma_min = 0.002                  # ve: sigma at t = 0 (EDM).
  sde.sigma_max = 80.0                   # ve: sigma at t = 1 (EDM).
  sde.parametrisation = 'geometric'      # ve: sigma(t) 'geometric' (score_sde) | 'linear' (EDM's sigma = t).
  sde.beta_schedule = 'linear'           # vp: 'linear' (beta_min..beta_max) | 'cosine' (Nichol & Dhariwal).
  sde.beta_min = 0.1                     # vp linear: beta at tau = 0.
  sde.beta_max = 20.0                    # vp linear: beta at tau = 1.
  sde.eps = 1e-3                         # vp: the data end sits at internal time eps (sigma > 0).

  config.model = model = ml_collections.ConfigDict()
  model.name = 'mlp'                     # Backbone: 'mlp' (vectors) | 'unet' (images).
  model.exact_score = False              # Toy targets: use the closed-form score instead of a network.
  model.precond = 'edm'                  # Preconditioning: 'edm' | 'vp' (epsilon prediction) | 've'.
  model.sigma_data = 0.5                 # EDM's sigma_data: the data's standard deviation.
  model.mlp = mlp = ml_collections.ConfigDict()
  mlp.width = 128                        # Hidden units per layer.
  model.mlp.depth = 3                    # Hidden layers.
  model.mlp.embedding_dim = 64           # Size of the sinusoidal noise-level embedding.
  model.unet = unet = ml_collections.ConfigDict()
  unet.channels = 128                    # Base channel count (DDPM / DDPM++ on CIFAR-10: 128).
  unet.channel_mult = (1, 2, 2, 2)       # Channel multiplier per resolution.
  unet.num_res_blocks = 2                # Residual blocks per resolution.
  unet.attn_resolutions = (16,)          # Resolutions (side length) with self-attention.
  unet.dropout = 0.1                     # Dropout rate in residual blocks.
  unet.embedding = 'positional'          # Noise-level embedding: 'positional' | 'fourier'.
  model.dtype = 'float32'                # Compute dtype: 'float32' | 'bfloat16' (accelerators).

  config.loss = loss = ml_collections.ConfigDict()
  loss.weighting = 'precond'             # 'precond': 1 / c_out^2 (unit weight on the network output) | 'uniform'.

  config.schedule = schedule = ml_collections.ConfigDict()
  schedule.num_steps = 100               # T: the schedule has T + 1 points (static for the whole run).
  schedule.cost = 'corrector'            # Cost whose rate is equalised: 'corrector' (L_c).
  schedule.init = 'linear'               # Initial schedule (a baseline): linear | cosine | edm_rho3 | edm_rho7 | log_linear.
  schedule.learn = True                  # Learn the schedule online while training (False: fixed baseline run).
  schedule.gamma = 0.1                   # Blend rate of each online update, in (0, 1].
  schedule.min_count = 8                 # Update once every level holds this many cost samples...
  schedule.update_every = 200            # ...or at the latest every this many training steps.
  schedule.fit_grid = 1024               # fit_schedule: points of the fine grid the rate is estimated on.
  schedule.fit_iterations = 3            # fit_schedule: passes of moving the fine grid to equal length.
  schedule.num_samples = 256             # fit_schedule: Monte Carlo samples of p_t per grid point.

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'adam'               # 'adam' | 'adamw'.
  optim.learning_rate = 1e-3             # Peak learning rate.
  optim.warmup_steps = 100               # Linear warm-up steps.
  optim.weight_decay = 0.0               # adamw only.
  optim.grad_clip = 1.0                  # Global-norm gradient clipping (0 = off).
  optim.ema_decay = 0.999                # EMA of the parameters used for sampling.

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 512                 # Global batch size (divisible by the device count).
  train.num_steps = 4000                 # Training steps.
  train.log_every = 100                  # Scalars to TensorBoard and the log.
  train.checkpoint_every = 1000          # Orbax checkpoint interval (also saved at the end).
  train.keep_checkpoints = 3             # Checkpoints kept.
  train.sample_every = 1000              # Samples and plots to TensorBoard.

  config.eval = eval_ = ml_collections.ConfigDict()
  eval_.sampler = 'heun'                 # 'euler' | 'heun' (probability flow) | 'euler_maruyama' | 'pc'.
  eval_.num_steps = (10, 20, 30, 50, 100)  # Step counts K evaluated; the learned schedule is read off Lambda.
  eval_.schedules = ('learned', 'linear', 'cosine', 'edm_rho3', 'edm_rho7', 'log_linear')
  eval_.num_samples = 4096               # Samples per (schedule, K).
  eval_.batch_size = 1024                # Sampling batch size.
  eval_.langevin_snr = 0.16              # pc: signal-to-noise ratio of the Langevin corrector (score_sde).
  eval_.langevin_steps = 1               # pc: corrector steps per noise level.
  eval_.denoise_final = True             # Return D(x, t_0) after the last step (removes sigma_min noise).
  return config
