"""The eviction manager and the policies shipped with the core (lru, ds4-density)."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from kvstore.errors import CapacityError, PinQuotaError, PolicyError
from kvstore.eviction import Entry, EvictionManager, _ReadOnlyEntry
from policies import Ds4DensityPolicy, LRUPolicy

from .helpers import apply_op, least_scored


def chain(n, size=10, prefix="k"):
    """Entries k1..kn, each the parent of the next."""
    keys = [f"{prefix}{i}" for i in range(1, n + 1)]
    return [Entry(k, tokens=4 * (i + 1), size=size, parent=keys[i - 1] if i else None,
                  ancestors=tuple(keys[:i])) for i, k in enumerate(keys)]


def fill(manager, entries, now=0.0):
    for i, e in enumerate(entries):
        if manager.make_room(e, now + i) is not None:
            manager.insert(e, now + i)


def test_lru_evicts_least_recently_used_and_prefix_hits_refresh_ancestors():
    m = EvictionManager(30, LRUPolicy(), block_tokens=4)
    fill(m, chain(3))
    m.record_hit("k2", now=10)  # refreshes k1 through the chain
    assert [v.key for v in m.evict_for(10, now=12)] == ["k3"]
    m._check()


def test_lru_without_prefix_hits_keeps_ancestors_stale():
    m = EvictionManager(30, LRUPolicy(count_prefix_hits=False), block_tokens=4)
    fill(m, chain(3))
    m.record_hit("k2", now=10)
    assert [v.key for v in m.evict_for(10, now=11)] == ["k1"]


def test_ds4_density_evicts_short_prefixes_first():
    # 4096/8192/12288 tokens at 76/130/184 MiB: density grows with length
    m = EvictionManager(400, Ds4DensityPolicy(), block_tokens=4096)
    sizes = {"s": 76, "m": 130, "l": 184}
    for i, (k, size) in enumerate(sizes.items()):
        m.evict_for(size, i)
        m.insert(Entry(k, tokens=4096 * (i + 1), size=size), i)
    assert [v.key for v in m.evict_for(80, 5)] == ["s"]


def test_ds4_hits_raise_the_score_and_decay_with_half_life():
    p = Ds4DensityPolicy(half_life_s=100)
    m = EvictionManager(1000, p, block_tokens=1)
    m.insert(Entry("a", tokens=10, size=100), 0, reserved=0)  # density 0.1
    m.insert(Entry("b", tokens=15, size=100), 0, reserved=0)  # density 0.15
    m.record_hit("a", now=0)
    assert p.score("a", 0) == pytest.approx(0.2)
    assert p.victim(0) == "b"
    assert p.score("a", 100) == pytest.approx(0.15)  # one half-life: 0.5 effective hits
    assert p.victim(1000) == "a"


def test_ds4_ties_go_to_the_older_last_use():
    p = Ds4DensityPolicy()
    m = EvictionManager(1000, p, block_tokens=1)
    m.insert(Entry("new", tokens=10, size=100), 5, reserved=0)
    m.insert(Entry("old", tokens=10, size=100), 1, reserved=0)
    assert p.victim(6) == "old"


def test_chained_layout_evicts_leaves_only():
    m = EvictionManager(30, LRUPolicy(), layout="chained", block_tokens=4)
    fill(m, chain(3))
    m.record_hit("k3", now=10)  # k3 newest, but k1 and k2 have children
    victims = m.evict_for(30, now=11)
    assert [v.key for v in victims] == ["k3", "k2", "k1"]


def test_pins_are_never_victims_and_respect_the_quota():
    m = EvictionManager(40, LRUPolicy(), block_tokens=4, pin_quota_bytes=15)
    fill(m, chain(3))
    m.pin("k1")
    with pytest.raises(PinQuotaError, match="pin_quota_bytes=15"):
        m.pin("k2")
    victims = m.evict_for(30, now=10)
    assert "k1" in m and [v.key for v in victims] == ["k2", "k3"]
    m.release(30)
    with pytest.raises(CapacityError, match="pinned"):
        m.evict_for(31, now=11)
    m.unpin("k1")
    assert [v.key for v in m.evict_for(40, now=12)] == ["k1"]
    m._check()


def test_a_payload_larger_than_capacity_is_refused_without_evicting():
    m = EvictionManager(30, LRUPolicy(), block_tokens=4)
    fill(m, chain(2))
    with pytest.raises(CapacityError, match="capacity_bytes=30"):
        m.evict_for(31, now=5)
    assert len(m) == 2 and m.reserved_bytes == 0


class Raises(LRUPolicy):
    def victim(self, now):
        raise RuntimeError("boom")


class Ghost(LRUPolicy):
    def victim(self, now):
        return "never-inserted"


class Lazy(LRUPolicy):
    def victim(self, now):
        return None


class PinEvictor(LRUPolicy):
    def victim(self, now):
        return next(iter(self.view))


@pytest.mark.parametrize("policy, words", [
    (Raises(), "raised in victim"), (Ghost(), "not stored"),
    (Lazy(), "named no victim"), (PinEvictor(), "not eligible"),
])
def test_broken_policies_get_a_clear_error_and_reserve_nothing(policy, words):
    m = EvictionManager(30, policy, block_tokens=4)
    fill(m, chain(3))
    m.pin("k1")
    with pytest.raises(PolicyError, match=words) as info:
        m.evict_for(20, now=5)
    assert m.reserved_bytes == 0
    assert all(e.key not in m for e in info.value.evicted)


@pytest.mark.parametrize("hook", ["on_insert", "on_eligible", "on_hit", "on_prefix_hit", "on_evict", "on_remove"])
def test_a_policy_raising_in_any_hook_gets_an_error_that_names_the_hook(hook):
    """Inserts, hits and evictions call the policy's hooks directly: whichever
    raises, the caller gets a PolicyError naming the policy and the hook."""
    calls = {"n": 0}

    class Breaks(LRUPolicy):
        name = "breaks"

    def broken(self, *args):
        calls["n"] += 1
        raise RuntimeError("boom")

    setattr(Breaks, hook, broken)
    m = EvictionManager(30, Breaks(), block_tokens=4)
    with pytest.raises(PolicyError, match=rf"policy 'breaks' raised in {hook}\(\): RuntimeError\('boom'\)"):
        entries = chain(3)
        for e in entries:  # k3 under k2 under k1: a hit on k3 passes through both
            m.insert(e, now=0, reserved=0)
        m.record_hit(entries[-1].key, now=1)
        m.evict_for(20, now=2)
    assert calls["n"] == 1


def test_policy_view_is_read_only():
    seen = {}

    class Peek(LRUPolicy):
        def on_insert(self, key, now):
            super().on_insert(key, now)
            seen[key] = self.view.entry(key)

    m = EvictionManager(100, Peek(), block_tokens=4)
    entries = chain(2)
    fill(m, entries)
    with pytest.raises(AttributeError, match="read-only"):
        seen["k2"].size = 0
    assert {name: getattr(seen["k2"], name) for name in _ReadOnlyEntry.FIELDS} == {
        name: getattr(entries[1], name) for name in _ReadOnlyEntry.FIELDS}
    with pytest.raises(AttributeError, match="view of a checkpoint has no 'file_name'; it shows ancestors, anchor"):
        seen["k2"].file_name
    assert m.nearest_stored_ancestor("k2") == "k1"
    assert m.children("k1") == {"k2"}


def test_registry_lists_and_builds_policies():
    names = policies.available()
    assert {"lru", "ds4-density"} <= set(names) and all(names.values())
    assert isinstance(policies.get("ds4-density", half_life_s=60), Ds4DensityPolicy)
    with pytest.raises(ValueError, match="unknown policy 'nope'; available: "):
        policies.get("nope")
    with pytest.raises(TypeError, match="pass LRUPolicy()"):
        policies.resolve(LRUPolicy)
    with pytest.raises(TypeError, match="has no victim"):
        policies.resolve(object())
    with pytest.raises(TypeError, match="no option 'half_lfe_s'; options: half_life_s, count_prefix_hits"):
        policies.get("ds4-density", half_lfe_s=1)


def test_evict_some_evicts_up_to_count_with_the_same_contract_checks():
    m = EvictionManager(100, LRUPolicy(), block_tokens=4)
    fill(m, chain(3))
    assert [e.key for e in m.evict_some(2, now=9)] == ["k1", "k2"]
    assert len(m) == 1 and m.evictions == 2
    assert [e.key for e in m.evict_some(5, now=10)] == ["k3"] and len(m) == 0
    assert m.evict_some(1, now=11) == []
    broken = EvictionManager(100, Ghost(), block_tokens=4)
    fill(broken, chain(2))
    with pytest.raises(PolicyError, match="not stored"):
        broken.evict_some(1, now=5)


def test_a_policy_hears_an_eviction_apart_from_a_deletion():
    class Recording(LRUPolicy):
        def __init__(self):
            super().__init__()
            self.heard = []

        def on_evict(self, key, now):
            self.heard.append(("evict", key))

        def on_remove(self, key):
            super().on_remove(key)
            self.heard.append(("remove", key))

    policy = Recording()
    m = EvictionManager(30, policy, block_tokens=1)
    fill(m, [Entry(k, tokens=1, size=10) for k in ("a", "b", "c")])
    m.remove("b")  # a deletion (the file moved or went bad)
    fill(m, [Entry("d", tokens=1, size=20)], now=10)  # evicts "a" for room
    assert policy.heard == [("remove", "b"), ("evict", "a"), ("remove", "a")]


def test_a_chain_dependent_score_never_goes_stale():
    """HiCache ranks leaves first: when a child leaves, its parent's cached
    score must be recomputed (ScoredPolicy does it; _check compares)."""
    from policies import HiCachePolicy

    policy = HiCachePolicy(write_threshold=1)
    m = EvictionManager(100, policy, block_tokens=1)
    fill(m, chain(3, size=10))
    m.remove("k3")  # k2 is a leaf again
    policy._check()
    assert policy._items["k2"][0][1][0] == 0  # (priority, (has children, last use))


def test_a_policy_sees_only_the_documented_fields_of_a_checkpoint():
    m = EvictionManager(100, LRUPolicy(), block_tokens=1)
    fill(m, [Entry("a", tokens=1, size=10, file="a.kv")])
    view = m.policy.view.entry("a")
    assert (view.key, view.tokens, view.size, view.pinned) == ("a", 1, 10, False)
    with pytest.raises(AttributeError, match="no 'file'"):
        view.file
    with pytest.raises(AttributeError):
        view.size = 5


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "hit", "hit", "hit", "pin", "unpin", "victim", "victim"]),
                          st.integers(0, 11), st.integers(-20, 200), st.integers(1, 40)), min_size=1, max_size=120),
       st.sampled_from([1.0, 30.0, 3600.0]))
def test_ds4_victim_is_the_exact_least_score_whatever_the_order(ops, half_life):
    """The threshold walk names exactly the least (priority, score, last use, key)
    a full scan would, with ties, equal densities, priorities, pins and time
    running back; ``_check`` holds after every step."""
    p = Ds4DensityPolicy(half_life_s=half_life)
    m = EvictionManager(10**9, p, block_tokens=1, pin_quota_bytes=10**9)
    now = 0.0
    for op, k, dt, tokens in ops:
        now += dt / 10  # time may run back a little
        key = f"k{k}"
        if op == "victim":
            assert p.victim(now) == least_scored(m, p, now)
        else:
            apply_op(m, op, key, now, lambda: Entry(key, tokens=tokens, size=4 * tokens + 3 + k % 2,
                                                    priority=k % 5 // 4))
        p._check()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(st.randoms(use_true_random=False), st.sampled_from([5.0, 60.0, 3600.0]))
def test_ds4_victim_matches_a_full_scan_on_long_walks(rnd, half_life):
    """Long random walks over many checkpoints whose densities share a band (so
    a band holds both fresh and long-decayed hits): the victim is still the
    least (priority, score, last use, key) of a full scan."""
    p = Ds4DensityPolicy(half_life_s=half_life)
    m = EvictionManager(10**9, p, block_tokens=1, pin_quota_bytes=10**9)
    now = 0.0
    for _ in range(400):
        op = rnd.choice(["insert", "insert", "hit", "hit", "hit", "remove", "pin", "unpin", "victim"])
        k = rnd.randint(0, 80)
        now += rnd.choice([0.0, 0.01, 1.0, 30.0, 600.0]) * rnd.random()
        key = f"k{k}"
        tokens = rnd.choice([1000, 1001, 1002, 2000])  # nearly one density: the same band
        if op == "victim":
            assert p.victim(now) == least_scored(m, p, now)
        else:
            apply_op(m, op, key, now, lambda: Entry(key, tokens=tokens, size=4 * tokens + rnd.randint(0, 9),
                                                    priority=int(k > 76)))
    p._check()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(st.randoms(use_true_random=False))
def test_ds4_victim_matches_a_full_scan_when_densities_share_a_fine_band(rnd):
    """Checkpoints of a few exact densities, all within one 0.024% band, hit at
    times many half-lives apart: the density whose least ``x`` comes first may
    still be denser than the winner, so the walk must go on past it to a less
    dense one."""
    p = Ds4DensityPolicy(half_life_s=10.0)
    m = EvictionManager(10**9, p, block_tokens=1, pin_quota_bytes=10**9)
    now = 0.0
    for _ in range(300):
        op = rnd.choice(["insert", "insert", "hit", "hit", "remove", "victim"])
        k = rnd.randint(0, 60)
        now += rnd.choice([0.0, 1.0, 20.0, 200.0]) * rnd.random()
        key = f"k{k}"
        if op == "victim":
            assert p.victim(now) == least_scored(m, p, now)
        else:
            apply_op(m, op, key, now, lambda: Entry(key, tokens=100_000, size=400_000 + rnd.randint(0, 6)))
    p._check()


@settings(max_examples=300, deadline=None)
@given(st.floats(1.0, 1e6), st.floats(0.0, 1e7), st.floats(0.0, 1e5), st.floats(1.0, 1e5), st.floats(1e-6, 1.0))
def test_ds4_bound_on_a_density_is_below_the_score(hits, at, idle, half_life, density):
    """The bound the victim walk breaks on, ``density · (1 + exp(x - origin) · slack)``,
    never exceeds the score as computed, whatever the hits, times and half-life."""
    from policies.ds4_density import _slack
    p = Ds4DensityPolicy(half_life_s=half_life)
    p._hits["k"], p._density["k"] = (hits, at), density
    x = math.log(hits) + at * p._rate
    now = at + idle
    origin = now * p._rate
    assert density * (1.0 + math.exp(x - origin) * _slack(origin)) <= p.score("k", now)
