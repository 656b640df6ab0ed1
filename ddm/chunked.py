"""Work in fixed-size chunks: bounded memory and one compilation for any number of examples.

Every chunk has the same shape: the last is padded by repeating its last row, and the padding's outputs
are dropped. Functions applied this way must treat examples independently (all of this project's do).
"""
import jax
import jax.numpy as jnp
import numpy as np


def num_chunks(n: int, size: int) -> int:
  return -(-int(n) // int(size))


def pad_rows(x, size: int):
  """``(x padded to a multiple of size rows, pad)``, repeating the last row (NumPy or jax arrays)."""
  pad = num_chunks(x.shape[0], size) * size - x.shape[0]
  if not pad:
    return x, 0
  lib = np if isinstance(x, np.ndarray) else jnp
  return lib.concatenate([x, lib.repeat(x[-1:], pad, axis=0)]), pad


def host_map(fn, x, size: int, key=None) -> np.ndarray:
  """``fn`` over the rows of ``x`` in chunks of ``size`` from the host: the outputs concatenated as NumPy.
  With ``key``, ``fn(chunk, fold_in(key, i))`` for the chunk that starts at row ``i``."""
  size = min(int(size), len(x))
  padded, pad = pad_rows(x, size)
  out = []
  for i in range(0, len(padded), size):
    args = (padded[i:i + size],) if key is None else (padded[i:i + size], jax.random.fold_in(key, i))
    out.append(np.asarray(fn(*args)))
  return np.concatenate(out)[:len(x)]


def device_map(fn, x, t, size: int, key):
  """``fn(x_c f32[size, *S], t_c f32[size], key_c) -> f32[size]`` over chunks inside one jitted graph
  (``lax.map``: the memory of one chunk); chunk ``c`` gets ``fold_in(key, c)``. Returns f32[B]."""
  n = x.shape[0]
  if n <= size:
    return fn(x, t, jax.random.fold_in(key, 0))
  (xp, _), (tp, _) = pad_rows(x, size), pad_rows(t, size)
  chunks = xp.shape[0] // size
  out = jax.lax.map(lambda a: fn(a[0], a[1], jax.random.fold_in(key, a[2])),
                    (xp.reshape((chunks, size) + x.shape[1:]), tp.reshape(chunks, size), jnp.arange(chunks)))
  return out.reshape(-1)[:n]
