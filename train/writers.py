"""TensorBoard event files without TensorFlow (tensorboardX), behind a small clu-like interface.

Metric names start with ``train/``, ``eval/`` or ``schedule/``. Only process 0 writes. A remote logdir
(``gs://``, ``s3://``, ``az://``) is written through ``etils.epath`` (:class:`RemoteEvents`), like every other
file of a workdir.
"""
import io
import os
import time

import jax
import numpy as np
from etils import epath
from tensorboardX import SummaryWriter, record_writer
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


class RemoteEvents:
  """An event file on a remote file system: the records are kept in memory and the whole file is uploaded at
  every flush (object stores do not append), as tensorboardX's own GCS/S3 writers do."""

  def __init__(self, path):
    self.path, self.buffer = epath.Path(path), io.BytesIO()

  def write(self, data):
    self.buffer.write(data)

  def flush(self):
    self.path.write_bytes(self.buffer.getvalue())

  def close(self):
    self.flush()


class _RemoteEventsFactory:
  def open(self, path):
    return RemoteEvents(path)

  def directory_check(self, path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)


for _scheme in ('gs', 's3', 'az'):  # tensorboardX's registry of remote backends: epath's file systems instead
  record_writer.register_writer_factory(_scheme, _RemoteEventsFactory())


class MetricWriter:
  """``write_scalars(step, {name: float})``, ``write_images(step, {name: u8/f32[H, W, C]})``."""

  def __init__(self, logdir):
    # tensorboardX names an event file by the second it was opened: the nanosecond suffix keeps two writers of
    # one second (checkpoints evaluated in a row, a quick resume) from overwriting each other's file, and keeps
    # the files' lexicographic order (TensorBoard's reading order) the order they were written in.
    suffix = f'.{time.time_ns()}.{os.getpid()}'
    self._writer = SummaryWriter(os.fspath(logdir), filename_suffix=suffix) if jax.process_index() == 0 else None

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
