"""Checkpoints held in this process's memory, under a byte budget and a policy.

One class serves two roles in :class:`~kvstore.CheckpointStore`: the RAM tier
(``ram_bytes=``: checkpoints just written or just loaded, evicted by their own
policy instance) and the set of writes waiting for the background writer
(:class:`~kvstore.tiers.writeback.WriteBehind`). Payloads are kept as
read-only copies, so what the caller does to its buffer afterwards cannot
change what the tier serves.

>>> from policies import get
>>> from kvstore.fileformat import Header
>>> tier = MemoryTier(1 << 20, get("lru"), block_tokens=4)
>>> head = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=4, payload_len=5, checksum=0)
>>> tier.write(head, b"hello", now=0.0)
True
>>> tier.read("ab" * 20)[1]
b'hello'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import Policy

from ..eviction import Entry, EvictionManager
from ..fileformat import Header
from ..keys import PrefixKeys

__all__ = ["MemoryTier", "frozen_copy", "is_frozen"]


def frozen_copy(payload: Any) -> Any:
    """A copy of ``payload`` nobody can modify: ``bytes``, or a read-only array.

    An array that is read-only all the way down to the memory it owns (or to a
    ``bytes`` object) is taken as it is, without a copy: handing the store such
    an array is a promise not to make it writable again. That saves copying a
    large, freshly allocated payload (whose page faults cost more than the copy).

    >>> frozen_copy(bytearray(b"ab"))
    b'ab'
    >>> frozen_copy(np.zeros(2)).flags.writeable
    False
    >>> owned = np.zeros(2); owned.flags.writeable = False
    >>> frozen_copy(owned) is owned
    True
    """
    if is_frozen(payload):
        return payload
    if isinstance(payload, np.ndarray):
        copy = np.array(payload, copy=True, order="C")
        copy.flags.writeable = False
        return copy
    return bytes(memoryview(payload).cast("B"))


def is_frozen(payload: Any) -> bool:
    """Whether nobody can modify ``payload``: ``bytes``, or an array read-only
    down to the memory it owns (see :func:`frozen_copy`). O(depth of its bases).

    >>> is_frozen(b"ab"), is_frozen(bytearray(b"ab")), is_frozen(np.zeros(2))
    (True, False, False)
    """
    if isinstance(payload, np.ndarray):
        return _read_only_throughout(payload)
    return isinstance(payload, bytes)


class MemoryTier:
    """A byte-budgeted map of checkpoints (header and payload) with an eviction policy:
    a :class:`~kvstore.tiers.Tier` that lives in this process.

    :param capacity_bytes: most payload bytes held.
    :param policy: this tier's own policy instance.
    :param block_tokens: the store's block size (for prefix matching).
    :param name: its name in the stack (``"ram"``).
    :param caches: ``True`` (default) for a tier of copies; ``False`` makes it a
        holding tier that owns what it holds (what it evicts goes to ``below``).
    """

    def __init__(self, capacity_bytes: int, policy: Policy, *, block_tokens: int, name: str = "ram",
                 caches: bool = True) -> None:
        self.manager = EvictionManager(capacity_bytes, policy, layout="snapshot",
                                       block_tokens=block_tokens, pin_quota_bytes=0)
        self.name = name
        self.caches = caches
        self.below = None
        self._items: dict[str, tuple[Header, Any]] = {}
        self.counters = {"hits": 0, "misses": 0, "promotions": 0, "evictions": 0}

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def used_bytes(self) -> int:
        return self.manager.used_bytes

    @property
    def capacity_bytes(self) -> int:
        return self.manager.capacity_bytes

    def keys(self) -> list[str]:
        """Keys held, oldest first."""
        return list(self._items)

    def header(self, key: str) -> Header | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def payload(self, key: str) -> Any:
        """The payload of ``key`` or ``None``."""
        item = self._items.get(key)
        return None if item is None else item[1]

    def longest_match(self, prefix: PrefixKeys) -> tuple[int, str] | None:
        return self.manager.longest_match(prefix)

    def tails_at(self, anchor: str) -> dict[str, int]:
        return self.manager.tails_at(anchor)

    def read(self, key: str) -> tuple[Header, Any] | None:
        """``(header, payload)`` of ``key`` or ``None``. O(1)."""
        return self._items.get(key)

    def write(self, header: Header, payload: Any, *, now: float) -> bool:
        """Hold a read-only copy of ``payload``; ``False`` if declined or already held.
        What it evicts goes to ``below`` when this is a holding tier."""
        if header.key in self._items:
            return False
        evicted = self.add(header, frozen_copy(payload), now=now)
        if self.below is not None and not self.caches:
            for old_header, old_payload in evicted:
                self.below.write(old_header, old_payload, now=now)
        return header.key in self._items

    def remove(self, key: str) -> None:
        self.discard(key)

    def count_lookup(self, hit: bool) -> None:
        self.counters["hits" if hit else "misses"] += 1

    def refresh(self) -> None:
        """Nothing to refresh: only this process sees this tier."""

    def flush(self) -> None:
        """Nothing to flush: memory is as durable as it gets."""

    def close(self) -> None:
        """Drop everything held."""
        for key in list(self._items):
            self.discard(key)

    def add(self, header: Header, payload: Any, *, now: float) -> list[tuple[Header, Any]]:
        """Hold ``payload`` (already frozen) under ``header.key``; return the evicted
        ``(header, payload)`` pairs.

        A payload larger than the whole tier is not held (nothing is evicted for it).
        Runtime complexity: O(victims * policy.victim).
        """
        if header.key in self._items:
            return []
        size = _payload_bytes(payload)
        if size > self.manager.capacity_bytes:
            return []
        victims = self.manager.make_room(_entry(header, size), now)
        if victims is None:  # the RAM tier's policy declined it
            return []
        evicted = [self._items.pop(v.key) for v in victims]
        self.counters["evictions"] += len(evicted)
        self.manager.insert(_entry(header, size), now)
        self._items[header.key] = (header, payload)
        return evicted

    def discard(self, key: str) -> None:
        if self._items.pop(key, None) is not None:
            self.manager.remove(key)

    def record_hit(self, key: str, now: float, session: str | None = None) -> None:
        if key in self._items:
            self.manager.record_hit(key, now)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._items), "bytes": self.manager.used_bytes,
                "capacity_bytes": self.manager.capacity_bytes, **self.counters,
                "compression_ratio": 1.0}


def _read_only_throughout(array: np.ndarray) -> bool:
    base: Any = array
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return base is None or isinstance(base, bytes)


def _payload_bytes(payload: Any) -> int:
    return payload.nbytes if isinstance(payload, np.ndarray) else len(payload)


def _entry(header: Header, size: int) -> Entry:
    return Entry(key=header.key, tokens=header.tokens, size=size, parent=header.parent,
                 ancestors=header.ancestors, is_tail=header.is_tail, anchor=header.anchor,
                 priority=header.priority, inserted_at=header.inserted_at)
