"""The stack of tiers behind a store: longest match over all of them, promote
on read, demote on evict, count per tier.

Fastest first: an optional RAM tier and the queue of background writes
(caching tiers: copies), then the holding tiers — disk, an optional cold
tier, and any tiers the caller added — each of which hands what it evicts to
the next (``below``). A read found in a lower holding tier is promoted into
the first one and removed below; whatever is read from a holding tier is
also copied into RAM.

Last, an optional shared tier (:class:`~kvstore.tiers.SharedTier`), asked only
when it could beat every local tier: a lookup there is a network round trip.
A read from it is copied to the first holding tier (promotion) and stays
shared for the other engines; durable writes are published to it in the
background.

Locks: the stack's lock orders lookups and promotions; each disk tier has its
own; the RAM tier is guarded by a memory lock always taken last, so a
background write (``put(..., durable=False)``) never waits for a disk commit.

>>> from kvstore.tiers import MemoryTier
>>> from kvstore.layout import layout_for
>>> from policies import get
>>> disk = MemoryTier(1 << 20, get("lru"), block_tokens=4, name="disk", caches=False)
>>> stack = TierStack([disk], layout_for("snapshot"), clock=lambda: 0.0)
>>> [tier.name for tier in stack.tiers]
['disk']
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .errors import KVStoreError
from .fileformat import Header
from .keys import PrefixKeys
from .layout import Layout
from .tiers.base import Tier
from .tiers.memory import MemoryTier, frozen_copy, is_frozen
from .tiers.writeback import WriteBehind

__all__ = ["TierStack"]

log = logging.getLogger(__name__)


class TierStack:
    """Tiers fastest first, under one layout.

    :param holding: the holding tiers, fastest first (the first is the disk tier).
    :param layout: the store's layout object.
    :param clock: the store's checked clock.
    :param ram: an optional RAM tier (copies of what was written or read).
    :param pending: an optional write-behind queue into ``holding[0]``.
    :param shared: an optional :class:`~kvstore.tiers.SharedTier`, asked last.
    :param count: adds to a persisted counter (``promotions``), or ``None``.
    """

    def __init__(self, holding: Sequence[Tier], layout: Layout, *, clock: Callable[[], float],
                 ram: MemoryTier | None = None, pending: WriteBehind | None = None,
                 shared: Any = None, count: Callable[[str], None] | None = None) -> None:
        if not holding:
            raise ValueError("a store needs at least one holding tier")
        self.holding = list(holding)
        self.layout = layout
        self.ram = ram
        self.pending = pending
        self.shared = shared
        self._clock = clock
        self._count = count
        self.ram_demotions = 0
        self._lock = threading.RLock()
        self._memory = threading.RLock()
        for upper, lower in zip(self.holding, self.holding[1:]):
            upper.below = lower  # what a tier evicts goes one tier down

    @property
    def tiers(self) -> list[Tier]:
        """Every tier, fastest first (the shared tier last)."""
        local = [t for t in (self.ram, self.pending) if t is not None] + self.holding
        return local + ([self.shared] if self.shared is not None else [])

    def _active(self) -> list[Tier]:
        """The tiers of this machine worth probing now (an empty queue is skipped)."""
        return [t for t in self.tiers if (t is not self.pending or len(self.pending)) and t is not self.shared]

    # -------------------------------------------------------------- lookups
    def refresh(self) -> None:
        """Let every tier see what other processes changed."""
        for tier in self.holding:
            tier.refresh()

    def present(self, key: str) -> bool:
        """Whether some tier holds ``key``."""
        with self._memory:
            return any(key in tier for tier in self._active())

    def tier_of(self, key: str) -> Tier | None:
        """The fastest tier holding ``key``."""
        with self._memory:
            return next((tier for tier in self._active() if key in tier), None)

    def lookup(self, prefix: PrefixKeys, now: float, session: str | None
               ) -> tuple[int, str, tuple[str, ...], Tier] | None:
        """The longest loadable prefix over all tiers (the fastest tier on a tie),
        with its hit recorded in every tier holding it and a miss counted in
        every faster one. The shared tier is asked only when the local tiers
        match less than the whole prompt (one round trip, bounded by its timeout).
        Runtime complexity: O(blocks * tiers) probes."""
        with self._lock:
            self.refresh()
            with self._memory:
                tiers = self._active()
                found = self.layout.longest_match(tiers, prefix)
            remote = self._shared_match(prefix, found)
            with self._memory:
                if remote is not None:
                    found, tiers = (remote[0], remote[1], ()), [*tiers, self.shared]
                served = None if found is None else next(t for t in tiers if t is self.shared or found[1] in t)
                for tier in tiers:
                    tier.count_lookup(tier is served)
                    if tier is served:
                        break
                if found is None:
                    return None
                if served is self.shared:
                    served.record_hit(found[1], now, session)
                    return (*found, served)
                for tier in tiers:
                    if found[1] in tier:
                        tier.record_hit(found[1], now, session)
            return (*found, served)

    def _shared_match(self, prefix: PrefixKeys, local: tuple[int, str, tuple[str, ...]] | None
                      ) -> tuple[int, str] | None:
        """The shared tier's match when it is longer than ``local``; a shared miss is counted."""
        shared = self.shared
        if shared is None or self.layout.chained or (local is not None and local[0] >= len(prefix)):
            return None
        remote = shared.longest_match(prefix)
        if remote is not None and (local is None or remote[0] > local[0]):
            return remote
        shared.count_lookup(False)
        return None

    # ---------------------------------------------------------------- reads
    def read(self, key: str) -> Any:
        """The payload of ``key`` from the fastest tier that has it, verified;
        ``None`` if no tier can serve it. Promotes and copies into RAM."""
        with self._memory:
            for tier in (self.ram, self.pending):
                if tier is not None and key in tier:
                    return tier.read(key)[1]
        for depth, tier in enumerate(self.holding):
            found = tier.read(key)
            if found is None:
                continue
            if depth:
                self._promote(tier, *found)
            self.hold(*found, promotion=True)
            return found[1]
        if self.shared is not None:
            found = self.shared.read(key)
            if found is not None:
                self._promote(self.shared, *found, keep=True)
                self.hold(*found, promotion=True)
                return found[1]
        return None

    def _promote(self, source: Tier, header: Header, payload: Any, *, keep: bool = False) -> None:
        """Move a checkpoint found in a lower holding tier into the first one
        (``keep``: copy it, the shared tier keeps its copy for the other engines)."""
        target = self.holding[0]
        try:
            stored = target.write(header, payload, now=self._clock())
        except (OSError, KVStoreError) as exc:
            log.warning("could not promote %s from the %s tier: %s", header.key, source.name, exc)
            return
        with self._lock:
            if stored and self._count is not None:
                self._count("promotions")
            if header.key in target and not keep:
                source.remove(header.key)

    def hold(self, header: Header, payload: Any, *, promotion: bool) -> None:
        """Keep a read-only copy in RAM, if there is a RAM tier."""
        ram = self.ram
        if ram is None:
            return
        with self._memory:
            if header.key in ram:
                return
            evicted = ram.add(header, frozen_copy(payload), now=self._clock())
            if promotion and header.key in ram:
                ram.counters["promotions"] += 1
            self.ram_demotions += sum(1 for old, _ in evicted if self._held_below(old.key))

    def _held_below(self, key: str) -> bool:
        return any(key in tier for tier in self._active() if tier is not self.ram)

    # --------------------------------------------------------------- writes
    def queue(self, header: Header, payload: Any, *, session: str | None) -> bool:
        """``put(..., durable=False)``: queue the write, serve it from memory
        meanwhile. Never waits for a disk commit."""
        with self._memory:
            if self.present(header.key):
                return False
            frozen = frozen_copy(payload)
            self.pending.write(header, frozen, now=self._clock(), session=session)
        self.hold(header, frozen, promotion=False)
        return True

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict[str, dict[str, Any]]:
        """Each tier's own statistics, fastest first, by name; the RAM tier's
        ``demotions`` count what it let go that a slower tier still holds."""
        tiers: dict[str, dict[str, Any]] = {}
        if self.ram is not None:
            tiers[self.ram.name] = {**self.ram.stats(), "demotions": self.ram_demotions}
        if self.pending is not None:
            pending = self.pending.stats()
            tiers[self.pending.name] = {k: pending[k] for k in ("entries", "bytes", "dropped_writes",
                                                                 "write_errors")}
        for tier in self.holding:
            tiers[tier.name] = tier.stats()
        if self.shared is not None:
            tiers[self.shared.name] = self.shared.stats()
        return tiers

    def publish(self, header: Header, payload: Any) -> None:
        """Hand a durable write to the shared tier's background publisher; never
        waits and never copies: a payload the caller may still change is read
        back from the disk tier by the publisher (the file was just written, so
        the page cache serves it). O(1)."""
        if self.shared is None:
            return
        if is_frozen(payload):
            self.shared.publish(header, payload)
        else:
            disk, key = self.holding[0], header.key
            self.shared.publish(header, lambda: disk.read(key))

    # ---------------------------------------------------------------- close
    def flush(self) -> None:
        """Wait for queued writes, then flush every tier."""
        if self.pending is not None:
            self.pending.flush()
        for tier in self.holding:
            tier.flush()
        if self.shared is not None:
            self.shared.flush()

    def close(self) -> None:
        """Write what is queued, then close every tier, fastest first."""
        errors = []
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as exc:  # close the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]
