"""Named PRNG streams: every random number of a run comes from ``key(config.seed, stream)``.

The only place the stream constants live. Their values are those every stored result was made with (the
classifier's stream and the two search keys predate this module), so a rerun reproduces them bit for bit.
"""
import jax

# stream -> the integer folded into PRNGKey(seed)
STREAMS = {
    'init': 0, 'train': 1, 'eval': 2, 'sample': 3, 'data': 4, 'likelihood': 5, 'floor': 6,
    'model_samples': 6,       # p_t from the model's reverse process in fit_schedule (shares 6 with 'floor')
    'classifier': 0x0C1A55,   # the offline feature classifier's training
    'cost_fraction': 7,       # tools.cost_fraction: the examples whose coefficient spread is measured
}
# streams that are not folds: the search key is the seed's own key, its reference fit the next seed's
SEARCH, SEARCH_REFERENCE = 'search', 'search_reference'


def key(seed: int, stream: str) -> jax.Array:
  """The PRNG key of ``stream`` for ``seed``; an unknown stream is an error naming the known ones."""
  if stream == SEARCH:
    return jax.random.PRNGKey(seed)
  if stream == SEARCH_REFERENCE:
    return jax.random.PRNGKey(seed + 1)
  if stream not in STREAMS:
    raise KeyError(f'unknown PRNG stream {stream!r}; known: {", ".join(list(STREAMS) + [SEARCH, SEARCH_REFERENCE])}')
  return jax.random.fold_in(jax.random.PRNGKey(seed), STREAMS[stream])
