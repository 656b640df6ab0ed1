"""TensorBoard event files without TensorFlow (tensorboardX), behind a small clu-like interface.

Metric names start with ``train/``, ``eval/`` or ``schedule/``. Only process 0 writes.
"""
import jax
import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summaries

HPARAM_METRICS = ('train/loss', 'schedule/length', 'schedule/energy')  # columns of the HParams table


def flatten_config(config) -> dict:
  """``{'optim.learning_rate': 2e-4, 'model.unet.channel_mult': '(1, 2, 2)', ...}``: every leaf of a config
  (a ConfigDict or a dict) as a value TensorBoard's HParams plugin takes (bool, int, float, str)."""
  flat = {}

  def visit(prefix, node):
    for key, value in (node.items() if hasattr(node, 'items') else ()):
      name = f'{prefix}{key}'
      if hasattr(value, 'items'):
        visit(name + '.', value)
      elif isinstance(value, (bool, int, float, str)):
        flat[name] = value
      else:
        flat[name] = str(value)

  visit('', config)
  return flat


class MetricWriter:
  """``write_scalars(step, {name: float})``, ``write_images(step, {name: u8/f32[H, W, C]})``."""

  def __init__(self, logdir: str):
    self._writer = SummaryWriter(logdir) if jax.process_index() == 0 else None

  def write_scalars(self, step: int, scalars: dict):
    if self._writer:
      for name, value in scalars.items():
        self._writer.add_scalar(name, float(value), step)

  def write_images(self, step: int, images: dict):
    if self._writer:
      for name, image in images.items():
        self._writer.add_image(name, np.asarray(image), step, dataformats='HWC')

  def write_config(self, config, config_json: str):
    """The resolved config as text (``config``) and as hyperparameters (the HParams plugin: runs filtered
    and compared by any field, against :data:`HPARAM_METRICS`)."""
    if self._writer:
      self._writer.add_text('config', '```\n' + config_json + '\n```', 0)
      for summary in hparams_summaries(flatten_config(config), {m: 0.0 for m in HPARAM_METRICS}):
        self._writer.file_writer.add_summary(summary)

  def flush(self):
    if self._writer:
      self._writer.flush()

  def close(self):
    if self._writer:
      self._writer.close()
