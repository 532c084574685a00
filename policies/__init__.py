"""Pure, swappable eviction policies for kvstore.

>>> from policies import available, get
>>> sorted(available())[:2]
['ds4-density', 'lru']
"""

from .base import ChainView, EntryView, Policy, ScoredPolicy
from .ds4_density import Ds4DensityPolicy
from .lru import LRUPolicy
from .registry import ENTRY_POINT_GROUP, available, get, resolve

__all__ = [
    "ChainView", "EntryView", "Policy", "ScoredPolicy",
    "LRUPolicy", "Ds4DensityPolicy",
    "available", "get", "resolve", "ENTRY_POINT_GROUP",
]
