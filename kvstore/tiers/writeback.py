"""Write-behind: ``put(..., durable=False)`` returns at once, a background
thread writes the checkpoint into the holding tier below.

The queue is bounded: when it already holds ``max_pending`` writes, the
oldest waiting one is dropped (counted in ``dropped_writes``), so the engine
never waits for the disk. Until a checkpoint is written it is served from
memory (``Match.tier == "pending"``). A crash loses only what is queued.

>>> from kvstore.tiers import MemoryTier
>>> from kvstore.fileformat import Header
>>> from policies import get
>>> target = MemoryTier(1 << 20, get("lru"), block_tokens=4, name="disk", caches=False)
>>> queue = WriteBehind(target, max_pending=4, block_tokens=4, clock=lambda: 0.0)
>>> head = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=4, payload_len=5, checksum=0)
>>> queue.write(head, b"hello", now=0.0)
True
>>> queue.flush(); head.key in target, head.key in queue
(True, False)
>>> queue.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from policies.registry import resolve

from ..fileformat import Header
from ..keys import PrefixKeys
from ..writer import BackgroundWriter
from .base import Tier
from .memory import MemoryTier, frozen_copy

__all__ = ["WriteBehind"]

log = logging.getLogger(__name__)

_UNBOUNDED = 1 << 62


class WriteBehind:
    """Queued writes into ``target``: a caching :class:`~kvstore.tiers.Tier` named ``"pending"``.

    :param target: the holding tier the writes go to.
    :param max_pending: most writes waiting; past it the oldest waiting one is dropped.
    :param block_tokens: the store's block size.
    :param clock: the store's clock (the time a queued write is stored at).
    :param after_write: called with ``(key, session)`` once a write landed in ``target``.
    """

    caches = True
    below = None

    def __init__(self, target: Tier, *, max_pending: int, block_tokens: int, clock: Callable[[], float],
                 after_write: Callable[[str, str | None], None] | None = None, name: str = "pending") -> None:
        self.name = name
        self.target = target
        self.max_pending = max_pending
        self._clock = clock
        self._after_write = after_write
        self._held = MemoryTier(_UNBOUNDED, resolve("fifo"), block_tokens=block_tokens, name=name)
        self._sessions: dict[str, str | None] = {}
        self._lock = threading.RLock()
        self._writer: BackgroundWriter[str] | None = None
        self.dropped_writes = 0
        self.write_errors = 0

    # ------------------------------------------------------------- the tier
    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._held

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def longest_match(self, prefix: PrefixKeys) -> tuple[int, str] | None:
        with self._lock:
            return self._held.longest_match(prefix)

    def tails_at(self, anchor: str) -> dict[str, int]:
        with self._lock:
            return self._held.tails_at(anchor)

    def read(self, key: str) -> tuple[Header, Any] | None:
        with self._lock:
            return self._held.read(key)

    def write(self, header: Header, payload: Any, *, now: float, session: str | None = None) -> bool:
        """Queue the write of a read-only copy of ``payload``; never waits for the disk.
        Runtime complexity: O(payload bytes) for the copy (none for a read-only array)."""
        with self._lock:
            if header.key in self._held:
                return False
            self._held.add(header, frozen_copy(payload), now=now)
            self._sessions[header.key] = session
            if self._writer is None:
                self._writer = BackgroundWriter(self._write_one, max_pending=self.max_pending,
                                                on_error=self._failed, name=f"kvstore-writer {self.name}")
            dropped = self._writer.submit(header.key)
            if dropped is not None:
                self._forget(dropped)
                self.dropped_writes += 1
                log.info("write queue full (max_pending_writes=%d): dropped the oldest pending "
                         "checkpoint %s", self.max_pending, dropped)
        return True

    def remove(self, key: str) -> None:
        with self._lock:
            self._forget(key)

    def record_hit(self, key: str, now: float, session: str | None = None) -> None:
        """Queued checkpoints keep their order: a hit changes nothing."""

    def count_lookup(self, hit: bool) -> None:
        """Served from the queue: counted by the tier it is written to."""

    def refresh(self) -> None:
        """Nothing to refresh: the queue lives in this process."""

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": len(self._held), "bytes": self._held.used_bytes,
                    "capacity_bytes": self.max_pending, "hits": 0, "misses": 0, "evictions": 0,
                    "dropped_writes": self.dropped_writes, "write_errors": self.write_errors}

    def flush(self) -> None:
        """Wait until every queued write is written."""
        if self._writer is not None:
            self._writer.drain()

    def close(self) -> None:
        """Write what is queued, then stop the thread. Idempotent."""
        if self._writer is not None:
            self._writer.close()

    def keys(self) -> list[str]:
        """Keys queued, oldest first."""
        with self._lock:
            return self._held.keys()

    # ------------------------------------------------------------ internals
    def _forget(self, key: str) -> None:
        self._held.discard(key)
        self._sessions.pop(key, None)

    def _write_one(self, key: str) -> None:
        with self._lock:
            item = self._held.read(key)
            session = self._sessions.get(key)
        if item is None:  # dropped meanwhile
            return
        header, payload = item
        try:
            self.target.write(header, payload, now=self._clock())
            if self._after_write is not None:
                self._after_write(key, session)
        finally:
            with self._lock:
                self._forget(key)

    def _failed(self, key: str, exc: BaseException) -> None:
        with self._lock:
            self.write_errors += 1
