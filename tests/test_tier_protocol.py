"""The tier protocol: every built-in tier and a user's own tier pass
``kvstore.testing.check_tier``, and a user's tier joins a real store's stack."""

from collections import OrderedDict

import numpy as np
import pytest

from kvstore import CheckpointStore
from kvstore.testing import TierContractError, check_store, check_tier
from kvstore.tiers import DiskTier, MemoryTier, Tier, WriteBehind
from policies import get

from .helpers import tokens_for

MiB = 1 << 20
B = 4


class DictTier:
    """A user's tier in a few lines: a bounded LRU dict that owns what it holds
    and hands what it evicts to the tier below."""

    caches = False

    def __init__(self, capacity_bytes, backing=None, name="dict"):
        self.name, self.below, self.capacity_bytes = name, None, capacity_bytes
        self.items = OrderedDict() if backing is None else backing  # key -> (header, bytes)
        self.counts = {"hits": 0, "misses": 0, "evictions": 0}

    def _bytes(self):
        return sum(len(payload) for _, payload in self.items.values())

    def __contains__(self, key):
        return key in self.items

    def longest_match(self, prefix):
        best = None
        for n in [0, *prefix.aligned_lengths]:
            if n and prefix.key(n) in self.items:
                best = (n, prefix.key(n))
            for key, tokens in self.tails_at(prefix.key(n)).items():  # tails hang from their anchor
                if n < tokens <= len(prefix) and prefix.key(tokens) == key and (best is None or tokens > best[0]):
                    best = (tokens, key)
        return best

    def tails_at(self, anchor):
        return {k: h.tokens for k, (h, _) in self.items.items() if h.is_tail and h.anchor == anchor}

    def read(self, key):
        item = self.items.get(key)
        if item is None:
            return None
        header, payload = item
        if header.dtype is None:
            return header, payload
        return header, np.frombuffer(payload, dtype=header.dtype).reshape(header.shape)

    def write(self, header, payload, *, now):
        if header.key in self.items:
            return False
        data = payload.tobytes() if isinstance(payload, np.ndarray) else bytes(payload)
        if len(data) > self.capacity_bytes:
            return False
        while self._bytes() + len(data) > self.capacity_bytes:
            key, (old_header, old_payload) = self.items.popitem(last=False)
            self.counts["evictions"] += 1
            if self.below is not None:
                self.below.write(old_header, old_payload, now=now)
        self.items[header.key] = (header, data)
        return True

    def remove(self, key):
        self.items.pop(key, None)

    def record_hit(self, key, now, session=None):
        if key in self.items:
            self.items.move_to_end(key)

    def count_lookup(self, hit):
        self.counts["hits" if hit else "misses"] += 1

    def refresh(self):
        pass

    def stats(self):
        return {"entries": len(self.items), "bytes": self._bytes(), "capacity_bytes": self.capacity_bytes,
                **self.counts}

    def flush(self):
        pass

    def close(self):
        pass


class ForgetfulTier(DictTier):
    """Broken: evicts without offering to the tier below."""

    def write(self, header, payload, *, now):
        below, self.below = self.below, None
        try:
            return super().write(header, payload, now=now)
        finally:
            self.below = below


def test_every_built_in_tier_and_a_users_tier_pass_check_tier(tmp_path):
    counter = iter(range(100))

    def fresh_dir():
        return str(tmp_path / f"t{next(counter)}")

    factories = {
        "ram": lambda: MemoryTier(2 * MiB, get("lru"), block_tokens=B),
        "memory holding": lambda: MemoryTier(2 * MiB, get("lru"), block_tokens=B, caches=False),
        "disk": lambda: DiskTier(fresh_dir(), 4 * MiB, namespace="check-tier", block_tokens=B, policy="lru"),
        "disk, prefix-chain": lambda: DiskTier(fresh_dir(), 4 * MiB, namespace="check-tier", block_tokens=B),
        "cold (zstd)": lambda: DiskTier(fresh_dir(), 4 * MiB, namespace="check-tier", block_tokens=B,
                                        compression_level=1, name="cold"),
        "write-behind": lambda: WriteBehind(MemoryTier(2 * MiB, get("lru"), block_tokens=B, caches=False),
                                            max_pending=4, block_tokens=B, clock=lambda: 0.0),
        "user dict": lambda: DictTier(2 * MiB),
    }
    for name, factory in factories.items():
        check_tier(factory)  # raises TierContractError naming the broken step


def test_check_tier_catches_a_tier_that_loses_what_it_evicts():
    with pytest.raises(TierContractError, match="without offering it to the tier below"):
        check_tier(lambda: ForgetfulTier(1 * MiB))


def test_a_users_tier_joins_the_stack_below_disk(tmp_path):
    below = DictTier(64 * MiB)
    assert isinstance(below, Tier)
    tokens = [tokens_for(i, 2 * B) for i in range(40)]
    with CheckpointStore(tmp_path / "s", capacity_bytes=MiB + 512 * 1024, index_bytes=MiB, block_tokens=B,
                         namespace="t", policy="lru", tiers=[below]) as store:
        for prompt in tokens:
            store.put(prompt, bytes([len(prompt)]) * 60_000)
        assert len(below.items) > 20  # evicted from disk, demoted into the user's tier
        first = store.lookup(tokens[0])
        assert first.tier == "dict"
        assert store.load(first) == bytes([2 * B]) * 60_000
        assert store.lookup(tokens[0]).tier == "disk"  # promoted back to disk, gone from below
        assert store.stats()["tiers"]["dict"]["entries"] == len(below.items)
        store._check()
    with pytest.raises(TypeError, match="tiers"):
        CheckpointStore(tmp_path / "s", tiers=["not a tier"])


def test_the_store_state_machine_runs_with_a_users_tier():
    backing = OrderedDict()  # the tier's contents outlive a reopen, as a real shared tier's would
    check_store(tiers=lambda: [DictTier(512 * 1024, backing)], max_examples=25)
