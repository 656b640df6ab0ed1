"""Baseline schedules against their defining formulas (method.md section 6)."""
import numpy as np
import pytest

from ddm import paths
from ddm.registry import BASELINES
from schedule import baselines

ALL_PATHS = [paths.ve_path(0.002, 80.0), paths.ve_path(0.002, 80.0, 'linear'), paths.vp_path('linear'),
             paths.vp_path('cosine')]


@pytest.mark.parametrize('name', BASELINES.names())
@pytest.mark.parametrize('path', ALL_PATHS, ids=['ve_geo', 've_lin', 'vp_lin', 'vp_cos'])
def test_every_baseline_is_a_valid_schedule(name, path):
  ts = baselines.make_baseline(name, path, 12)
  assert ts.shape == path.sigma(ts).shape == path.alpha(ts).shape == (13,)
  assert float(ts[0]) == 0.0 and float(ts[-1]) == 1.0
  assert np.all(np.diff(np.asarray(ts)) > 0)


def test_edm_rho_matches_karras_eq5():
  path = paths.ve_path(0.002, 80.0, 'linear')
  n, rho = 18, 7.0
  i = np.arange(n)
  karras = (80.0**(1 / rho) + i / (n - 1) * (0.002**(1 / rho) - 80.0**(1 / rho)))**rho   # descending
  np.testing.assert_allclose(path.sigma(baselines.make_baseline('edm_rho7', path, n - 1))[::-1], karras, rtol=1e-4)


def test_log_linear_is_geometric_in_sigma_and_cosine_on_vp_is_the_cosine_path():
  ve = paths.ve_path(0.002, 80.0, 'linear')
  s = ve.sigma(baselines.make_baseline('log_linear', ve, 10))
  np.testing.assert_allclose(s, np.geomspace(0.002, 80.0, 11), rtol=1e-4)
  # The cosine baseline spaces atan(sigma/alpha) uniformly; on the VP cosine path that is (nearly) uniform in t.
  t = baselines.make_baseline('cosine', paths.vp_path('cosine'), 10)
  np.testing.assert_allclose(t, np.linspace(0, 1, 11), atol=0.02)


def test_unknown_baseline():
  with pytest.raises(ValueError, match="config.schedule.init='karras' is not a known baseline schedule; allowed: "
                                       "cosine, edm_rho3, edm_rho7, linear, log_linear"):
    baselines.make_baseline('karras', ALL_PATHS[0], 10)
