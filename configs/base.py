"""Every config field, declared once with its meaning. Experiment files import this and override.

Sections: data, sde (the diffusion path), model, loss, schedule, optim, train, eval.
"""
import ml_collections

MODES = ('train', 'eval', 'sample', 'fit_schedule')
METHODS = ('score_optimal', 'dp_elbo', 'ddss')          # config.schedule.method
PREDICTORS = ('identity', 'euler', 'heun')              # config.schedule.predictor
RESERVED_SCHEDULE_NAMES = ('learned', 'fitted')         # config.eval.schedules entries that are not files
NONFINITE_POLICIES = ('stop', 'skip')                   # config.train.on_nonfinite
PLAIN_NAME = r'[A-Za-z0-9_][A-Za-z0-9_.+-]*'           # schedule names: file names inside the workdir


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
  schedule.num_steps = 100               # T: the schedule has T + 1 points (static for the whole run).
  schedule.cost = 'corrector'            # Cost whose rate is equalised: 'corrector' (L_c) | 'predictor' (L_p).
  schedule.predictor = 'euler'           # predictor cost: the sampler's predictor F: 'identity' | 'euler' | 'heun'.
  schedule.hutchinson_probes = 1         # predictor cost in d > 1: Rademacher probes of the divergence terms.
  schedule.cost_batch_size = 64          # Examples per batched cost evaluation (bounds memory in fits).
  schedule.init = 'linear'               # Initial schedule (a baseline): linear | cosine | edm_rho3 | edm_rho7 | log_linear.
  schedule.learn = True                  # Learn the schedule online while training (False: fixed baseline run).
  schedule.gamma = 0.1                   # Blend rate of each online update, in (0, 1].
  schedule.cost_fraction = 1.0           # Online: fraction of each batch whose cost rate is measured (0, 1]
                                         # (one jvp per such example; 1/16 keeps learning under 5% of a step).
  schedule.min_count = 8                 # Update once every level holds this many cost samples...
  schedule.update_every = 200            # ...or at the latest every this many training steps.
  schedule.fit_grid = 1024               # fit_schedule: points of the fine grid the rate is estimated on.
  schedule.fit_iterations = 3            # fit_schedule: passes of moving the fine grid to equal length.
  schedule.num_samples = 256             # fit_schedule: Monte Carlo samples of p_t per grid point.
  schedule.method = 'score_optimal'      # fit_schedule: 'score_optimal' (Algorithm 1) | 'dp_elbo' (Watson et al.
                                         # 2021) | 'ddss' (Watson et al. 2022).
  schedule.samples = 'data'              # fit_schedule on a checkpoint: p_t samples from 'data' (forward process)
                                         # | 'model' (the model's own reverse process; no data needed).
  schedule.name = ''                     # fit_schedule: stored as <workdir>/schedules/<name>.json and usable by
                                         # that name in config.eval.schedules ('' = derived from method and cost).
  schedule.dp_grid = 1000                # dp_elbo: fine grid of N times the K-step paths are chosen from.
  schedule.ddss = ddss = ml_collections.ConfigDict()
  ddss.num_steps = (5, 10, 20)           # Step counts K searched (one optimisation each).
  ddss.learning_rate = 1e-2              # Adam learning rate on the unconstrained step parameters.
  ddss.num_iterations = 200              # Gradient steps per K.
  ddss.batch_size = 256                  # Samples per loss evaluation (fixed noise).
  ddss.learn_coefficients = False        # Also learn the generalised Gaussian sampler's coefficients.

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'adam'               # 'adam' | 'adamw'.
  optim.learning_rate = 1e-3             # Peak learning rate.
  optim.warmup_steps = 100               # Linear warm-up steps.
  optim.weight_decay = 0.0               # adamw only.
  optim.grad_clip = 1.0                  # Global-norm gradient clipping (0 = off).
  optim.ema_decay = 0.999                # EMA of the parameters used for sampling.

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 512                 # Global batch size (divisible by the device count).
  train.num_steps = 20_000               # Training steps.
  train.log_every = 100                  # Scalars to TensorBoard and the log.
  train.checkpoint_every = 5000          # Orbax checkpoint interval (also saved at the end).
  train.keep_checkpoints = 3             # Checkpoints kept.
  train.sample_every = 2000              # Samples, plots and schedule.json (toy targets: exact metrics too).
  train.distributed = False              # Multi-host: call jax.distributed.initialize() (SLURM, TPU pods, ...).
  train.on_nonfinite = 'stop'            # A step whose loss, gradients or parameters are not finite: 'stop' (the
                                         # state and checkpoints stay at the last finite step) | 'skip' (the step
                                         # is dropped and counted in train/nonfinite_steps).
  train.allow_changes_on_resume = False  # Resume although config.seed or training-schedule fields differ from
                                         # <workdir>/config.json (data, path and model must still match).

  config.eval = eval_ = ml_collections.ConfigDict()
  eval_.sampler = 'heun'                 # 'euler' | 'heun' (probability flow) | 'euler_maruyama' | 'pc' | 'ancestral'.
  eval_.num_steps = (10, 20, 30, 50, 100)  # Step counts K evaluated; the learned schedule is read off Lambda.
  eval_.nfe = ()                         # Or: network evaluations per sample to compare at (K derived per
                                         # sampler: heun 2K-1, pc K(1+langevin_steps), others K); needs num_steps=().
  eval_.seeds = 3                        # Independent sample sets per cell: tables give mean ± std over seeds.
  eval_.schedules = ('learned', 'fitted', 'linear', 'cosine', 'edm_rho3', 'edm_rho7', 'log_linear')
                                         # 'fitted': every schedule fit_schedule stored in <workdir>/schedules/
                                         # (or one by its name).
  eval_.num_samples = 4096               # Samples per (schedule, K, seed); >= batch_size.
  eval_.batch_size = 1024                # Sampling batch size.
  eval_.langevin_snr = 0.16              # pc: signal-to-noise ratio of the Langevin corrector (score_sde).
  eval_.langevin_steps = 1               # pc: corrector steps per noise level.
  eval_.inception_path = ''              # Images: Inception-v3 FID weights (.npz, see README); '' or missing ->
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
  config.schedule.num_steps = 1000
  config.schedule.gamma = 0.05
  config.schedule.min_count = 8
  config.schedule.update_every = 1000
  config.schedule.cost_fraction = 1 / 16
  config.optim.learning_rate = 2e-4
  config.optim.ema_decay = 0.9999
  config.train.batch_size = 128
  config.eval.batch_size = 1000
  return config


# Option strings: ``--config=configs/toy1d.py:smoke`` (big_vision's parse_arg, strict).
OPTIONS = ('smoke',)


def parse_options(options: str):
  """``'smoke'`` -> ``{'smoke'}``; an unknown option is an error naming the allowed ones."""
  given = {o.strip() for o in (options or '').split(',') if o.strip()}
  unknown = sorted(given - set(OPTIONS))
  if unknown:
    raise ValueError(f'unknown config option(s) {unknown}; allowed: {", ".join(OPTIONS)}')
  return given


def apply_options(config, options: str):
  """Applies option strings common to every experiment. ``smoke``: seconds-long runs for tests."""
  if 'smoke' in parse_options(options):
    config.train.batch_size = 64
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.train.sample_every = 10
    config.optim.warmup_steps = 5
    config.schedule.num_steps = 16
    config.schedule.update_every = 5
    config.schedule.min_count = 2
    config.schedule.fit_grid = 128
    config.schedule.num_samples = 32
    config.model.mlp.width = 32
    config.model.mlp.depth = 2
    config.model.mlp.embedding_dim = 16
    config.model.unet.update(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                             dropout=0.0)
    config.eval.num_steps = (5, 10)
    config.eval.num_samples = 256
    config.eval.batch_size = 128
    config.eval.seeds = 2
    config.eval.classifier_steps = 50
    config.eval.likelihood_samples = 64
    config.eval.likelihood_steps = 20
    config.schedule.dp_grid = 64
    config.schedule.ddss.update(num_steps=(5,), num_iterations=5, batch_size=32)
  return config


def _plain(name) -> bool:
  import re
  return isinstance(name, str) and re.fullmatch(PLAIN_NAME, name) is not None and '..' not in name


def _problems(config, mode):
  """Every problem with ``config`` for ``mode``, as messages naming the setting and what is allowed."""
  import os
  import jax
  import ddm  # noqa: F401  (fills the registries)
  import schedule  # noqa: F401
  import train.data  # noqa: F401
  from ddm import registry, targets
  problems = []

  def check_name(reg, value, setting):
    try:
      reg.get(value, setting)
    except ValueError as e:
      problems.append(str(e))

  if mode not in MODES:
    problems.append(f'--mode={mode!r} is not a known mode; allowed: {", ".join(MODES)}')
  check_name(registry.DATASETS, config.data.dataset, 'config.data.dataset')
  if not (isinstance(config.data.dim, int) and config.data.dim >= 1):
    problems.append(f'config.data.dim={config.data.dim!r}; need an integer >= 1')
  if config.data.dataset == 'toy' or config.model.exact_score:
    try:
      targets.make_target(config.data)
    except ValueError as e:
      problems.append(str(e))
  check_name(registry.PATHS, config.sde.name, 'config.sde.name')
  if config.sde.name == 've':
    if not 0 < config.sde.sigma_min < config.sde.sigma_max:
      problems.append(f'config.sde.sigma_min={config.sde.sigma_min} and config.sde.sigma_max={config.sde.sigma_max}: '
                      'need 0 < sigma_min < sigma_max')
    if config.sde.parametrisation not in ('geometric', 'linear'):
      problems.append(f'config.sde.parametrisation={config.sde.parametrisation!r}; allowed: geometric, linear')
  if config.sde.name == 'vp':
    if config.sde.beta_schedule not in ('linear', 'cosine'):
      problems.append(f'config.sde.beta_schedule={config.sde.beta_schedule!r}; allowed: linear, cosine')
    if not 0 < config.sde.eps < 0.5:
      problems.append(f'config.sde.eps={config.sde.eps}; need 0 < eps < 0.5')
    if not 0 < config.sde.beta_min < config.sde.beta_max:
      problems.append(f'config.sde.beta_min={config.sde.beta_min}, beta_max={config.sde.beta_max}: '
                      'need 0 < beta_min < beta_max')
  sch = config.schedule
  if not (isinstance(sch.num_steps, int) and sch.num_steps >= 1):
    problems.append(f'config.schedule.num_steps={sch.num_steps!r}; need an integer >= 1')
  check_name(registry.BASELINES, sch.init, 'config.schedule.init')
  check_name(registry.COSTS, sch.cost, 'config.schedule.cost')
  if not 0 < sch.gamma <= 1:
    problems.append(f'config.schedule.gamma={sch.gamma}; need 0 < gamma <= 1')
  if not 0 < sch.cost_fraction <= 1:
    problems.append(f'config.schedule.cost_fraction={sch.cost_fraction}; need 0 < cost_fraction <= 1')
  for field in ('min_count', 'update_every', 'num_samples', 'fit_iterations'):
    if sch[field] < 1:
      problems.append(f'config.schedule.{field}={sch[field]}; need >= 1')
  if sch.fit_grid < 3:
    problems.append(f'config.schedule.fit_grid={sch.fit_grid}; need >= 3')
  if sch.method not in METHODS:
    problems.append(f'config.schedule.method={sch.method!r}; allowed: {", ".join(METHODS)}')
  if sch.samples not in ('data', 'model'):
    problems.append(f'config.schedule.samples={sch.samples!r}; allowed: data, model')
  if sch.predictor not in PREDICTORS:
    problems.append(f'config.schedule.predictor={sch.predictor!r}; allowed: {", ".join(PREDICTORS)}')
  for field in ('hutchinson_probes', 'cost_batch_size'):
    if sch[field] < 1:
      problems.append(f'config.schedule.{field}={sch[field]}; need >= 1')
  if sch.dp_grid < 2:
    problems.append(f'config.schedule.dp_grid={sch.dp_grid}; need >= 2')
  if mode == 'fit_schedule' and sch.method == 'dp_elbo' and sch.num_steps > sch.dp_grid:
    problems.append(f'config.schedule.num_steps={sch.num_steps} is larger than the dp_elbo grid '
                    f'config.schedule.dp_grid={sch.dp_grid}; need num_steps <= dp_grid')
  if not sch.ddss.learning_rate > 0:
    problems.append(f'config.schedule.ddss.learning_rate={sch.ddss.learning_rate}; need > 0')
  if sch.ddss.num_iterations < 1 or sch.ddss.batch_size < 1 or not sch.ddss.num_steps or \
     min(sch.ddss.num_steps) < 1:
    problems.append('config.schedule.ddss: num_iterations, batch_size and every num_steps need to be >= 1')
  if sch.name and (not _plain(sch.name) or sch.name in RESERVED_SCHEDULE_NAMES):
    problems.append(f'config.schedule.name={sch.name!r}; a plain name (letters, digits, _ . + -, no path and '
                    f'no ".."), not one of {", ".join(RESERVED_SCHEDULE_NAMES)}')
  if config.model.exact_score and config.data.dataset != 'toy':
    problems.append("config.model.exact_score=True needs a toy target (config.data.dataset='toy')")
  if not config.model.exact_score:
    check_name(registry.NETWORKS, config.model.name, 'config.model.name')
  check_name(registry.PRECONDS, config.model.precond, 'config.model.precond')
  if config.model.dtype not in ('float32', 'bfloat16'):
    problems.append(f'config.model.dtype={config.model.dtype!r}; allowed: float32, bfloat16')
  if config.loss.weighting not in ('precond', 'uniform'):
    problems.append(f'config.loss.weighting={config.loss.weighting!r}; allowed: precond, uniform')
  if config.optim.optimizer not in ('adam', 'adamw'):
    problems.append(f'config.optim.optimizer={config.optim.optimizer!r}; allowed: adam, adamw')
  if not config.optim.learning_rate > 0:
    problems.append(f'config.optim.learning_rate={config.optim.learning_rate}; need > 0')
  if not 0 <= config.optim.ema_decay < 1:
    problems.append(f'config.optim.ema_decay={config.optim.ema_decay}; need 0 <= ema_decay < 1')
  for field in ('warmup_steps', 'grad_clip', 'weight_decay'):
    if not config.optim[field] >= 0:
      problems.append(f'config.optim.{field}={config.optim[field]}; need >= 0')
  for field in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'sample_every'):
    if config.train[field] < 1:
      problems.append(f'config.train.{field}={config.train[field]}; need >= 1')
  if config.train.on_nonfinite not in NONFINITE_POLICIES:
    problems.append(f'config.train.on_nonfinite={config.train.on_nonfinite!r}; allowed: {", ".join(NONFINITE_POLICIES)}')
  check_name(registry.SAMPLERS, config.eval.sampler, 'config.eval.sampler')
  if not len(config.eval.schedules):
    problems.append("config.eval.schedules=(); name at least one schedule, e.g. ('learned', 'fitted', 'linear')")
  for name in config.eval.schedules:
    if not _plain(name):
      problems.append(f'config.eval.schedules names {name!r}; a schedule is a plain name (letters, digits, _ . + -; '
                      'no path, no ".."): learned, fitted, a baseline or a name stored in <workdir>/schedules/')
      continue
    # Names of stored fitted schedules are checked when the workdir is read (they are files there).
    if name not in RESERVED_SCHEDULE_NAMES and name in registry.BASELINES.names():
      check_name(registry.BASELINES, name, 'config.eval.schedules')
  for field in ('classifier_steps', 'likelihood_samples', 'likelihood_steps', 'hutchinson_probes'):
    if config.eval[field] < 1:
      problems.append(f'config.eval.{field}={config.eval[field]}; need >= 1')
  ev = config.eval
  if len(ev.nfe) and len(ev.num_steps):
    problems.append(f'config.eval.nfe={tuple(ev.nfe)} and config.eval.num_steps={tuple(ev.num_steps)} are both set; '
                    'give one: --config.eval.num_steps=() to compare at equal NFE, or --config.eval.nfe=() for step counts')
  elif len(ev.nfe) and ev.sampler in registry.SAMPLERS:
    from ddm import samplers
    for n in ev.nfe:
      try:
        samplers.steps_for_nfe(ev.sampler, n, ev.langevin_steps)
      except ValueError as e:
        problems.append(str(e))
  elif not len(ev.num_steps) or min(ev.num_steps) < 1:
    problems.append(f'config.eval.num_steps={tuple(ev.num_steps)}; need step counts >= 1 (or config.eval.nfe)')
  if not ev.langevin_snr > 0:
    problems.append(f'config.eval.langevin_snr={ev.langevin_snr}; need > 0')
  if not (isinstance(ev.langevin_steps, int) and ev.langevin_steps >= 1):
    problems.append(f'config.eval.langevin_steps={ev.langevin_steps!r}; need an integer >= 1')
  if not ev.num_samples >= 1:
    problems.append(f'config.eval.num_samples={ev.num_samples}; need >= 1')
  if not (isinstance(ev.seeds, int) and ev.seeds >= 1):
    problems.append(f'config.eval.seeds={ev.seeds!r}; need an integer >= 1')
  if ev.batch_size < 1:
    problems.append(f'config.eval.batch_size={ev.batch_size}; need >= 1')
  elif not ev.batch_size <= ev.num_samples:
    problems.append(f'config.eval.num_samples={ev.num_samples} is smaller than config.eval.batch_size='
                    f'{ev.batch_size}; need num_samples >= batch_size >= 1')
  if mode == 'train':
    n = jax.device_count()
    if config.train.batch_size % n:
      problems.append(f'config.train.batch_size={config.train.batch_size} is not divisible by the '
                      f'{n} devices; use a multiple of {n}')
  return problems


def unknown_field(dotted: str, config=None):
  """The message for ``--config.<dotted>`` when it names no declared field, else None: the valid fields of
  the section it reaches, and the closest names (by spelling, or by initials: ``lr`` -> ``learning_rate``)."""
  import difflib
  node, parts = config if config is not None else get_config(), dotted.split('.')
  for i, part in enumerate(parts):
    if isinstance(node, ml_collections.ConfigDict) and part in node:
      node = node[part]
      continue
    if not isinstance(node, ml_collections.ConfigDict):
      return None  # a field of a non-section value (e.g. a tuple entry): left to ml_collections
    section = '.'.join(['config'] + parts[:i])
    fields = sorted(node.keys())
    close = difflib.get_close_matches(part, fields, n=3, cutoff=0.6)
    close += [f for f in fields if f not in close and (f.startswith(part) or
                                                        ''.join(w[0] for w in f.split('_') if w) == part)]
    hint = f'; did you mean {" or ".join(f"{section}.{c}" for c in close)}?' if close else ''
    return (f'--{section}.{".".join(parts[i:])}: {section} has no field {part!r}{hint}\n'
            f'  fields of {section}: {", ".join(fields)}')
  return None


def validate(config, workdir=None, mode='train'):
  """Checks ``config`` (and ``workdir``) before any compute; one ``ValueError`` lists every problem."""
  import os
  problems = _problems(config, mode)
  if workdir is not None and os.path.exists(workdir) and not os.path.isdir(workdir):
    problems.append(f'--workdir={workdir} is a file; give a directory (it is created if missing)')
  if problems:
    raise ValueError('invalid configuration:\n  - ' + '\n  - '.join(problems))
