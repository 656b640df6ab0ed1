"""Metrics of samples against an exact 1-D target (method.md section 7): every number here is exact
up to Monte Carlo error in the samples themselves."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from ddm.targets import GaussianMixture

HISTOGRAM_BINS = 256


def support(target: GaussianMixture, width: float = 5.0):
  """An interval holding all but a negligible part of ``p_0`` (1-D)."""
  m, s = target.means[:, 0], target.stds
  return float(np.min(m - width * s)), float(np.max(m + width * s))


def cdf(target: GaussianMixture, x):
  """Exact CDF of the 1-D mixture ``p_0``."""
  x = np.asarray(x, np.float64)[..., None]
  return np.sum(target.weights * special.ndtr((x - target.means[:, 0]) / target.stds), axis=-1)


def log_likelihood(target: GaussianMixture, x) -> float:
  """Mean ``log p_0(x)`` of the samples under the true data density."""
  return float(np.mean(np.asarray(target.log_prob_data(jnp.asarray(x)))))


def histogram_kl(target: GaussianMixture, x, bins: int = HISTOGRAM_BINS) -> float:
  """``KL(p_0 || p_hat)`` between the exact bin masses and the samples' histogram (half-count smoothing)."""
  lo, hi = support(target)
  edges = np.linspace(lo, hi, bins + 1)
  true = np.diff(cdf(target, edges))
  true = true / true.sum()
  counts, _ = np.histogram(np.clip(np.asarray(x)[:, 0], lo, hi), edges)
  est = (counts + 0.5) / (counts.sum() + 0.5 * bins)
  keep = true > 0
  return float(np.sum(true[keep] * np.log(true[keep] / est[keep])))


def wasserstein1(target: GaussianMixture, x) -> float:
  """``W1 = int |F_n(x) - F(x)| dx`` against the exact CDF (1-D), on a fine grid."""
  x = np.sort(np.asarray(x)[:, 0])
  lo, hi = support(target)
  lo, hi = min(lo, x[0]), max(hi, x[-1])
  grid = np.linspace(lo, hi, 200_001)
  empirical = np.searchsorted(x, grid, side='right') / x.size
  return float(np.trapezoid(np.abs(empirical - cdf(target, grid)), grid))


def score_error(score_fn, target: GaussianMixture, path, ts, key, num_samples: int = 512):
  """Per level: ``sigma(t_i)^2 E_{x ~ p_{t_i}} ||s_theta(x, t_i) - s(x, t_i)||^2`` (dimensionless): f32[len(ts)]."""
  def one(args):
    key_i, t_i = args
    t = jnp.full((num_samples,), t_i)
    x = target.sample_pt(key_i, path, t)
    err = jnp.sum((score_fn(x, t) - target.score(x, t, path))**2, axis=1)
    return path.sigma(t_i)**2 * jnp.mean(err)
  ts = jnp.asarray(ts)
  return np.asarray(jax.lax.map(one, (jax.random.split(key, ts.shape[0]), ts)))


def nonfinite_fraction(x) -> float:
  """Share of samples (rows of ``x: [N, *S]``) with any non-finite coordinate."""
  x = np.asarray(x)
  return float(np.mean(~np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)))


def metrics(target: GaussianMixture, x) -> dict:
  """All sample metrics: ``log_likelihood`` (higher is better), ``kl`` and ``w1`` (lower is better), and
  ``nonfinite_fraction``. A sample set with any non-finite value has NaN metrics: dropping the bad samples
  would score an all-NaN model by its few finite ones (or by nothing at all)."""
  bad = nonfinite_fraction(x)
  if bad:
    return {'log_likelihood': float('nan'), 'kl': float('nan'), 'w1': float('nan'), 'nonfinite_fraction': bad}
  return {'log_likelihood': log_likelihood(target, x), 'kl': histogram_kl(target, x),
          'w1': wasserstein1(target, x), 'nonfinite_fraction': 0.0}


def density_curve(target: GaussianMixture, num: int = 4000):
  """``(x, p_0(x))`` on the target's support, for plots."""
  lo, hi = support(target)
  x = np.linspace(lo, hi, num)
  return x, np.exp(np.asarray(target.log_prob_data(jnp.asarray(x)[:, None])))


def mode_masses(target: GaussianMixture, x, groups: int):
  """Sample mass near each of ``groups`` coarse modes (1-D): components sorted by mean and split into
  ``groups`` equal runs (for the depth-K Cantor target, ``groups = 8`` gives its 8 coarse modes); each
  window spans the run's means widened by 3 component stds. Returns f32[groups]; each is ``1/groups``
  for a perfect sampler and near 0 where a mode is missed."""
  order = np.argsort(target.means[:, 0])
  means, stds = target.means[order, 0], target.stds[order]
  x = np.asarray(x)[:, 0]
  masses = []
  for run in np.array_split(np.arange(len(means)), groups):
    lo, hi = means[run].min() - 3 * stds[run].max(), means[run].max() + 3 * stds[run].max()
    masses.append(np.mean((x >= lo) & (x <= hi)))
  return np.array(masses)
