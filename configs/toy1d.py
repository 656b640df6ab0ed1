"""1-D toy targets with exact scores (default: the mollified Cantor set of method.md section 7).

Options (``--config=configs/toy1d.py:smoke``): ``smoke`` shrinks everything to seconds for tests.
"""
from configs import base


def get_config(options: str = ''):
  config = base.get_config()
  base.apply_options(config, options)
  return config
