"""``check_tier``: the conformance check a tier author runs.

A tier joins a store's stack as one object (``CheckpointStore(..., tiers=[...])``);
this checks that it keeps the :class:`~kvstore.tiers.Tier` protocol: what is
written is contained, matched as the longest prefix (tails included) and read
back byte for byte (numpy dtype and shape too); a second write of a key is
refused; a removed key is gone; lookups of what was never written miss; it
never holds more than it says it can; what it evicts is offered to the tier
``below`` when it is a holding tier; and ``close`` may be called twice. A
caching tier (``caches = True``: RAM, queued writes) may forget anything at
any time, so for it only what it does serve is checked.

>>> from kvstore.tiers import MemoryTier
>>> from policies import get
>>> check_tier(lambda: MemoryTier(1 << 20, get("lru"), block_tokens=4))
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from ..fileformat import Header, payload_descriptor
from ..keys import Namespace, PrefixKeys
from ..tiers.base import Tier

__all__ = ["check_tier", "TierContractError"]

_REQUIRED_STATS = ("entries", "bytes", "capacity_bytes", "hits", "misses", "evictions")


class TierContractError(AssertionError):
    """A tier broke the protocol; the message says which step."""


class _Recorder:
    """A holding tier below the one under test: records what it is offered."""

    name, caches, below = "recorder", False, None

    def __init__(self) -> None:
        self.offered: dict[str, Any] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.offered

    def longest_match(self, prefix: PrefixKeys) -> None:
        return None

    def tails_at(self, anchor: str) -> dict[str, int]:
        return {}

    def read(self, key: str) -> None:
        return None

    def write(self, header: Header, payload: Any, *, now: float) -> bool:
        self.offered[header.key] = payload
        return True

    def remove(self, key: str) -> None:
        self.offered.pop(key, None)

    def record_hit(self, key: str, now: float, session: str | None = None) -> None:
        pass

    def count_lookup(self, hit: bool) -> None:
        pass

    def refresh(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.offered), "bytes": 0, "capacity_bytes": 0, "hits": 0, "misses": 0,
                "evictions": 0}

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _header(ns: Namespace, prefix: PrefixKeys, n: int, payload: Any, now: float) -> Header:
    view, dtype, shape = payload_descriptor(payload)
    block = prefix.block_tokens
    tail = n % block != 0
    return Header(namespace_hash=ns.digest8, key=prefix.key(n), tokens=n, payload_len=view.nbytes, checksum=0,
                  parent=prefix.parent_key(n), anchor=prefix.key(prefix.anchor(n)) if tail else None,
                  ancestors=prefix.ancestor_keys(n), is_tail=tail, inserted_at=now, dtype=dtype, shape=shape)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, np.ndarray):
        return (isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
                and bool(np.array_equal(got, want)))
    return bytes(got) == bytes(want)


def check_tier(factory: Callable[[], Tier], *, namespace: str = "check-tier", block_tokens: int = 4,
               seed: int = 0, steps: int = 300) -> None:
    """Check the tier ``factory()`` makes (fresh and empty each call, for
    ``namespace`` and ``block_tokens``). Raises :class:`TierContractError`
    naming the broken step. Runtime: a few hundred writes of up to 64 KiB."""
    def expect(condition: bool, what: str) -> None:
        if not condition:
            raise TierContractError(f"{type(tier).__name__}: {what}")

    ns = Namespace(namespace)
    tier = factory()
    try:
        expect(isinstance(tier, Tier), "does not have every member of kvstore.tiers.Tier")
        expect(isinstance(tier.name, str) and tier.name, "name must be a non-empty str")
        expect(isinstance(tier.caches, bool), "caches must be a bool")
        recorder = _Recorder()
        if not tier.caches:
            tier.below = recorder
        rng = random.Random(seed)
        tokens = [rng.randrange(2**32) for _ in range(12 * block_tokens)]
        prefix = PrefixKeys(ns, tokens, block_tokens)
        expect(tier.longest_match(prefix) is None, "a fresh tier matched something")
        expect(tier.read(prefix.key(block_tokens)) is None, "a fresh tier read something")
        for name in _REQUIRED_STATS:
            expect(name in tier.stats(), f"stats() lacks {name!r}")

        # round trip: bytes and an array, aligned checkpoints and a tail
        payloads = {block_tokens: b"first block", 2 * block_tokens: np.arange(12, dtype="<f2").reshape(3, 4),
                    2 * block_tokens + 1: b"a tail"}
        strict = not tier.caches
        for n, payload in payloads.items():
            header = _header(ns, prefix, n, payload, now=float(n))
            expect(tier.write(header, payload, now=float(n)) is True, f"refused the first write of {n} tokens")
            expect(header.key in tier or not strict, f"does not contain what it just wrote ({n} tokens)")
            if header.key in tier:
                expect(tier.write(header, payload, now=float(n)) is False, "accepted a second write of a key")
        for n, payload in payloads.items():
            found = tier.read(prefix.key(n))
            expect(found is not None or not strict, f"cannot read back {n} tokens")
            if found is not None:
                expect(_same(found[1], payload), f"read back other bytes for {n} tokens")
                expect(found[0].key == prefix.key(n) and found[0].tokens == n, "read back another header")
        tier.flush()
        if not strict:  # a cache: what it still holds must be right; nothing more is promised
            for n in payloads:
                if prefix.key(n) in tier:
                    expect(_same(tier.read(prefix.key(n))[1], payloads[n]), "a cache served other bytes")
            return
        longer = PrefixKeys(ns, tokens[: 2 * block_tokens + 1] + [7, 7], block_tokens)
        expect(tier.longest_match(longer) == (2 * block_tokens + 1, prefix.key(2 * block_tokens + 1)),
               "longest_match missed the tail")
        diverged = PrefixKeys(ns, tokens[: 2 * block_tokens] + [t ^ 1 for t in tokens[2 * block_tokens:]],
                              block_tokens)
        expect(tier.longest_match(diverged) == (2 * block_tokens, prefix.key(2 * block_tokens)),
               "longest_match did not return the longest aligned prefix")
        expect(tier.tails_at(prefix.key(2 * block_tokens)) == {prefix.key(2 * block_tokens + 1):
                                                               2 * block_tokens + 1}, "tails_at is wrong")
        other = PrefixKeys(ns, [t ^ 1 for t in tokens], block_tokens)
        expect(tier.longest_match(other) is None, "matched a prompt it never saw")
        tier.record_hit(prefix.key(block_tokens), 10.0)
        tier.count_lookup(True)
        tier.count_lookup(False)
        tier.refresh()
        tier.remove(prefix.key(block_tokens))
        expect(prefix.key(block_tokens) not in tier and tier.read(prefix.key(block_tokens)) is None,
               "still holds a removed key")
        tier.remove(prefix.key(block_tokens))  # removing what is gone is no error

        # pressure: many writes; never over capacity; what leaves was evicted (offered below)
        written: dict[str, Any] = {}
        for step in range(steps):
            session = [rng.randrange(2**32) for _ in range(rng.randrange(1, 6) * block_tokens)]
            p = PrefixKeys(ns, session, block_tokens)
            n = len(session)
            payload = rng.randbytes(rng.randrange(1, 64 << 10))
            if tier.write(_header(ns, p, n, payload, now=100.0 + step), payload, now=100.0 + step):
                written[p.key(n)] = payload
            stats = tier.stats()
            expect(stats["bytes"] <= stats["capacity_bytes"] or stats["capacity_bytes"] <= 0,
                   f"holds {stats['bytes']} bytes of a capacity of {stats['capacity_bytes']}")
        for key, payload in written.items():
            if key in tier:
                found = tier.read(key)
                expect(found is not None and _same(found[1], payload), "served other bytes under pressure")
            elif not tier.caches:
                expect(key in recorder.offered, "let a checkpoint go without offering it to the tier below")
        tier.flush()
    finally:
        tier.close()
    tier.close()  # idempotent
