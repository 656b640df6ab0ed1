"""The weights tool for the FID Inception-v3 (tools/inception_weights.py) without PyTorch: the torch -> flax
state-dict conversion and its command-line path after the download (the download's hash check and the
tensors-only torch.load are tested in tests/train/test_safety.py)."""
import jax
import numpy as np
import pytest

from eval import inception
from tests.eval.test_inception import LAYERS
from tools import inception_weights


@pytest.fixture(scope='module')
def variables():
  return inception.init_params(0)


def test_convert_state_dict_round_trip(variables):
  sd = inception_weights.state_dict_from_variables(variables)
  expected = {f'{path}.{suffix}' for path, *_ in LAYERS
              for suffix in ('conv.weight', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var')}
  assert set(sd) == expected
  for path, cin, cout, kh, kw in LAYERS:
    assert sd[f'{path}.conv.weight'].shape == (cout, cin, kh, kw)
  # What the published checkpoint also holds, all dropped.
  full = dict(sd, **{'fc.weight': np.zeros((1008, 2048)), 'fc.bias': np.zeros(1008)},
              **{f'{path}.bn.num_batches_tracked': np.array(0) for path, *_ in LAYERS})
  back = inception_weights.convert_state_dict(full)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(variables)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, np.asarray(b))
  with pytest.raises(ValueError, match='unexpected key'):
    inception_weights.convert_state_dict(dict(sd, **{'Mixed_5b.branch1x1.conv.bias': np.zeros(64)}))
  bad = dict(sd)
  bad['Mixed_6b.branch7x7_2.conv.weight'] = np.zeros((128, 128, 7, 1), np.float32)   # transposed kernel
  with pytest.raises(ValueError, match='mis-shaped'):
    inception_weights.convert_state_dict(bad)


def test_convert_cli_requires_flag():
  with pytest.raises(SystemExit):
    inception_weights.main([])


def test_convert_cli_writes_loadable_npz(tmp_path, monkeypatch, variables):
  """The CLI path after the download: state dict -> .npz -> load_params (torch replaced by a stub)."""
  sd = inception_weights.state_dict_from_variables(variables)
  sd['fc.weight'] = np.zeros((1008, 2048), np.float32)
  monkeypatch.setattr(inception_weights, '_load_torch_state_dict', lambda pth: sd)
  out = str(tmp_path / 'inception_fid.npz')
  inception_weights.main(['--convert', f'--out={out}', '--pth=unused.pth'])
  loaded = inception.load_params(out)
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
