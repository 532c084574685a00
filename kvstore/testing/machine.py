"""A model-based state machine for any ``CheckpointStore`` configuration.

The store runs side by side with a small reference model (what was written,
what is pinned). After every step: longest-prefix answers agree with the
model among the entries still stored, loaded bytes equal written bytes (dtype
and shape too), the capacity holds, pinned prefixes stay, and the index
agrees with the eviction manager. Steps: put (aligned or tail), lookup, load,
load_longest, pin, unpin, reopen, and a simulated crash (unflushed statistics
lost, a half-written temp file left behind) followed by a reopen.

Tiers and layouts: with ``ram_bytes`` the RAM tier is checked too; with
``cold_capacity_bytes`` a cold tier is made beside the store; ``tiers`` (a
zero-argument callable returning the tiers to add, called at every open) adds
tiers below; every tier's capacity is checked, and a checkpoint may only
disappear from the holding tiers when the last one evicts or declines it. With ``layout="chained"``
puts write a prompt's blocks in order, ``load_longest`` must return every
block's bytes in order, and no prefix with a missing block may ever match.

Run it against your configuration with one call::

    from kvstore.testing import check_store
    check_store(policy="lru", block_tokens=8, capacity_bytes=(1 << 20) + (256 << 10))

or subclass :class:`StoreStateMachine`, set ``store_kwargs``, and expose
``MyMachine.TestCase`` to pytest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, ClassVar

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from ..errors import PinQuotaError
from ..keys import Namespace, PrefixKeys
from ..store import CheckpointStore
from .strategies import payloads

__all__ = ["StoreStateMachine", "check_store"]

_DEFAULTS: dict[str, Any] = {
    "capacity_bytes": (1 << 20) + (256 << 10),  # a 256 KiB payload budget: eviction all the time
    "index_bytes": 1 << 20,
    "block_tokens": 4,
    "namespace": "conformance",
    "policy": "prefix-chain",
}


def _prompts(block: int) -> st.SearchStrategy:
    # paths in a small tree of shared prefixes, so that matches are common
    return st.lists(st.integers(0, 3), min_size=1, max_size=6).map(
        lambda path: [t for i, c in enumerate(path) for t in [c, i, c * 7, 1] * max(1, block // 4)])


class StoreStateMachine(RuleBasedStateMachine):
    """Drives a store (``store_kwargs`` over the defaults) against a reference model."""

    store_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.config = {**_DEFAULTS, **self.store_kwargs}
        self.block = self.config["block_tokens"]
        self.dir = tempfile.mkdtemp(prefix="kvstore-conformance-")
        self.path = os.path.join(self.dir, "store")
        self.chained = self.config.get("layout") == "chained"
        if "cold_capacity_bytes" in self.config:
            self.config["cold_path"] = os.path.join(self.dir, "cold")
        self.store = CheckpointStore(self.path, **self._open_kwargs())
        self.written: dict[str, tuple[list[int], Any]] = {}
        self.pinned: set[str] = set()
        self.lost_allowance = self._cold_departures()
        self.persistent = set()

    def _open_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.config)
        if not isinstance(kwargs["policy"], str):  # a policy instance holds state: make a fresh one
            kwargs["policy"] = type(kwargs["policy"])()
        if "tiers" in kwargs:  # a factory: the store closes the tiers it was given
            kwargs["tiers"] = kwargs["tiers"]()
        return kwargs

    def _reopen_kwargs(self) -> dict[str, Any]:
        wanted = ("policy", "ram_bytes", "ram_policy", "cold_path", "cold_policy", "compression_level", "tiers")
        return {k: v for k, v in self._open_kwargs().items() if k in wanted}

    def _lower(self) -> list[Any]:
        """The holding tiers below the disk tier (cold, added tiers)."""
        return self.store._stack.holding[1:]

    def _cold_departures(self) -> int:
        """Checkpoints the last tier let go: its evictions and declined demotions."""
        if not self._lower():
            return 0
        stats = self._lower()[-1].stats()
        return stats["evictions"] + stats.get("declined", 0)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _key(self, tokens: list[int], n: int) -> str:
        return PrefixKeys(Namespace(self.config["namespace"]), tokens, self.block).key(n)

    def _alive(self) -> set[str]:
        alive = self._persistent() | set(self.store._pending.keys())
        if self.store._ram is not None:
            alive |= set(self.store._ram.keys())
        return alive

    def _persistent(self) -> set[str]:
        alive = set(self.store._manager)
        for tier in self._lower():
            alive |= {key for key in self.written if key in tier}
        return alive

    def _matchable(self, tokens: list[int], n: int, alive: set[str]) -> bool:
        """Could a checkpoint of ``tokens[:n]`` match? (chained: all its blocks stored)."""
        if self._key(tokens, n) not in alive:
            return False
        if not self.chained:
            return True
        return all(self._key(tokens, m) in alive for m in range(self.block, n, self.block))

    @staticmethod
    def _same(got: Any, want: Any) -> bool:
        if isinstance(want, np.ndarray):
            return (isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
                    and bool(np.array_equal(got, want)))
        return got == bytes(want)

    @rule(tokens=st.deferred(lambda: _prompts(4)), payload=payloads(60_000), tail=st.booleans())
    def put(self, tokens, payload, tail):
        tokens = tokens * max(1, self.block // 4)
        if not tail:
            tokens = tokens[: len(tokens) // self.block * self.block]
            if not tokens:
                return
        ends = [len(tokens)]
        if self.chained:  # an engine writes a prompt's blocks in order
            ends = [*range(self.block, len(tokens) + 1, self.block)]
            if len(tokens) % self.block:
                ends.append(len(tokens))
        for end in ends:
            key = self._key(tokens, end)
            if self.chained and end > self.block and not self._matchable(tokens, end - 1 - (end - 1) % self.block, self._alive()):
                return  # an earlier block was declined or evicted meanwhile
            if self.store.put(tokens[:end], payload, tail=end % self.block != 0):
                self.written[key] = (tokens[:end], payload)
            else:
                assert key in self._alive() or self.store.stats()["declined"], "put refused for no reason"

    @rule(tokens=st.deferred(lambda: _prompts(4)))
    def lookup_agrees_with_the_model(self, tokens):
        tokens = tokens * max(1, self.block // 4)
        alive = self._alive()
        expected = max((n for n in range(1, len(tokens) + 1) if self._matchable(tokens, n, alive)),
                       default=0)
        match = self.store.lookup(tokens)
        assert (match.tokens if match else 0) == expected

    @rule(tokens=st.deferred(lambda: _prompts(4)))
    def load_longest_returns_the_written_bytes(self, tokens):
        tokens = tokens * max(1, self.block // 4)
        n, payload = self.store.load_longest(tokens)
        if n and self.chained:
            ends = [*range(self.block, n + 1, self.block)] + ([n] if n % self.block else [])
            assert len(payload) == len(ends), "a chained load must return every block"
            for end, block in zip(ends, payload):
                written_tokens, written = self.written[self._key(tokens, end)]
                assert len(written_tokens) == end and self._same(block, written)
        elif n:
            written_tokens, written = self.written[self._key(tokens, n)]
            assert len(written_tokens) == n and self._same(payload, written)

    @precondition(lambda self: self.written)
    @rule(data=st.data())
    def pin(self, data):
        key = data.draw(st.sampled_from(sorted(self.written)))
        if key in self.store._manager:  # pins hold on the disk tier
            try:
                assert self.store.pin(self.written[key][0]).key == key
            except PinQuotaError:
                return
            self.pinned.add(key)

    @precondition(lambda self: self.pinned)
    @rule(data=st.data())
    def unpin(self, data):
        key = data.draw(st.sampled_from(sorted(self.pinned)))
        self.store.unpin(self.written[key][0])
        self.pinned.discard(key)

    @rule()
    def reopen(self):
        self.store.close()
        self.store = CheckpointStore(self.path, **self._reopen_kwargs())

    @rule()
    def crash_and_reopen(self):
        self.store._disk._pending_hits.clear()  # statistics not yet flushed are lost in a crash
        self.store._disk._pending_counters.clear()
        self.store.close()
        with open(os.path.join(self.path, "tmp", "interrupted.tmp"), "wb") as fh:
            fh.write(b"half a checkpoint")
        self.store = CheckpointStore(self.path, **self._reopen_kwargs())
        assert os.listdir(os.path.join(self.path, "tmp")) == []

    @invariant()
    def consistent(self):
        self.store._check()
        stats = self.store.stats()
        assert stats["bytes"] <= self.config["capacity_bytes"]
        assert self._alive() <= set(self.written)
        assert self.pinned <= self._alive(), "a pinned checkpoint was evicted"
        if "ram" in stats["tiers"]:
            assert stats["tiers"]["ram"]["bytes"] <= self.config["ram_bytes"]
        if self._lower():
            for tier in self._lower():
                tier_stats = stats["tiers"][tier.name]
                assert tier_stats["bytes"] <= tier_stats["capacity_bytes"], tier.name
            persistent = self._persistent()
            lost = len((self.persistent - persistent) & set(self.written))
            departures = self._cold_departures()
            assert lost <= departures - self.lost_allowance, (
                f"{lost} checkpoints vanished from disk and cold, but the cold tier let go of "
                f"only {departures - self.lost_allowance}")
            self.persistent, self.lost_allowance = persistent, departures


def check_store(*, max_examples: int | None = None, stateful_step_count: int = 30, **store_kwargs: Any) -> None:
    """Run the state machine against ``CheckpointStore(**store_kwargs)`` (over
    small defaults that force eviction); raises with a shrunk failing sequence."""

    class Machine(StoreStateMachine):
        pass

    Machine.store_kwargs = store_kwargs
    overrides = {"max_examples": max_examples} if max_examples else {}
    run_state_machine_as_test(Machine, settings=settings(
        deadline=None, suppress_health_check=list(HealthCheck), database=None,
        stateful_step_count=stateful_step_count, **overrides))
