"""``--mode=sample``: samples of the last checkpoint with one schedule at one K, saved as arrays and a figure."""
import os

import numpy as np
from absl import logging
from etils import epath

from configs.validate import validate
from ddm import files, streams
from ddm.targets import make_target
from eval import plots, sampling, toy
from modes import workdir as workdir_lib
from schedule import schedules, store
from train import data


def sample(config, workdir):
  """Writes ``samples_<schedule>_<K>.npz`` and ``.png`` (an image grid, or a histogram over the true density
  on toy targets) for ``config.eval.schedules[0]`` (a baseline, 'learned' or a stored schedule's name) at
  the first column of :func:`modes.workdir.step_counts` (``config.eval.step_counts[0]`` steps, or the K that reaches
  ``config.eval.nfe[0]``) with ``config.eval.sampler``; the NFE is stored in the ``.npz``."""
  validate(config, workdir, 'sample')
  k, evaluations = workdir_lib.step_counts(config.eval)[0]
  name = config.eval.schedules[0]
  if name == schedules.FITTED:  # checked before the checkpoint is read
    raise files.InputError("config.eval.schedules[0]='fitted' names a group; --mode=sample needs one schedule: "
                     f'learned, a baseline or a stored name ({", ".join(store.names(workdir)) or "none stored"})')
  schedules.check_names(config.eval.schedules, workdir)
  path, model, state = workdir_lib.restore(config, workdir)
  ts = np.asarray(schedules.resolve(name, path, workdir, workdir_lib.learned_length(state)).steps(k))
  draw = sampling.make_draw(config.eval, path, model)
  x = draw(state.ema_params, ts, streams.key(config.seed, 'sample'), config.eval.num_samples,
           data.data_shape(config.data))
  stem = os.fspath(files.as_path(workdir) / f'samples_{name}_{k}')  # + '.npz', '.png'
  with epath.Path(stem + '.npz').open('wb') as f:
    np.savez(f, x=x, t=np.asarray(ts), sigma=np.asarray(path.sigma(ts)), nfe=evaluations)
  if config.data.dataset == 'toy':
    plots.plot_densities(stem + '.png', {f'{name}, K={k} (NFE {evaluations})': x[:, 0]}, toy.density_curve(make_target(config.data)))
  else:
    plots.save_image_grid(stem + '.png', x[:256], columns=16, scale=max(1, 64 // x.shape[1]))
  logging.info('wrote %s.npz and .png (K=%d, NFE=%d)', stem, k, evaluations)
  return x
