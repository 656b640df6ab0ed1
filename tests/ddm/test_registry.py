import pytest

from ddm.registry import BASELINES, Registry


def test_duplicate_and_unknown_names():
  reg = Registry('widget')
  reg.register('a')(1)
  with pytest.raises(ValueError, match="widget 'a' is already registered"):
    reg.register('a')(2)
  with pytest.raises(ValueError, match=r"config.x='b' is not a known widget; allowed: a"):
    reg.get('b', 'config.x')
  assert reg.get('a') == 1 and 'a' in reg


def test_baselines_registered():
  import schedule  # noqa: F401
  assert BASELINES.names() == ['cosine', 'edm_rho3', 'edm_rho7', 'linear', 'log_linear']
