"""Distances between two sets of image features: the Frechet (FID) and kernel (KID) distances.

``statistics`` and ``frechet_distance`` are the FID of Heusel et al. (2017) in float64 NumPy: fit a
Gaussian to each feature set and compute

    FID = ||mu_1 - mu_2||^2 + tr(C_1) + tr(C_2) - 2 tr((C_1 C_2)^{1/2}).

``kernel_distance`` is the kernel inception distance of Binkowski et al. (2018): the unbiased estimate of
the squared maximum mean discrepancy under the cubic polynomial kernel, in ``jax.numpy`` so that it can be
differentiated with respect to the first feature set.
"""
import contextlib
from typing import Callable

import jax.numpy as jnp
import numpy as np

try:  # a dependency of scikit-learn (requirements.txt); optional here
  import threadpoolctl
except ImportError:  # pragma: no cover
  threadpoolctl = None


def _single_blas_thread():
  """OpenBLAS's threaded symmetric eigensolver is pathologically slow when the cores are shared (a
  2048 x 2048 ``eigh`` measured 22 s threaded against 1.4 s on one thread on a loaded 2-core machine);
  one thread costs little on an idle machine."""
  if threadpoolctl is None:  # pragma: no cover
    return contextlib.nullcontext()
  return threadpoolctl.threadpool_limits(1, user_api='blas')


def statistics(features):
  """Mean and unbiased covariance of a feature set.

  Args:
    features: ``[N, F]`` array (N >= 2), one feature vector per row.

  Returns:
    ``(mu, cov)``: float64 ``[F]`` mean ``mu = (1/N) sum_n f_n`` and float64 ``[F, F]`` covariance
    ``cov = (1/(N-1)) sum_n (f_n - mu)(f_n - mu)^T`` (the estimate the reference FID code uses).
  """
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f'features must be [N, F] with N >= 2, got shape {f.shape}')
  mu = f.mean(axis=0)
  centred = f - mu
  cov = centred.T @ centred / (f.shape[0] - 1)
  return mu, cov


def _psd_sqrt(c):
  """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues, which
  are round-off, clipped to zero)."""
  w, v = np.linalg.eigh(c)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(cov1, cov2) -> float:
  """``tr((C_1 C_2)^{1/2})`` for symmetric positive semi-definite ``[F, F]`` matrices.

  ``C_1 C_2`` is similar to the symmetric PSD matrix ``M = C_1^{1/2} C_2 C_1^{1/2}``
  (``C_1 C_2 = C_1^{1/2} M C_1^{-1/2}`` where C_1 is invertible, and by continuity otherwise), so its
  principal square root has trace ``sum_i sqrt(lambda_i(M))``. Both eigendecompositions are of
  symmetric matrices, which is stable in float64 even when ``C_1 C_2`` is singular (fewer samples than
  features), where a general matrix square root of the non-symmetric product is not.
  """
  c1 = np.asarray(cov1, np.float64)
  c2 = np.asarray(cov2, np.float64)
  with _single_blas_thread():
    s1 = _psd_sqrt(0.5 * (c1 + c1.T))
    m = s1 @ (0.5 * (c2 + c2.T)) @ s1
    lam = np.linalg.eigvalsh(0.5 * (m + m.T))
  return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """Frechet distance between the Gaussians ``N(mu_1, C_1)`` and ``N(mu_2, C_2)``.

  Args:
    mu1, mu2: ``[F]`` means.
    cov1, cov2: ``[F, F]`` symmetric positive semi-definite covariances.

  Returns:
    ``||mu_1 - mu_2||^2 + tr(C_1) + tr(C_2) - 2 tr((C_1 C_2)^{1/2})`` as a Python float, computed in
    float64 through ``trace_sqrt_product`` (eigendecompositions of symmetric matrices; about two
    seconds for F = 2048 on two CPU cores). It is symmetric in its two arguments and zero for identical
    statistics up to round-off; a negative value (round-off) is returned as 0.
  """
  mu1 = np.asarray(mu1, np.float64)
  mu2 = np.asarray(mu2, np.float64)
  c1 = np.asarray(cov1, np.float64)
  c2 = np.asarray(cov2, np.float64)
  if mu1.shape != mu2.shape or c1.shape != c2.shape or c1.shape != mu1.shape * 2:
    raise ValueError(f'shapes disagree: mu {mu1.shape}, {mu2.shape}; cov {c1.shape}, {c2.shape}')
  tr_sqrt = trace_sqrt_product(c1, c2)   # = trace_sqrt_product(c2, c1) up to round-off
  diff = mu1 - mu2
  value = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
  return max(value, 0.0)


def polynomial_kernel(x, y):
  """``k(x, y) = (x . y / F + 1)^3`` between the rows of ``x [M, F]`` and ``y [N, F]``: ``[M, N]``."""
  return (x @ y.T / x.shape[-1] + 1.0) ** 3


def kernel_distance(f1, f2):
  """Kernel inception distance: the unbiased MMD^2 under the cubic polynomial kernel (Binkowski et al.).

  Args:
    f1: ``[M, F]`` features (M >= 2); the result is differentiable with respect to them.
    f2: ``[N, F]`` features (N >= 2).

  Returns:
    jnp scalar ``sum_{i != j} k(x_i, x_j) / (M (M-1)) + sum_{i != j} k(y_i, y_j) / (N (N-1))
    - 2 sum_{i, j} k(x_i, y_j) / (M N)`` with ``k(x, y) = (x . y / F + 1)^3``. Its expectation is
    exactly MMD^2 (zero when both sets come from one distribution), so a single value can be negative.
  """
  f1 = jnp.asarray(f1)
  f2 = jnp.asarray(f2, f1.dtype)
  m, n = f1.shape[0], f2.shape[0]
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or m < 2 or n < 2:
    raise ValueError(f'features must be [M, F] and [N, F] with M, N >= 2, got {f1.shape}, {f2.shape}')
  kxx = polynomial_kernel(f1, f1)
  kyy = polynomial_kernel(f2, f2)
  kxy = polynomial_kernel(f1, f2)
  xx = (jnp.sum(kxx) - jnp.trace(kxx)) / (m * (m - 1))
  yy = (jnp.sum(kyy) - jnp.trace(kyy)) / (n * (n - 1))
  return xx + yy - 2.0 * jnp.mean(kxy)


def kid_loss(feature_fn: Callable, data_features, unbiased: bool = False) -> Callable:
  """``loss(x f32[B, *S])``: the squared MMD between ``feature_fn(x)`` and ``data_features`` under KID's cubic
  kernel ``k(x, y) = (x . y / F + 1)^3`` (:func:`polynomial_kernel`).

  Default, the biased (V-statistic) estimate ``||mean_i phi(x_i) - mean_j phi(y_j)||^2`` in the kernel's
  feature space: never negative, so it can be minimised. KID proper, the unbiased U-statistic
  :func:`kernel_distance` (``unbiased=True``), drops the diagonal ``k(x_i, x_i)``; where features can
  be negative the off-diagonal terms ``(1 + x_i . x_j / F)^3`` go to minus infinity as samples spread in
  opposite directions, and a search drives it there (measured: from -244 to -9e13 in 25 steps with a linear
  stand-in feature map) instead of towards the data. The V-statistic's bias, ``(E k(x, x) - E k(x, x')) / B``,
  is O(1/B). Report KID itself with :func:`kernel_distance` on fresh samples.

  Args:
    feature_fn: ``x f32[B, *S] in [-1, 1] -> f32[B, F]``, differentiable. data_features: f32[N, F], N >= 2.
  """
  data_features = jnp.asarray(data_features)
  if unbiased:
    return lambda x: kernel_distance(feature_fn(x), data_features)
  yy = jnp.mean(polynomial_kernel(data_features, data_features))

  def loss(x):
    f = feature_fn(x).astype(data_features.dtype)
    return (jnp.mean(polynomial_kernel(f, f)) + yy
            - 2.0 * jnp.mean(polynomial_kernel(f, data_features)))

  return loss
