"""Name -> object registries, used as decorators: ``@SAMPLERS.register('heun')``.

Keys are lower_snake_case and identical to the strings users put in configs.
"""
from typing import Any, Callable, Dict


class Registry:
  """A named table of factories; duplicate or unknown names raise ``ValueError``."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: Dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def decorator(obj):
      if name in self._items:
        raise ValueError(f'{self.kind} {name!r} is already registered')
      self._items[name] = obj
      return obj
    return decorator

  def get(self, name: str, setting: str = '') -> Any:
    """Returns the object registered as ``name``; ``setting`` names the config field in errors."""
    if name not in self._items:
      where = f'{setting}=' if setting else f'{self.kind} '
      raise ValueError(f'{where}{name!r} is not a known {self.kind}; allowed: {", ".join(self.names())}')
    return self._items[name]

  def names(self):
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items


PATHS = Registry('path')
TARGETS = Registry('target')
PRECONDS = Registry('preconditioning')
NETWORKS = Registry('network')
SAMPLERS = Registry('sampler')
COSTS = Registry('cost')
BASELINES = Registry('baseline schedule')
DATASETS = Registry('dataset')
