"""What ``--mode=train`` reports at logging and sampling steps: scalars, schedule.json, plots, toy metrics."""

import jax
import numpy as np
from absl import logging

from ddm import files, streams
from modes.progress import format_duration
from ddm.targets import make_target
from eval import plots, sampling, toy
from schedule import baselines, fit, store
from train import step as step_lib

IMAGE_GRID = 64  # samples shown at each sampling step on image datasets
SAMPLES_DIR = 'samples'  # <workdir>/samples/<step>.png
HISTORY_FILE = 'eval_history.json'
HISTORY_FIX = ('move it away (the same points are in the TensorBoard events); training writes a new one from '
               'its next sampling step')


def check_files(workdir):
  """Reads what the reporter will extend (``eval_history.json``), so a damaged file stops the run before any
  compute with a message naming it, not at the first sampling step of every rerun."""
  history_file = files.as_path(workdir) / HISTORY_FILE
  if history_file.exists():
    files.read_json(history_file, HISTORY_FIX)


class Reporter:
  """Writes to TensorBoard and the workdir; reads the (unreplicated) train state, never changes it.

  Every process calls every method (sampling is one program over the devices of all processes); only
  process 0 writes files."""

  def __init__(self, config, workdir, path, model, data_shape, writer):
    self.config, self.workdir, self.path, self.model = config, files.as_path(workdir), path, model
    self.writes = jax.process_index() == 0
    self.data_shape, self.writer = data_shape, writer
    self.initial = baselines.make_baseline(config.schedule.init, path, config.schedule.num_levels)
    self.target = make_target(config.data) if config.data.dataset == 'toy' else None
    self.draw = sampling.make_draw(config.eval, path, model)

  def scalars(self, step, pending, state, throughput):
    """Averages the metrics of the steps since the last log (one device fetch) and logs them, with the
    training-only steps/s of ``throughput`` (:class:`modes.progress.Throughput`) and the seconds spent
    compiling, sampling and checkpointing in this process."""
    fetched = jax.device_get([step_lib.unreplicate(m) for m in pending])
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    scalars['train/nonfinite_steps'] = int(sum(m['train/nonfinite_steps'] for m in fetched))  # a count
    losses = [m['train/loss'] for m in fetched if np.isfinite(m['train/loss'])]  # skipped steps: not averaged
    scalars['train/loss'] = float(np.mean(losses)) if losses else float('nan')
    step_costs = np.asarray(jax.device_get(state.step_costs))
    scalars.update({
        'schedule/length': float(fit.length(step_costs)), 'schedule/energy': float(fit.energy(step_costs)),
        'schedule/num_updates': int(state.num_updates), 'schedule/num_skipped': int(state.num_skipped)})
    steps_per_sec = throughput.rate(step)  # after the fetch: the steps' computation has finished
    scalars['train/steps_per_sec'] = steps_per_sec
    scalars.update({f'train/{kind}_seconds': v for kind, v in throughput.totals.items()})
    self.writer.write_scalars(step, scalars)
    eta = throughput.eta(step, self.config.train.num_train_steps, steps_per_sec)
    other = ', '.join(f'{kind} {v:.0f} s' for kind, v in throughput.totals.items())
    logging.info('step %d/%d  loss %.4g  length %.4g  energy %.4g  %.2f steps/s  ETA %s%s', step,
                 self.config.train.num_train_steps, scalars['train/loss'], scalars['schedule/length'],
                 scalars['schedule/energy'], steps_per_sec, format_duration(eta),
                 f'  ({other})' if other else '')
    if scalars['schedule/nonfinite_rates'] > 0:
      logging.warning('step %d: %d non-finite cost estimates were dropped', step, scalars['schedule/nonfinite_rates'])

  def schedule_and_samples(self, step, state):
    """``schedule.json`` and its plots (also to TensorBoard); on toy targets, samples and exact metrics."""
    ts, step_costs = np.asarray(state.schedule), np.asarray(state.step_costs)
    if self.target is not None:
      density = self._toy_eval(step, state)
    else:
      samples = self._image_samples(step, state)
    if not self.writes:
      return
    record = store.schedule_record(self.path, ts, step_costs, self.config.schedule.cost)
    files.write_json(record, self.workdir / 'schedule.json')
    images = {}
    name = 'learned' if self.config.schedule.learn else self.config.schedule.init
    ladder_png = self.workdir / 'schedule.png'
    plots.plot_ladders(ladder_png, {name: record['sigma'], f'initial ({self.config.schedule.init})':
                                    self.path.sigma(self.initial)}, name)
    costs_png = self.workdir / 'costs.png'
    plots.plot_step_costs(costs_png, {name: step_costs}, name)
    images.update({'schedule/ladder': ladder_png, 'schedule/step_costs': costs_png})
    images.update({'eval/density': density} if self.target is not None else {'eval/samples': samples})
    self.writer.write_images(step, {k: plots.read_png(v) for k, v in images.items()})
    self.writer.flush()

  def _image_samples(self, step, state):
    """A grid of ``IMAGE_GRID`` samples with the current schedule and EMA weights: ``samples/<step>.png``."""
    key = jax.random.fold_in(streams.key(self.config.seed, 'sample'), step)
    x = self.draw(state.ema_params, state.schedule, key, IMAGE_GRID, self.data_shape)
    if not self.writes:
      return None
    png = self.workdir / SAMPLES_DIR / f'{step}.png'  # one per sampling step, none overwritten
    png.parent.mkdir(parents=True, exist_ok=True)
    plots.save_image_grid(png, x, scale=max(1, 64 // self.data_shape[0]))
    return png

  def _toy_eval(self, step, state):
    key = jax.random.fold_in(streams.key(self.config.seed, 'eval'), step)
    score_fn = self.model.score(state.ema_params, self.path)
    x = self.draw(state.ema_params, state.schedule, key, self.config.eval.num_samples, self.data_shape)
    result = toy.metrics(self.target, x)
    reference = baselines.log_linear(self.path, self.config.schedule.num_levels)
    result['score_error'] = float(np.mean(toy.score_error(score_fn, self.target, self.path, reference, key)))
    if not self.writes:
      return None
    self.writer.write_scalars(step, {f'eval/{k}': v for k, v in result.items()})
    history_file = self.workdir / HISTORY_FILE
    history = files.read_json(history_file, HISTORY_FIX) if history_file.exists() else []
    history = [h for h in history if h['step'] < step] + [dict(step=step, **result)]
    files.write_json(history, history_file)
    png = self.workdir / 'density.png'
    plots.plot_densities(png, {f'step {step}': x[:, 0]}, toy.density_curve(self.target))
    with (self.workdir / 'samples.npz').open('wb') as f:
      np.savez(f, x=x, t=np.asarray(state.schedule))
    return png
