"""Makes the FID Inception weights file (``.npz``) that ``eval/inception.py`` loads, once, on a machine with
network access and PyTorch:

    python -m tools.inception_weights --convert --out=inception_fid.npz [--pth=...] [--verify]

downloads pytorch-fid's published ``pt_inception-2015-12-05-6726825d.pth`` (refused unless its sha256 starts
with the digits in its name), reads its state dict with ``torch.load(..., weights_only=True)`` and converts
it (``convert_state_dict``) to the ``.npz`` layout of ``eval.inception.load_params``; ``--verify`` also
compares the features with pytorch-fid's own network. Then pass
``--config.eval.inception_path=/abs/path/inception_fid.npz``.
"""
import argparse
import os
import sys
import tempfile
from typing import Any, Dict, Sequence

import numpy as np

from eval.inception import (CONFIG_FIELD, FEATURE_DIM, FID_WEIGHTS_FILE, count_params, feature_fn, flatten,
                            load_params, save_npz, unflatten, variable_shapes)

FID_WEIGHTS_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/' + FID_WEIGHTS_FILE

# ----------------------------------------------------------------------------------------------------
# Conversion of pytorch-fid's state dict.

_BN_KEYS = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
            'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
_IGNORED_PREFIXES = ('fc.', 'AuxLogits.')   # the classifier (1008 classes) and auxiliary head: unused


def convert_state_dict(state_dict: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """pytorch-fid's ``FIDInceptionV3`` state dict -> ``{'params': ..., 'batch_stats': ...}``.

  ``<module>.conv.weight`` (OIHW) -> ``params/<module>/conv/kernel`` (HWIO);
  ``<module>.bn.weight|bias`` -> ``params/<module>/bn/scale|bias``;
  ``<module>.bn.running_mean|running_var`` -> ``batch_stats/<module>/bn/mean|var``; ``<module>`` with
  '/' for '.'. ``num_batches_tracked``, ``fc.*`` and ``AuxLogits.*`` are dropped; any other key, or an
  array of the wrong shape, raises ``ValueError``.
  """
  flat = {}
  for key, value in state_dict.items():
    value = np.asarray(value)
    if key.startswith(_IGNORED_PREFIXES) or key.endswith('.num_batches_tracked'):
      continue
    parts = key.split('.')
    module, layer, leaf = parts[:-2], parts[-2], parts[-1]
    if not module:
      raise ValueError(f'unexpected key {key!r} in the Inception state dict')
    path = '/'.join(module)
    if layer == 'conv' and leaf == 'weight':
      if value.ndim != 4:
        raise ValueError(f'{key}: expected a 4-D OIHW kernel, got shape {value.shape}')
      flat[f'params/{path}/conv/kernel'] = np.transpose(value, (2, 3, 1, 0)).astype(np.float32)
    elif layer == 'bn' and leaf in _BN_KEYS:
      collection, name = _BN_KEYS[leaf]
      flat[f'{collection}/{path}/bn/{name}'] = value.astype(np.float32)
    else:
      raise ValueError(f'unexpected key {key!r} in the Inception state dict')
  expected = variable_shapes()
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  bad = sorted(k for k in set(expected) & set(flat) if flat[k].shape != expected[k])
  if missing or extra or bad:
    raise ValueError(f'state dict does not match the FID Inception: missing {missing[:5]}, '
                     f'unexpected {extra[:5]}, mis-shaped {[(k, flat[k].shape, expected[k]) for k in bad[:5]]}')
  return unflatten(flat)


def state_dict_from_variables(variables) -> Dict[str, np.ndarray]:
  """The inverse of ``convert_state_dict`` (without ``fc``/``num_batches_tracked``): torch key names and
  layouts. Used by the tests to check the conversion without PyTorch."""
  out = {}
  inverse = {v: k for k, v in _BN_KEYS.items()}
  for name, value in flatten(variables).items():
    collection, *module, layer, leaf = name.split('/')
    prefix = '.'.join(module + [layer])
    value = np.asarray(value)
    if layer == 'conv':
      out[f'{prefix}.weight'] = np.transpose(value, (3, 2, 0, 1))
    else:
      out[f'{prefix}.{inverse[(collection, leaf)]}'] = value
  return out


# The published file's sha256 starts with the hex digits in its name (torch.hub's convention, which torch.hub
# checks itself): the download is refused unless it matches.
FID_WEIGHTS_SHA256_PREFIX = '6726825d'


def check_sha256_prefix(filename: str, prefix: str) -> None:
  """Raises ``SystemExit`` unless ``sha256(filename)`` starts with ``prefix``."""
  import hashlib
  h = hashlib.sha256()
  with open(filename, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  if not h.hexdigest().startswith(prefix):
    raise SystemExit(f'{filename}: sha256 {h.hexdigest()} does not start with {prefix} (the published '
                     f'{os.path.basename(FID_WEIGHTS_URL)}); the file is damaged or not the FID weights: not used')


def _download(url: str, dest: str) -> None:
  import urllib.request
  print(f'downloading {url}', file=sys.stderr)
  urllib.request.urlretrieve(url, dest)
  check_sha256_prefix(dest, FID_WEIGHTS_SHA256_PREFIX)


def _require_torch() -> None:
  import importlib.util
  if importlib.util.find_spec('torch') is None:
    raise SystemExit('the conversion reads a PyTorch checkpoint: pip install torch (CPU is enough)')


def _load_torch_state_dict(pth: str) -> Dict[str, np.ndarray]:
  _require_torch()
  import torch
  sd = torch.load(pth, map_location='cpu', weights_only=True)  # tensors only: a .pth can otherwise run code
  return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def _verify_against_pytorch_fid(variables) -> None:
  """Compares the features with pytorch-fid's own network (``pip install pytorch-fid``), if present."""
  try:
    import torch
    from pytorch_fid.inception import InceptionV3 as TorchInception
  except ImportError:
    print('pytorch-fid not installed: skipped the feature comparison', file=sys.stderr)
    return
  rng = np.random.default_rng(0)
  x = rng.uniform(-1.0, 1.0, size=(2, 32, 32, 3)).astype(np.float32)
  ours = np.asarray(feature_fn(variables)(x))
  net = TorchInception([TorchInception.BLOCK_INDEX_BY_DIM[FEATURE_DIM]]).eval()
  with torch.no_grad():
    theirs = net(torch.from_numpy((x.transpose(0, 3, 1, 2) + 1.0) / 2.0))[0][:, :, 0, 0].numpy()
  err = float(np.max(np.abs(ours - theirs)) / (np.max(np.abs(theirs)) + 1e-12))
  print(f'max relative difference to pytorch-fid features: {err:.2e}', file=sys.stderr)
  if err > 1e-3:
    raise SystemExit('features disagree with pytorch-fid')


def main(argv: Sequence[str] = None) -> None:
  parser = argparse.ArgumentParser(description='Make the FID Inception weights file (.npz) once.')
  parser.add_argument('--convert', action='store_true', help='download (or read --pth) and convert')
  parser.add_argument('--out', default='inception_fid.npz', help='where to write the .npz')
  parser.add_argument('--pth', default='', help='an already downloaded pt_inception-2015-12-05-6726825d.pth')
  parser.add_argument('--verify', action='store_true',
                      help='also compare features with pytorch-fid (needs pip install pytorch-fid)')
  args = parser.parse_args(argv)
  if not args.convert:
    parser.error('nothing to do: pass --convert')
  with tempfile.TemporaryDirectory() as tmp:
    pth = args.pth
    if not pth:
      _require_torch()    # before the 100 MB download
      pth = os.path.join(tmp, os.path.basename(FID_WEIGHTS_URL))
      _download(FID_WEIGHTS_URL, pth)
    variables = convert_state_dict(_load_torch_state_dict(pth))
  save_npz(variables, args.out)
  variables = load_params(args.out)   # the round trip the evaluation will do
  print(f'wrote {args.out}: {count_params(variables):,} parameters; set {CONFIG_FIELD}={os.path.abspath(args.out)}',
        file=sys.stderr)
  if args.verify:
    _verify_against_pytorch_fid(variables)


if __name__ == '__main__':
  main()
