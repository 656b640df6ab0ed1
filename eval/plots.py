"""Figures from saved arrays only (no model calls), written as PNG with matplotlib's Agg backend.

File names may be local or remote (``etils.epath``): figures are written through a file object."""
import matplotlib
from etils import epath

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


LINESTYLES = ('-', '--', '-.', ':')


def _save(fig, filename):
  fig.tight_layout()
  with epath.Path(filename).open('wb') as f:
    fig.savefig(f, dpi=110, format='png')
  plt.close(fig)


def _plot_per_step(filename, series: dict, highlight: str, xlabel: str, ylabel: str):
  """One log-scale line per named array against its index; ``highlight`` drawn bold."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for n, (name, values) in enumerate(series.items()):
    values = np.asarray(values)
    bold = name == highlight
    ax.plot(np.arange(len(values)), values, marker='o' if len(values) <= 30 else None, ms=3,
            lw=2.5 if bold else 1.2, ls=LINESTYLES[n % 4], label=name, zorder=3 if bold else 2)
  # a run too short to have estimated any cost has only zeros, which a log axis cannot show
  if any(np.any(np.asarray(v) > 0) for v in series.values()):
    ax.set_yscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  _save(fig, filename)


def plot_ladders(filename: str, ladders: dict, highlight: str = ''):
  """Noise ladders ``{name: sigma f32[T+1]}`` against the step index, log scale (data end at i = 0)."""
  _plot_per_step(filename, ladders, highlight, 'step index i (0 = data end)', 'sigma_i')


def plot_step_costs(filename: str, costs: dict, highlight: str = ''):
  """Incremental costs ``{name: L f32[T]}`` per step; an optimal schedule is flat."""
  _plot_per_step(filename, costs, highlight, 'step i (from t_{i+1} to t_i)', 'incremental cost L_i')


def plot_densities(filename: str, samples: dict, truth=None, bins: int = 200):
  """Histograms ``{name: f32[N]}`` of 1-D samples, one panel each, over the true density ``(x, p(x))``."""
  fig, axes = plt.subplots(len(samples), 1, figsize=(6, 1.8 * len(samples) + 0.6), squeeze=False, sharex=True)
  for ax, (name, x) in zip(axes[:, 0], samples.items()):
    rng = (truth[0][0], truth[0][-1]) if truth is not None else None
    ax.hist(np.asarray(x), bins=bins, range=rng, density=True, alpha=0.6, label=name)
    if truth is not None:
      ax.plot(truth[0], truth[1], 'k', lw=0.8, label='true p_0')
    ax.legend(fontsize=7, loc='upper right')
  axes[-1, 0].set_xlabel('x')
  _save(fig, filename)


def read_png(filename: str) -> np.ndarray:
  """A saved figure as u8[H, W, 3], for TensorBoard image summaries."""
  with epath.Path(filename).open('rb') as f:
    return (plt.imread(f, format='png')[..., :3] * 255).astype(np.uint8)


def plot_histories(filename: str, histories: dict, metrics=('log_likelihood', 'score_error')):
  """Metrics against training step for several runs: ``{run: [{'step': .., metric: ..}, ...]}``."""
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for n, (name, history) in enumerate(histories.items()):
      ax.plot([h['step'] for h in history], [h[metric] for h in history], ls=LINESTYLES[n % 4], marker='o',
              ms=3, label=name)
    ax.set_xlabel('training step')
    ax.set_ylabel(metric)
    if metric == 'score_error':
      ax.set_yscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  _save(fig, filename)


def image_grid(x, columns: int = 8) -> np.ndarray:
  """Images ``f32[N, H, W, C]`` in [-1, 1] tiled into one u8[H', W', 3] grid with 1-pixel gaps."""
  x = np.clip((np.asarray(x, np.float32) + 1) * 127.5, 0, 255).astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  n, h, w, c = x.shape
  rows = -(-n // columns)
  grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = x[i]
  return grid


def save_image_grid(filename: str, x, columns: int = 8, scale: int = 1):
  """Writes :func:`image_grid` as a PNG, each pixel repeated ``scale`` times (small images stay visible)."""
  grid = image_grid(x, columns)
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  with epath.Path(filename).open('wb') as f:
    plt.imsave(f, grid, format='png')


def save_schedule_grids(filename: str, samples: dict):
  """One labelled row of images per schedule: ``{label: f32[n, H, W, C] in [-1, 1]}`` -> a PNG."""
  fig, axes = plt.subplots(len(samples), 1, figsize=(8, 0.9 * len(samples) + 0.3), squeeze=False)
  for ax, (label, x) in zip(axes[:, 0], samples.items()):
    ax.imshow(image_grid(x, columns=len(x)), interpolation='nearest')
    ax.set_ylabel(label, rotation=0, ha='right', va='center', fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  _save(fig, filename)
