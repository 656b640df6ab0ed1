"""CIFAR-10 32x32 through TFDS: a DDPM-class U-Net (~35.7M parameters), EMA, warm-up, clipping, flips;
the schedule learned online from a cosine start (the paper's setting). For a GPU or TPU.

Needs the TFDS data on disk (``tfds build cifar10`` once on a machine with network).
Smaller GPU (< 16 GB): ``--config.train.batch_size=64`` or ``--config.model.unet.channels=64``; on
accelerators ``--config.model.dtype=bfloat16`` halves activation memory. Options: ``smoke``.
"""
from configs import base


def get_config(options: str = ''):
  config = base.apply_image_defaults(base.get_config())
  config.data.dataset = 'cifar10'
  config.data.random_flip = True
  config.model.unet.update(channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                           dropout=0.1, embedding='positional')
  config.optim.warmup_steps = 5000
  config.optim.grad_clip = 1.0
  config.train.num_train_steps = 800_000
  config.train.log_every = 1000
  config.train.sample_every = 50_000
  config.train.checkpoint_every = 10_000
  config.eval.num_samples = 50_000
  base.apply_options(config, options)
  return config
