"""TensorBoard event files without TensorFlow (tensorboardX), behind a small clu-like interface.

Metric names start with ``train/``, ``eval/`` or ``schedule/``. Only process 0 writes.
"""
import jax
import numpy as np
from tensorboardX import SummaryWriter


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

  def flush(self):
    if self._writer:
      self._writer.flush()

  def close(self):
    if self._writer:
      self._writer.close()
