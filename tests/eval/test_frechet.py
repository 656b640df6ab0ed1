"""FID and KID (eval/frechet.py) against direct references: scipy's matrix square root as the reference
FID code uses it, the diagonal-Gaussian closed form, and a double loop for the unbiased MMD^2."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from eval import frechet


def reference_fid(mu1, cov1, mu2, cov2, eps=1e-6):
  """The reference implementation's arithmetic: sqrtm of the product, real part, eps offset if singular."""
  covmean = linalg.sqrtm(cov1 @ cov2)
  if not np.isfinite(covmean).all():
    offset = np.eye(cov1.shape[0]) * eps
    covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean)


def correlated_features(rng, n, f, scale=1.0, shift=0.0):
  mix = rng.normal(size=(f, f)) / np.sqrt(f)
  return (rng.normal(size=(n, f)) @ mix + 0.3 * rng.normal(size=(n, f))) * scale + shift


def test_statistics_unbiased():
  x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
  mu, cov = frechet.statistics(x)
  assert mu.dtype == np.float64 and cov.dtype == np.float64
  assert mu.shape == (6,) and cov.shape == (6, 6)
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)
  with pytest.raises(ValueError):
    frechet.statistics(x[:1])


@pytest.mark.parametrize('n,f', [(400, 32), (300, 64), (24, 64)])  # the last: N < F, both covariances singular
def test_frechet_matches_scipy_reference(n, f):
  rng = np.random.default_rng(n + f)
  mu1, cov1 = frechet.statistics(correlated_features(rng, n, f))
  mu2, cov2 = frechet.statistics(correlated_features(rng, n, f, scale=1.4, shift=0.1))
  ours = frechet.frechet_distance(mu1, cov1, mu2, cov2)
  ref = reference_fid(mu1, cov1, mu2, cov2)
  assert isinstance(ours, float)
  assert abs(ours - ref) <= 1e-4 * abs(ref), (ours, ref)


def test_frechet_zero_for_identical_statistics_and_symmetric():
  rng = np.random.default_rng(1)
  mu1, cov1 = frechet.statistics(correlated_features(rng, 100, 40))
  mu2, cov2 = frechet.statistics(correlated_features(rng, 30, 40, scale=0.7))  # singular
  scale = np.trace(cov1)
  assert abs(frechet.frechet_distance(mu1, cov1, mu1, cov1)) < 1e-9 * scale
  assert abs(frechet.frechet_distance(mu2, cov2, mu2, cov2)) < 1e-9 * scale
  d12 = frechet.frechet_distance(mu1, cov1, mu2, cov2)
  d21 = frechet.frechet_distance(mu2, cov2, mu1, cov1)
  assert d12 > 0
  assert abs(d12 - d21) < 1e-6 * d12  # cov2 is singular: sqrtm of the product is only good to ~1e-8 relative


def test_frechet_diagonal_gaussians_closed_form():
  rng = np.random.default_rng(2)
  f = 20
  mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
  v1, v2 = rng.uniform(0.1, 3.0, size=f), rng.uniform(0.0, 3.0, size=f)
  v2[:3] = 0.0  # degenerate directions
  exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  ours = frechet.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
  np.testing.assert_allclose(ours, exact, rtol=1e-10)


def test_frechet_shape_mismatch_raises():
  with pytest.raises(ValueError):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def kid_double_loop(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  m, n, f = len(x), len(y), x.shape[1]
  k = lambda a, b: (float(np.dot(a, b)) / f + 1.0) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return xx + yy - 2.0 * xy


def test_kernel_distance_matches_double_loop():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(6, 5))
  y = rng.normal(size=(9, 5)) * 1.2 + 0.3
  ours = frechet.kernel_distance(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
  assert ours.shape == ()
  np.testing.assert_allclose(float(ours), kid_double_loop(x, y), rtol=1e-4, atol=1e-5)


def test_kernel_distance_small_for_same_distribution():
  rng = np.random.default_rng(4)
  n, f = 300, 16
  same = [float(frechet.kernel_distance(rng.normal(size=(n, f)), rng.normal(size=(n, f)))) for _ in range(4)]
  shifted = float(frechet.kernel_distance(rng.normal(size=(n, f)), rng.normal(size=(n, f)) + 0.5))
  assert shifted > 0
  assert abs(np.mean(same)) < 0.05 * shifted, (same, shifted)
  assert max(abs(s) for s in same) < 0.2 * shifted, (same, shifted)


def test_kernel_distance_gradient_finite():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(12, 8)) + 0.2, jnp.float32)
  g = jax.jit(jax.grad(frechet.kernel_distance))(x, y)
  assert g.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
  # Directional derivative agrees with a central difference (float32, so a loose tolerance).
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  h = 1e-2
  fd = (frechet.kernel_distance(x + h * v, y) - frechet.kernel_distance(x - h * v, y)) / (2 * h)
  np.testing.assert_allclose(float(jnp.vdot(g, v)), float(fd), rtol=2e-2)
