"""kvstore: a tiered disk KV-cache checkpoint store for LLM serving engines.

>>> from kvstore import CheckpointStore, Match
>>> CheckpointStore.__name__
'CheckpointStore'
"""

import logging

from .errors import (
    CapacityError,
    ConfigMismatchError,
    CorruptFileError,
    KVStoreError,
    PinQuotaError,
    PolicyError,
    StoreUnavailableError,
)
from .eviction import Entry, EvictionManager
from .keys import Namespace, PrefixKeys, as_token_array
from .store import CheckpointStore, Match

__all__ = [
    "CheckpointStore", "Match", "EvictionManager", "Entry", "Namespace", "PrefixKeys",
    "as_token_array", "KVStoreError", "CapacityError", "ConfigMismatchError",
    "CorruptFileError", "PinQuotaError", "PolicyError", "StoreUnavailableError",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
