"""Tiers: the places a store keeps checkpoints, fastest first.

``MemoryTier`` (RAM, in this process), ``WriteBehind`` (queued writes),
``DiskTier`` (a store directory; with a ``compression_level``, the cold
tier), ``SharedTier`` (Redis, shared by a fleet of engines), all following the :class:`Tier` protocol, which a third-party tier
implements to join the stack (``CheckpointStore(..., tiers=[...])``).
"""

from .base import Tier
from .disk import DiskTier
from .memory import MemoryTier, frozen_copy
from .shared import SharedTier
from .writeback import WriteBehind

__all__ = ["Tier", "MemoryTier", "DiskTier", "WriteBehind", "SharedTier", "frozen_copy"]
