"""Every config field, declared once with its meaning. Experiment files import this and override.

Sections: data, sde (the diffusion path), model, loss, schedule (the training schedule and its online
learner), fit (post-hoc searches), optim, train, distributed (several processes), eval. Validation is in
:mod:`configs.validate`.
"""
import ml_collections

from ddm import files

def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0                        # Base PRNG seed; every random stream is folded from it.
  config.compile_cache = 'default'       # JAX's persistent compilation cache: 'default' (~/.cache/score_schedules/
                                         # jax_compile, or under $XDG_CACHE_HOME), a folder, or 'off'. Programs
                                         # compiled in over 1 s are kept, so a rerun, resume, eval or fit of the
                                         # same shapes loads them instead of compiling (results are unchanged).

  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'toy'                   # 'toy' (a target below) | 'digits' | 'mnist' | 'mnist5k' | 'cifar10' | 'fake'.
  data.target = 'cantor'                 # Toy target: 'gaussian' | 'bimodal' | 'cantor' | 'gmm'.
  data.dim = 1                           # gaussian: dimension d of N(0, std^2 I_d).
  data.std = 0.1                         # gaussian: c; bimodal: std of each component.
  data.offset = 1.0                      # bimodal: components at -offset and +offset.
  data.cantor_depth = 4                  # cantor: depth K (2^K components).
  data.cantor_tau = 0.005                # cantor: mollifier std tau.
  data.means = (-1.0, 0.5)               # gmm: component means (1-D). Tuples, not lists: a list cannot be set
  data.stds = (0.1, 0.3)                 # gmm: component stds.          on the command line (ml_collections).
  data.weights = (0.3, 0.7)              # gmm: component weights (sum to 1).
  data.fake_shape = (8, 8, 1)            # fake: shape of the random in-memory images.
  data.random_flip = False               # Random horizontal flips of training images.
  data.tfds_data_dir = ''                # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets; mnist5k:
                                         # ~/.cache/score_schedules/mnist5k, written there on first use).

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
  model.exact_score = False              # Toy targets: train/evaluate with the closed-form score instead of a network
                                         # (--mode=fit_schedule always uses it on toy targets).
  model.precond = 'edm'                  # Preconditioning: 'edm' | 'vp' (epsilon prediction) | 've'.
  model.sigma_data = 0.5                 # EDM's sigma_data: the data's standard deviation.
  model.mlp = mlp = ml_collections.ConfigDict()
  mlp.width = 256                        # Hidden units per layer.
  model.mlp.depth = 4                    # Hidden layers.
  model.mlp.embedding_dim = 64           # Size of the sinusoidal noise-level embedding.
  model.mlp.embedding_scale = 16.0       # c_noise is multiplied by this before the embedding (highest
                                         # frequency): resolves fine noise levels, stays smooth for the jvp.
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
  schedule.num_levels = 100              # T: the training schedule has T + 1 noise levels (static for the whole
                                         # run; not a sampler's K: fit.ladder_steps, eval.step_counts).
  schedule.cost = 'corrector'            # Cost whose rate is equalised, online and by fit_schedule's score_optimal:
                                         # 'corrector' (L_c) | 'predictor' (L_p).
  schedule.cost_solver = 'euler'         # predictor cost L_p: the solver step F whose local error it measures:
                                         # 'identity' | 'euler' | 'heun'.
  schedule.hutchinson_probes = 1         # predictor cost in d > 1: Rademacher probes of the divergence terms.
  schedule.cost_batch_size = 64          # Examples per batched cost evaluation (bounds the memory of L_p).
  schedule.init = 'linear'               # Initial schedule (a baseline): linear | cosine | edm_rho3 | edm_rho7 | log_linear.
  schedule.learn = True                  # Learn the schedule online while training (False: fixed baseline run).
  schedule.gamma = 0.1                   # Blend rate of each online update, in (0, 1].
  schedule.cost_fraction = 1.0           # Online: fraction of each batch whose cost rate is measured (0, 1]
                                         # (one jvp per such example; 1/16 keeps learning under 5% of a step).
  schedule.measure_every = 1             # Online: only every this-many-th step measures, on measure_every x
                                         # cost_fraction of its batch (the same share of examples; <= 1): the
                                         # steps between run without the estimator (a second compiled step).
  schedule.rate_pass = 'auto'            # Online corrector rates: 'auto' (fused where it is the same estimator: cost
                                         # 'corrector' and no dropout; else separate), 'fused' (a jvp in t inside
                                         # the loss's network pass: one tangent propagation) or 'separate' (a second
                                         # jvp pass after the update). Fused: 24% vs 53% of a digits step with a
                                         # rate on every example (docs/performance.md).
  schedule.min_count = 8                 # Update once every level holds this many cost samples...
  schedule.update_every = 200            # ...or at the latest every this many training steps.

  config.fit = fit = ml_collections.ConfigDict()  # --mode=fit_schedule: a post-hoc schedule search
  fit.ladder_steps = 100                 # K of the schedule written to schedule.json (a length function, stored
                                         # by score_optimal, gives any K; dp_elbo stores 1..K and eval's K).
  fit.method = 'score_optimal'           # 'score_optimal' (Algorithm 1 with config.schedule.cost) | 'trajectory'
                                         # (closest K-step output to the model's many-step ODE solution) | 'ays'
                                         # (Align Your Steps: least KL upper bound of the discretised SDE) | 'dp_elbo'
                                         # (Watson et al. 2021) | 'ddss' (Watson et al. 2022) | 'fewstep' (the
                                         # default few-step search, made for config.fit.sampler; stays stable
                                         # while the method behind it improves) | 'polish' (fewstep's gradient
                                         # polish of the ladder config.fit.polish.start).
  fit.sampler = ''                       # The solver a ladder is made for ('' = config.eval.sampler): fewstep,
                                         # polish, trajectory (stored as fewstep_<sampler>,
                                         # polish_<start>_<sampler>, trajectory_<sampler>; fewstep_mmd_<sampler>
                                         # and polish_mmd_<start>_<sampler> with fewstep.objective='mmd').
  fit.grid = 1024                        # score_optimal: points of the fine grid the rate is estimated on.
  fit.grid_passes = 3                    # score_optimal: passes of moving the fine grid to equal length.
  fit.num_samples = 256                  # Monte Carlo samples of p_t per grid point (dp_elbo: per grid time).
  fit.samples = 'data'                   # On a checkpoint: p_t samples from 'data' (forward process) | 'model'
                                         # (the model's own reverse process; no data needed).
  fit.name = ''                          # Stored as <workdir>/schedules/<name>.json and usable by that name in
                                         # config.eval.schedules ('' = derived from method and cost).
  fit.refine = False                     # score_optimal: for each K of refine_step_counts, the ladder whose
                                         # *finite* step costs are equal (L_c: two evaluations; L_p: the sampler step's local
                                         # error by step-doubling), on fit.num_samples draws of p_t per step;
                                         # stored per K as '<cost>_refined'.
  fit.refine_step_counts = (5, 10, 20)   # refine: step counts K (strictly increasing).
  fit.refine_substeps = 16               # refine, predictor: small steps of the step-doubling reference.
  fit.dp_elbo = ml_collections.ConfigDict()
  fit.dp_elbo.grid = 1000                # Fine grid of N times the K-step paths are chosen from.
  fit.ays = ays = ml_collections.ConfigDict()  # method 'ays': Align Your Steps (Sabour et al. 2024)
  ays.step_counts = (5, 10, 20)          # Step counts K (strictly increasing; a K twice a searched one starts from it).
  ays.num_samples = 512                  # Draws of x0 (data, model samples or the toy target) for the KLUB.
  ays.nodes = 8                          # Gauss-Legendre nodes in log sigma per interval of the KLUB integral.
  ays.candidates = 16                    # Values tried per point and pass, between its neighbours.
  ays.passes = 3                         # Coordinate-wise passes.
  ays.init = 'edm_rho7'                  # Baseline a K starts from when its half was not searched.
  fit.ddss = ddss = ml_collections.ConfigDict()
  ddss.step_counts = (5, 10, 20)         # Step counts K searched (one optimisation each).
  ddss.learning_rate = 1e-2              # Adam learning rate on the unconstrained step parameters.
  ddss.adam_steps = 200                  # Gradient steps per K.
  ddss.batch_size = 256                  # Samples per loss evaluation (fixed noise).
  ddss.learn_coefficients = False        # Also learn the generalised Gaussian sampler's coefficients.
  fit.trajectory = trajectory = ml_collections.ConfigDict()  # method 'trajectory': the model as its own teacher
  trajectory.step_counts = (5, 10, 20)   # Step counts K searched (strictly increasing, each <= grid).
  trajectory.grid = 64                   # N: the K-step ladders are chosen among N + 1 times uniform in log sigma.
  trajectory.teacher_substeps = 8        # The teacher's steps per grid interval (N x this in all).
  trajectory.num_noises = 1024           # Prior draws the teacher and the K-step sampler are run from.
  trajectory.passes = 2                  # Coordinate-search passes on the K-step output's distance (0: DP only).
  fit.fewstep = fewstep = ml_collections.ConfigDict()  # method 'fewstep': K of eval.step_counts / eval.nfe
  fewstep.grid = 64                      # N: the teacher's grid (uniform in log sigma) and the dp's candidates.
  fewstep.teacher_substeps = 8           # Heun steps of the teacher per grid interval.
  fewstep.num_noises = 512               # Prior draws the teacher and the solver are run from (fit and check).
  fewstep.adam_steps = 200               # Adam steps on the ladder's log noise levels (gradient through the walk).
  fewstep.learning_rate = 0.05           # Adam learning rate on the increment logits.
  fewstep.objective = 'paired'           # 'paired': mean squared distance to the teacher's output from the same
                                         # noise | 'mmd': MMD^2 to the teacher's outputs (kernels from r(0) to their
                                         # scale; keeps fine structure the paired distance averages away).
  fit.polish = polish = ml_collections.ConfigDict()  # method 'polish': fit.fewstep's teacher and Adam, K as fewstep
  polish.start = 'edm_rho7'              # The ladder polished: a baseline, 'learned' (the checkpoint's schedule) or
                                         # a name stored in <workdir>/schedules/ holding every K wanted.

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'adam'               # 'adam' | 'adamw'.
  optim.learning_rate = 1e-3             # Peak learning rate.
  optim.warmup_steps = 100               # Linear warm-up steps.
  optim.weight_decay = 0.0               # adamw only.
  optim.grad_clip = 1.0                  # Global-norm gradient clipping (0 = off).
  optim.ema_decay = 0.999                # EMA of the parameters used for sampling.

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 512                 # Global batch size (divisible by the device count).
  train.num_train_steps = 20_000         # Training iterations (optimizer steps).
  train.log_every = 100                  # Scalars to TensorBoard and the log.
  train.checkpoint_every = 5000          # Orbax checkpoint interval (also saved at the end).
  train.keep_checkpoints = 3             # Checkpoints kept.
  train.sample_every = 2000              # Samples, plots and schedule.json (toy targets: exact metrics too).
  train.on_nonfinite = 'stop'            # A step whose loss, gradients or parameters are not finite: 'stop' (the
                                         # state and checkpoints stay at the last finite step) | 'skip' (the step
                                         # is dropped and counted in train/nonfinite_steps).
  train.allow_changes_on_resume = False  # Resume although config.seed or training-schedule fields differ from
                                         # <workdir>/config.json (data, path and model must still match).

  config.distributed = distributed = ml_collections.ConfigDict()  # several processes (hosts) on one job
  distributed.enabled = False            # Multi-process: jax.distributed.initialize() with the cluster found in the
                                         # environment (SLURM, TPU pods, Open MPI, JAX_COORDINATOR_ADDRESS, ...).
  distributed.coordinator_address = ''   # Or explicitly: 'host:port' of process 0 (implies enabled) ...
  distributed.num_processes = 0          # ... the number of processes (0: from the environment) ...
  distributed.process_id = -1            # ... and this process's index in [0, num_processes) (-1: environment).
  distributed.initialization_timeout = 300 # Seconds to wait for the coordinator and every process to join.

  config.eval = eval_ = ml_collections.ConfigDict()
  eval_.sampler = 'heun'                 # 'euler' | 'heun' (probability flow) | 'euler_maruyama' | 'pc' | 'ancestral'
                                         # | multistep: 'dpmpp_2m' | 'dpmpp_3m' | 'unipc' | 'ipndm' (NFE = K).
  eval_.solver_order = 0                 # Multistep order: 0 = the solver's published default (unipc 3, ipndm 4);
                                         # unipc 1..3, ipndm 1..4; dpmpp_2m / dpmpp_3m are named by their order.
  eval_.step_counts = (10, 20, 30, 50, 100)  # Step counts K evaluated; the learned schedule is read off Lambda.
  eval_.nfe = ()                         # Or: network evaluations per sample to compare at (K derived per
                                         # sampler: heun 2K-1, pc K(1+langevin_steps), others K); needs step_counts=().
  eval_.checkpoints = 'last'             # Checkpoints evaluated: 'last' (the latest good one: one table) | 'new'
                                         # (every one without this sampler's record in <workdir>/eval/: for an
                                         # evaluation job that follows training) | 'all' | steps, e.g. '5000,10000'.
  eval_.seeds = 3                        # Independent sample sets per cell: tables give mean ± std over seeds.
  eval_.schedules = ('learned', 'fitted', 'linear', 'cosine', 'edm_rho3', 'edm_rho7', 'log_linear')
                                         # 'fitted': every schedule fit_schedule stored in <workdir>/schedules/
                                         # (or one by its name).
  eval_.num_samples = 4096               # Samples per (schedule, K, seed); >= batch_size.
  eval_.batch_size = 1024                # Sampling batch size.
  eval_.langevin_snr = 0.16              # pc: signal-to-noise ratio of the Langevin corrector (score_sde).
  eval_.langevin_steps = 1               # pc: corrector steps per noise level.
  eval_.inception_path = ''              # Images: Inception-v3 FID weights (.npz, docs/data.md); '' or missing ->
                                         # the offline classifier feature distance (never called FID).
  eval_.classifier_steps = 2000          # Offline feature classifier: training steps (cached in the workdir).
  eval_.likelihood = True                # Negative log-likelihood (bits/dim) through the probability-flow ODE.
  eval_.likelihood_samples = 1024        # Data examples the likelihood is averaged over.
  eval_.likelihood_steps = 200           # Heun steps of the probability-flow ODE (uniform in log sigma).
  eval_.hutchinson_probes = 1            # Rademacher probes of the divergence (exact in 1-D).
  return config


def apply_image_defaults(config):
  """Settings shared by the TFDS image configs (MNIST, CIFAR-10): U-Net, T = 1000 training levels learned
  from a cosine start (the paper's setting), slow EMA, 2e-4 learning rate."""
  config.model.name = 'unet'
  config.schedule.init = 'cosine'
  config.schedule.num_levels = 1000
  config.schedule.gamma = 0.05
  config.schedule.min_count = 8
  config.schedule.update_every = 1000
  config.schedule.cost_fraction = 1 / 16
  config.fit.ladder_steps = 1000
  config.optim.learning_rate = 2e-4
  config.optim.ema_decay = 0.9999
  config.train.batch_size = 128
  config.eval.batch_size = 1000
  return config


# Option strings: ``--config=configs/toy1d.py:smoke`` (big_vision's parse_arg, strict).
OPTIONS = ('smoke', 'quick')


def parse_options(options: str, allowed=OPTIONS):
  """``'smoke'`` -> ``{'smoke'}``; an unknown option is an error naming the allowed ones (``allowed``: the
  common ``OPTIONS`` plus an experiment's own, e.g. ``configs/mnist.py:offline``)."""
  given = {o.strip() for o in (options or '').split(',') if o.strip()}
  unknown = sorted(given - set(allowed))
  if unknown:
    raise files.InputError(f'unknown config option(s) {unknown}; allowed: {", ".join(allowed)}')
  return given


def apply_options(config, options: str, allowed=OPTIONS):
  """Applies option strings common to every experiment (after the experiment's own, so ``offline,smoke`` is a
  smoke run of the offline setting). ``smoke``: seconds-long runs for tests. ``quick``: a first look at the main
  job in about a minute on a 2-core CPU (a small network, a short run whose schedule is still learned online,
  a short evaluation)."""
  given = parse_options(options, allowed)
  if 'quick' in given:
    config.train.num_train_steps = 4000
    config.train.log_every = 200
    config.train.checkpoint_every = 1000
    config.train.sample_every = 1000
    config.schedule.update_every = 100
    config.model.mlp.update(width=128, depth=3)
    config.model.unet.update(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                             dropout=0.0)
    config.eval.step_counts = (5, 10, 20)
    config.eval.num_samples = 4096
    config.eval.batch_size = 4096
    config.eval.likelihood_samples = 256
  if 'smoke' in given:
    config.train.batch_size = 64
    config.train.num_train_steps = 20
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.train.sample_every = 10
    config.optim.warmup_steps = 5
    config.schedule.num_levels = 16
    config.schedule.update_every = 5
    config.schedule.min_count = 2
    config.fit.ladder_steps = 16
    config.fit.grid = 128
    config.fit.num_samples = 32
    config.model.mlp.width = 32
    config.model.mlp.depth = 2
    config.model.mlp.embedding_dim = 16
    config.model.unet.update(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                             dropout=0.0)
    config.eval.step_counts = (5, 10)
    config.eval.num_samples = 256
    config.eval.batch_size = 128
    config.eval.seeds = 2
    config.eval.classifier_steps = 50
    config.eval.likelihood_samples = 64
    config.eval.likelihood_steps = 20
    config.fit.dp_elbo.grid = 64
    config.fit.ddss.update(step_counts=(5,), adam_steps=5, batch_size=32)
  return config
