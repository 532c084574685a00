"""The ``Tier`` protocol: what a place that holds checkpoints must do for the store.

A :class:`~kvstore.CheckpointStore` is a stack of tiers, fastest first (RAM,
queued writes, disk, cold, then any tiers the caller adds). The stack asks
each tier the same questions; a tier decides what it keeps with its own
:class:`~kvstore.eviction.EvictionManager` (``make_room``) and policy.

Two kinds of tier:

- a *caching* tier (``caches = True``: RAM, queued writes) holds copies of
  what the tiers below hold or will hold; a read from below is copied into it
  and what it evicts is simply dropped;
- a *holding* tier (disk, cold, a shared or user tier) owns its checkpoints:
  what it evicts is offered to the holding tier below it (``below``), and a
  read from a lower holding tier is promoted into the nearest one above and
  removed below.

A third-party tier is one class with these members; pass an instance in
``CheckpointStore(..., tiers=[...])`` and check it with
:func:`kvstore.testing.check_tier`.

>>> from kvstore.tiers import MemoryTier
>>> from policies import get
>>> isinstance(MemoryTier(1 << 20, get("lru"), block_tokens=16), Tier)
True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..fileformat import Header
from ..keys import PrefixKeys

__all__ = ["Tier"]


@runtime_checkable
class Tier(Protocol):
    """One level of a store's stack of tiers."""

    #: short name shown in ``Match.tier`` and ``stats()["tiers"]``
    name: str
    #: True for a tier of copies (RAM, queued writes); False for one that owns its checkpoints
    caches: bool
    #: the holding tier below, which takes what this one evicts (set by the stack; may be None)
    below: "Tier | None"

    def __contains__(self, key: object) -> bool:
        """Whether the checkpoint ``key`` is held. O(1)."""

    def longest_match(self, prefix: PrefixKeys) -> tuple[int, str] | None:
        """``(tokens, key)`` of the longest held checkpoint that is a prefix, tails included."""

    def tails_at(self, anchor: str) -> dict[str, int]:
        """Tails held under the aligned key ``anchor``: ``{tail key: tokens}``."""

    def read(self, key: str) -> tuple[Header, Any] | None:
        """``(header, payload)`` of ``key``, verified; ``None`` if it is not (or no
        longer) held or fails verification — never wrong bytes."""

    def write(self, header: Header, payload: Any, *, now: float) -> bool:
        """Hold ``payload`` under ``header.key`` (``header.payload_len`` is its
        length); ``False`` when declined or already held. May evict (and offer
        victims to ``below``)."""

    def remove(self, key: str) -> None:
        """Forget ``key`` (it moved to another tier); a missing key is no error."""

    def record_hit(self, key: str, now: float, session: str | None = None) -> None:
        """A lookup matched ``key`` (and passed through its held ancestors)."""

    def count_lookup(self, hit: bool) -> None:
        """A lookup was served here (``hit``) or went on to a slower tier."""

    def refresh(self) -> None:
        """See what other processes changed (a no-op for a tier in this process)."""

    def stats(self) -> dict[str, Any]:
        """At least ``entries``, ``bytes``, ``capacity_bytes``, ``hits``, ``misses``, ``evictions``."""

    def flush(self) -> None:
        """Make everything written so far durable (wait for queued work)."""

    def close(self) -> None:
        """Flush and release resources; idempotent."""
