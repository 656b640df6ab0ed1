"""Config helpers shared by the tests: a smoke config with overrides written ``section__field=value``."""
from configs import toy1d


def override(config, **overrides):
  """``config`` with ``a__b__c=v`` setting ``config.a.b.c = v`` (any depth)."""
  for key, value in overrides.items():
    *sections, field = key.split('__')
    node = config
    for section in sections:
      node = node[section]
    node[field] = value
  return config


def smoke(**overrides):
  """The toy smoke config (``configs/toy1d.py:smoke``) with ``overrides``."""
  return override(toy1d.get_config('smoke'), **overrides)
