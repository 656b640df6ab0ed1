"""1-D toy targets with exact scores (default: the mollified Cantor set of method.md section 7).

Options (``--config=configs/toy1d.py:smoke``): ``smoke`` shrinks everything to seconds for tests.
"""
from configs import base


def get_config(options: str = ''):
  config = base.get_config()
  # sigma(t) = sigma_min + t (sigma_max - sigma_min): the 'linear' baseline is then linear in sigma, the
  # naive schedule that misses the Cantor modes (method.md section 7); learning starts from it.
  config.sde.parametrisation = 'linear'
  config.train.num_train_steps = 15_000
  config.train.sample_every = 2500
  # Exact metrics need many samples: W1 of 20,000 exact bimodal samples is ~0.007 (the table's floor line).
  config.eval.num_samples = 20_000
  config.eval.batch_size = 10_000
  base.apply_options(config, options)
  return config
