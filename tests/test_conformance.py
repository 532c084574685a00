"""The conformance kit (kvstore.testing) run on everything we ship, and shown
to catch deliberately broken policies with a minimal counterexample."""

import math

import pytest

import policies
from kvstore.testing import PolicyContractError, check_policy, check_store
from policies import LRUPolicy, Policy


@pytest.mark.parametrize("name", sorted(policies.registry.BUILTIN))
def test_every_builtin_policy_keeps_the_contract(name):
    cls = policies.registry.BUILTIN[name]
    kwargs = {"next_use": _periodic_future} if policies.is_offline(name) else {}
    check_policy(cls, **kwargs)


def _periodic_future(key, now):
    """An offline policy's future, as a trace gives it: ``key`` is used every
    1 to 13 seconds (by its name), and its next use depends on ``now`` only
    through which of those uses lie after it."""
    period = sum(map(ord, key)) % 13 + 1
    return (math.floor(now / period) + 1) * period


@pytest.mark.parametrize("config", [
    {"policy": "prefix-chain"},
    {"policy": "lru", "block_tokens": 8},
    {"policy": "ds4-density"},
    {"policy": "gdsf", "capacity_bytes": (1 << 20) + (128 << 10)},
    {"policy": "hicache"},
    {"policy": "lru", "ram_bytes": 150_000, "capacity_bytes": (1 << 20) + (96 << 10)},
    {"policy": "prefix-chain", "ram_bytes": 60_000, "capacity_bytes": (1 << 20) + (96 << 10),
     "cold_capacity_bytes": (1 << 20) + (160 << 10)},
    {"policy": "prefix-chain", "layout": "chained", "capacity_bytes": (1 << 20) + (128 << 10)},
    {"policy": "lru", "layout": "chained", "ram_bytes": 60_000, "capacity_bytes": (1 << 20) + (96 << 10),
     "cold_capacity_bytes": (1 << 20) + (128 << 10), "compression_level": 1},
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_store_configurations_pass_the_state_machine(config):
    check_store(**config)


class EvictsPinned(LRUPolicy):
    """Puts a pinned entry straight back among its eviction candidates."""

    def on_pin(self, key):
        self.on_eligible(key, True)


class NamesAStranger(LRUPolicy):
    def victim(self, now):
        return "never-inserted"


class ParentFirst(Policy):
    """Evicts the shortest prefix first, whatever the layout."""

    def __init__(self):
        self.keys = set()

    def on_insert(self, key, now):
        self.keys.add(key)

    def on_remove(self, key):
        self.keys.discard(key)

    def victim(self, now):
        return min(self.keys, key=lambda k: self.view.entry(k).tokens, default=None)


class NeverFrees(LRUPolicy):
    def victim(self, now):
        return None


class MiscountsItsEntries(LRUPolicy):
    """Valid victims, but its own bookkeeping drifts on the first removal: its ``_check`` says so."""

    def __init__(self):
        super().__init__()
        self.tracked = 0

    def on_insert(self, key, now):
        super().on_insert(key, now)
        self.tracked += 1

    def _check(self):
        super()._check()
        assert self.tracked == len(self.view), f"tracks {self.tracked}, holds {len(self.view)}"


class RaisesOnLargeSizes(LRUPolicy):
    """Fine at the sizes of a quick test, broken past 3,000 bytes."""

    def on_insert(self, key, now):
        if self.view.entry(key).size > 3_000:
            raise OverflowError("size too large for my table")
        super().on_insert(key, now)


class LosesTrackPastAThousandKeys(LRUPolicy):
    """A fixed table of 1,000 slots: past that it names a key it already let go."""

    def __init__(self):
        super().__init__()
        self.first = None
        self.inserted = 0

    def on_insert(self, key, now):
        super().on_insert(key, now)
        self.first = self.first or key
        self.inserted += 1

    def victim(self, now):
        return self.first if self.inserted > 1_000 else super().victim(now)


@pytest.mark.parametrize("broken, words", [
    (RaisesOnLargeSizes, "OverflowError"),
    (LosesTrackPastAThousandKeys, "with 3000 keys: .* not stored"),
])
def test_the_kit_catches_policies_that_break_only_at_scale(broken, words):
    with pytest.raises(PolicyContractError, match=words):
        check_policy(broken, layouts=("snapshot",), max_examples=60)


@pytest.mark.parametrize("broken, layouts, words", [
    (EvictsPinned, ("snapshot",), "not eligible"),
    (NamesAStranger, ("snapshot",), "not stored"),
    (ParentFirst, ("chained",), "not eligible"),
    (NeverFrees, ("snapshot",), "named no victim"),
    (MiscountsItsEntries, ("snapshot",), "invariant broke"),
])
def test_the_kit_catches_broken_policies_with_a_short_replay(broken, layouts, words):
    with pytest.raises(PolicyContractError) as info:
        check_policy(broken, layouts=layouts)
    message = str(info.value)
    assert words in message and "replay:" in message
    replay = message.split("replay:\n", 1)[1].splitlines()
    calls = [line for line in replay if line.strip().startswith(("m.", "victims = m."))]
    assert len(calls) <= 12, message  # shrunk to a handful of calls to the manager
    assert replay[0].strip().startswith("policy = ")


def test_the_pytest_fixture_is_installed(policy_contract, store_conformance):
    policy_contract(LRUPolicy, count_prefix_hits=False)
    assert callable(store_conformance)
