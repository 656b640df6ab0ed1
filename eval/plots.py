"""Figures from saved arrays only (no model calls), written as PNG with matplotlib's Agg backend."""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


LINESTYLES = ('-', '--', '-.', ':')


def _save(fig, filename):
  fig.tight_layout()
  fig.savefig(filename, dpi=110)
  plt.close(fig)


def plot_ladders(filename: str, ladders: dict, highlight: str = ''):
  """Noise ladders ``{name: sigma f32[T+1]}`` against the step index, log scale (data end at i = 0)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for n, (name, sigma) in enumerate(ladders.items()):
    sigma = np.asarray(sigma)
    bold = name == highlight
    ax.plot(np.arange(len(sigma)), sigma, marker='o' if len(sigma) <= 30 else None, ms=3,
            lw=2.5 if bold else 1.2, ls=LINESTYLES[n % 4], label=name, zorder=3 if bold else 2)
  ax.set_yscale('log')
  ax.set_xlabel('step index i (0 = data end)')
  ax.set_ylabel('sigma_i')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  _save(fig, filename)


def plot_step_costs(filename: str, costs: dict, highlight: str = ''):
  """Incremental costs ``{name: L f32[T]}`` per step; an optimal schedule is flat."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for n, (name, c) in enumerate(costs.items()):
    c = np.asarray(c)
    bold = name == highlight
    ax.plot(np.arange(len(c)), c, marker='o' if len(c) <= 30 else None, ms=3,
            lw=2.5 if bold else 1.2, ls=LINESTYLES[n % 4], label=name, zorder=3 if bold else 2)
  ax.set_yscale('log')
  ax.set_xlabel('step i (from t_{i+1} to t_i)')
  ax.set_ylabel('incremental cost L_i')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  _save(fig, filename)
