"""Every exception the project raises on purpose.

All of them derive from :class:`KVStoreError`, so an engine can catch the
store's failures in one place without swallowing its own bugs. Bad arguments
raise the built-in :class:`ValueError` / :class:`TypeError` instead; the ones
here that are also argument errors inherit from those too, so both ``except``
styles work.

>>> from kvstore.errors import KVStoreError, CapacityError
>>> issubclass(CapacityError, KVStoreError) and issubclass(CapacityError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "KVStoreError",
    "CapacityError",
    "ConfigMismatchError",
    "StoreUnavailableError",
    "PolicyError",
    "PinQuotaError",
    "IndexFullError",
    "CorruptFileError",
]


class KVStoreError(Exception):
    """Base class of every error the store raises on purpose."""


class CapacityError(KVStoreError, ValueError):
    """A payload can never fit: it is larger than the tier's capacity, or
    everything that could make room is pinned."""


class IndexFullError(CapacityError):
    """The index has no room left and nothing can be evicted to make some
    (for instance, every checkpoint is pinned)."""


class ConfigMismatchError(KVStoreError, ValueError):
    """A store was reopened with settings (namespace, block size, layout)
    other than those it was created with."""


class StoreUnavailableError(KVStoreError, OSError):
    """The store directory is missing, not a directory, or not writable."""


class PolicyError(KVStoreError, RuntimeError):
    """An eviction policy broke its contract: it raised, named a key that is
    not stored or not eligible, or named nothing while space was needed.
    The store stays consistent; the operation that needed the policy fails."""


class PinQuotaError(KVStoreError, ValueError):
    """Pinning this prefix would exceed the store's pinned-bytes quota."""


class CorruptFileError(KVStoreError, ValueError):
    """A payload file fails its header or checksum validation."""
