"""MNIST 28x28 through TFDS, schedule learned online from a cosine start (the paper's MNIST setting).

Needs the TFDS data on disk (``tfds build mnist`` once on a machine with network, or copy
``~/tensorflow_datasets/mnist``); ``config.data.tfds_data_dir`` points elsewhere.
Smaller GPU: halve ``model.unet.channels`` or ``train.batch_size``. Options: ``smoke``.
"""
from configs import base


def get_config(options: str = ''):
  config = base.apply_image_defaults(base.get_config())
  config.data.dataset = 'mnist'
  config.model.unet.update(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,),
                           dropout=0.1)
  config.optim.warmup_steps = 1000
  config.train.num_steps = 200_000
  config.train.log_every = 500
  config.train.sample_every = 10_000
  config.train.checkpoint_every = 10_000
  config.eval.num_samples = 10_000
  base.apply_options(config, options)
  return config
