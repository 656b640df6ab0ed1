"""scikit-learn's 8x8 handwritten digits (1797 images, shipped inside the package): the offline image run.

Small enough for a 2-core CPU; schedule learned online from a cosine start, as for MNIST and CIFAR-10.
Options: ``smoke`` (seconds, for tests).
"""
from configs import base


def get_config(options: str = ''):
  config = base.get_config()
  config.data.dataset = 'digits'
  config.model.name = 'unet'
  config.model.unet.update(channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                           dropout=0.0, embedding='positional')
  config.schedule.init = 'cosine'
  config.schedule.num_levels = 200
  config.schedule.gamma = 0.1
  config.schedule.min_count = 4
  config.schedule.update_every = 100
  config.schedule.cost_fraction = 1 / 16  # 8 rates a step: the smallest fraction within the error bound (docs/performance.md)
  config.fit.ladder_steps = 200  # schedule.json of a fit at the training T (a length function gives any K)
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 200
  config.optim.ema_decay = 0.999
  config.train.batch_size = 128
  config.train.num_train_steps = 3000  # ~11 minutes on 2 CPU cores (5 steps/s); samples are recognisable by then
  config.train.log_every = 100
  config.train.sample_every = 1000
  config.train.checkpoint_every = 1000
  config.eval.step_counts = (10, 20, 50)
  config.eval.num_samples = 1024
  config.eval.batch_size = 512
  base.apply_options(config, options)
  return config
