"""Pure, swappable eviction policies for kvstore.

>>> from policies import available, get
>>> "prefix-chain" in available() and get("lru").name == "lru"
True
"""

from .base import ChainView, EntryView, Policy, ScoredPolicy
from .belady import BeladyPolicy, BeladySizePolicy
from .ds4_density import Ds4DensityPolicy
from .field import HiCachePolicy, MarconiPolicy, VllmOffloadPolicy
from .lru import LRUPolicy
from .prefix_chain import PrefixChainPolicy
from .registry import ENTRY_POINT_GROUP, available, get, is_offline, offline, online, resolve
from .simple import FIFOPolicy, GDSFPolicy, LFUPolicy, RandomPolicy

__all__ = [
    "ChainView", "EntryView", "Policy", "ScoredPolicy",
    "PrefixChainPolicy", "LRUPolicy", "FIFOPolicy", "LFUPolicy", "GDSFPolicy", "Ds4DensityPolicy",
    "RandomPolicy", "BeladyPolicy", "BeladySizePolicy", "HiCachePolicy", "VllmOffloadPolicy", "MarconiPolicy",
    "available", "get", "online", "offline", "is_offline", "resolve", "ENTRY_POINT_GROUP",
]
