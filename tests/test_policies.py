"""Every built-in policy: its ordering on small hand-built chains. The
contract under any event sequence is checked by tests/test_conformance.py."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from kvstore.eviction import Entry, EvictionManager
from policies import (BeladyPolicy, FIFOPolicy, GDSFPolicy, LFUPolicy, PrefixChainPolicy, RandomPolicy)
from policies.prefix_chain import KINDS

from .helpers import apply_op


def entry(key, tokens, size, parent=None, ancestors=(), tail=False, priority=0):
    return Entry(key, tokens=tokens, size=size, parent=parent, ancestors=ancestors, is_tail=tail,
                 anchor=parent if tail else None, priority=priority)


def put(m, e, now):
    if m.make_room(e, now) is not None:
        m.insert(e, now)


def put_past_admission(m, e, now):
    """Store ``e`` whatever the policy's admission says (to test victim order alone)."""
    m.evict_for(e.size, now)
    m.insert(e, now)


def test_fifo_ignores_hits():
    m = EvictionManager(30, FIFOPolicy(), block_tokens=1)
    for i, k in enumerate("abc"):
        put(m, entry(k, 1, 10), i)
    m.record_hit("a", 5)
    assert [v.key for v in m.evict_for(10, 6)] == ["a"]


def test_lfu_counts_hits_then_recency():
    m = EvictionManager(30, LFUPolicy(), block_tokens=1)
    for i, k in enumerate("abc"):
        put(m, entry(k, 1, 10), i)
    m.record_hit("a", 5)
    m.record_hit("b", 6)
    m.record_hit("a", 7)
    assert [v.key for v in m.evict_for(10, 8)] == ["c"]
    m.release(10)
    assert [v.key for v in m.evict_for(20, 9)] == ["b"]


def test_gdsf_ages_entries_that_are_not_hit():
    p = GDSFPolicy()
    m = EvictionManager(30, p, block_tokens=1)
    put(m, entry("dense", 100, 10), 0)
    put(m, entry("sparse", 10, 10), 1)
    put(m, entry("mid", 50, 10), 2)
    assert [v.key for v in m.evict_for(10, 3)] == ["sparse"]
    assert p.inflation == pytest.approx(1.0)
    put(m, entry("new", 10, 10), 4)  # H = 1 + 1 = 2 < mid (5): new goes before mid
    assert [v.key for v in m.evict_for(10, 5)] == ["new"]


def test_random_is_seeded_and_uses_only_eligible_keys():
    picks = []
    for _ in range(2):
        m = EvictionManager(100, RandomPolicy(seed=3), block_tokens=1)
        for i in range(10):
            put(m, entry(f"k{i}", 1, 10), i)
        m.pin("k0")
        picks.append([v.key for v in m.evict_for(60, 20)])
    assert picks[0] == picks[1] and "k0" not in picks[0]


def test_belady_evicts_what_is_needed_furthest_away():
    future = {"a": 10.0, "b": 50.0, "c": math.inf}
    m = EvictionManager(30, BeladyPolicy(next_use=lambda k, now: future.get(k, math.inf)), block_tokens=1)
    for i, k in enumerate("abc"):
        put(m, entry(k, 1, 10), i)
    assert [v.key for v in m.evict_for(20, 5)] == ["c", "b"]
    with pytest.raises(ValueError, match="offline reference"):
        BeladyPolicy()


def test_belady_size_knows_a_snapshot_is_redundant_when_a_stored_child_covers_its_next_use():
    # "short" and its child "deep" are both used at t=10; "other" at t=40
    uses = {"short": [10.0, 100.0], "deep": [10.0], "other": [40.0]}

    def next_use(key, now):
        return next((t for t in uses.get(key, []) if t > now), math.inf)

    m = EvictionManager(30, policies.get("belady-size", next_use=next_use), block_tokens=1)
    put(m, entry("short", 1, 10), 0)
    put(m, entry("deep", 2, 10, parent="short", ancestors=("short",)), 0)
    put(m, entry("other", 1, 10), 0)
    # plain MIN would evict "other" (next use 40 > 10); at t=10 "deep" serves the
    # request, so "short" is next useful only at t=100
    assert [v.key for v in m.evict_for(10, 1)] == ["short"]
    plain = EvictionManager(30, BeladyPolicy(next_use=next_use), block_tokens=1)
    for key, parent in (("short", None), ("deep", "short"), ("other", None)):
        put(plain, entry(key, 2 if parent else 1, 10, parent=parent, ancestors=(parent,) if parent else ()), 0)
    assert [v.key for v in plain.evict_for(10, 1)] == ["other"]


@pytest.mark.parametrize("layout", ["snapshot", "chained"])
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([0, 3, 30]), st.sampled_from([1, 40, 5000]))
def test_belady_size_victim_is_the_full_scan_s(layout, seed, back, largest):
    """The kept useful next uses and size classes name the victim a full scan
    names (useful next use looked up afresh for every eligible checkpoint, the
    largest ``(useful - now) * size``, never-again first): over a tree of
    prefixes whose stored children come and go, with pins, hits, sizes from
    one class to many, and time running back by up to ``back``; ``_check``
    holds after every step."""
    import bisect
    import random

    rnd = random.Random(seed)  # (a walk this long draws more than hypothesis's randoms() allow)
    uses = {f"k{i}": sorted(rnd.sample(range(1, 2000), rnd.randint(2, 40))) for i in range(31)}
    for i in range(1, 31):  # a child's uses are mostly its parent's too, as a trace's are
        parent = f"k{(i - 1) // 2}"
        uses[parent] = sorted(set(uses[parent]) | set(t for t in uses[f"k{i}"] if rnd.random() < 0.8))

    def next_use(key, now):
        times = uses[key]
        i = bisect.bisect_right(times, now)
        return times[i] if i < len(times) else math.inf

    p = policies.get("belady-size", next_use=next_use)
    m = EvictionManager(10**9, p, block_tokens=1, pin_quota_bytes=10**9, layout=layout)

    def path(i):  # k0 is the root; k(i) hangs from k((i - 1) // 2)
        return path((i - 1) // 2) + [i] if i else [0]

    def full_scan(now):
        best = None
        for x in list(m):
            e = m.entry(x)
            if e.pinned or not m.is_eligible(x):
                continue
            when = next_use(x, now)
            shared = [next_use(c, now) for c in m.children(x)]
            for _ in range(p.LOOKAHEAD):
                if when == math.inf or when not in shared:
                    break
                when = next_use(x, when)
            else:
                when = math.inf
            rank = (1, e.size, x) if when == math.inf else (0, (when - now) * e.size, x)
            best = rank if best is None or rank > best else best
        return None if best is None else best[2]

    now = 0.0
    for _ in range(300):
        op = rnd.choice(["insert", "insert", "hit", "remove", "pin", "unpin", "victim", "victim"])
        k, dt = rnd.randint(0, 30), rnd.randint(-back, 12)
        now += dt  # time may run back a little, and lands on uses
        key, chain_of = f"k{k}", path(k)
        ancestors = tuple(f"k{i}" for i in chain_of[:-1])
        if op != "victim":
            apply_op(m, op, key, now, lambda: Entry(key, tokens=4 * len(chain_of), size=rnd.randint(1, largest),
                                                    ancestors=ancestors, parent=ancestors[-1] if ancestors else None))
        else:
            assert p.victim(now) == full_scan(now)
        p._check()


@pytest.mark.parametrize("children", [50, 400])
def test_belady_size_looks_up_a_shared_prefix_s_children_only_as_time_passes_their_uses(children):
    """A shared prefix (a system prompt) with many stored children, one of them
    used per second: each second the prefix's own next use passes and it is
    filed again, yet only the child used that second is looked up again, so
    the lookups per second do not grow with the number of children (filing
    the prefix used to look up every child: ``children`` lookups a second)."""
    seconds = 200
    calls = 0

    def next_use(key, now):
        nonlocal calls
        calls += 1
        if key == "root":  # used every second
            return math.floor(now) + 1.0
        i = int(key[1:])  # child i: used at the seconds i, i + children, ...
        return i + children * max(0, math.floor((now - i) / children) + 1.0)

    p = policies.get("belady-size", next_use=next_use)
    m = EvictionManager(10**9, p, block_tokens=1)
    put(m, entry("root", 1, 10), 0.0)
    for i in range(children):
        put(m, entry(f"c{i}", 2, 10, parent="root", ancestors=("root",)), 0.0)
    p.victim(0.0)
    calls = 0
    for second in range(1, seconds + 1):
        assert p.victim(float(second)) is not None
    assert calls <= 10 * seconds, f"{calls} lookups in {seconds} s with {children} stored children"
    p._check()


def test_belady_size_forgets_the_next_uses_of_removed_children():
    """Children stored, looked up, then removed before their (far) next use, a
    batch at a time: the heap of children's next uses keeps at most about three
    entries per child still stored, not one per child ever stored."""
    p = policies.get("belady-size", next_use=lambda key, now: 10.0**6 + int(key.partition("-")[2] or 0))
    m = EvictionManager(10**9, p, block_tokens=1)
    put(m, entry("root", 1, 10), 0.0)
    for batch in range(12):
        keys = [f"b{batch}-{i}" for i in range(100)]
        for key in keys:
            put(m, entry(key, 2, 10, parent="root", ancestors=("root",)), float(batch))
        p.victim(float(batch))  # (their next uses are looked up here)
        assert len(p._passing) <= 3 * len(keys) + 64, (batch, len(p._passing))
        p._check()
        for key in keys:
            m.remove(key)


def test_prefix_chain_values_marginal_tokens_from_the_nearest_stored_ancestor():
    p = PrefixChainPolicy(learn_kinds=False)
    m = EvictionManager(10_000, p, block_tokens=100)
    put(m, entry("a", 100, 100), 0)
    put(m, entry("b", 200, 150, parent="a", ancestors=("a",)), 0)
    assert p.marginal_tokens("b") == 100
    m.remove("a")
    p.victim(0)  # applies pending rescoring
    assert p.marginal_tokens("b") == 200


def test_prefix_chain_protects_a_shared_system_prompt_and_ages_out_sessions():
    p = PrefixChainPolicy()
    m = EvictionManager(10_000, p, block_tokens=100)
    put(m, entry("sys", 100, 200), 0)
    for s in range(12):  # every 10 s a session starts from the system prompt, comes back once, ends
        t = 10.0 * (s + 1)
        m.record_hit("sys", t)
        put(m, entry(f"s{s}", 200, 250, parent="sys", ancestors=("sys",)), t)
        m.record_hit(f"s{s}", t + 5)
    assert p.kind("sys") == "branch"
    m.evict_some(len(m) - 1, 200)
    assert list(m) == ["sys"]  # the stale sessions go, the shared prompt stays
    p._check()


def test_prefix_chain_learns_which_kind_is_reused():
    p = PrefixChainPolicy()
    m = EvictionManager(10_000, p, block_tokens=100)
    for s in range(5):  # tails get hit, aligned checkpoints do not
        put(m, entry(f"l{s}", 100, 10), s)
        put(m, entry(f"t{s}", 150, 10, parent=f"l{s}", ancestors=(f"l{s}",), tail=True), s)
        m.record_hit(f"t{s}", s + 0.5)
    assert p.reuse("tail") == 1.0 and p.reuse("leaf") < p.reuse("tail")


def test_prefix_chain_kinds_tell_how_the_chain_grew_from_a_checkpoint():
    p = PrefixChainPolicy()
    m = EvictionManager(10_000, p, block_tokens=100)
    put(m, entry("sys", 100, 10), 0)
    put(m, entry("t", 150, 10, parent="sys", ancestors=("sys",), tail=True), 0)
    assert (p.kind("sys"), p.kind("t")) == ("leaf", "tail")  # a tail is no aligned child
    put(m, entry("a", 200, 10, parent="sys", ancestors=("sys",)), 1)
    assert p.kind("sys") == "interior"
    put(m, entry("b", 200, 10, parent="sys", ancestors=("sys",)), 2)
    assert p.kind("sys") == "branch"
    m.remove("a")
    m.remove("b")
    p.victim(3)  # applies pending rescoring
    assert p.kind("sys") == "branch"  # prompts diverged from it: that history stays
    p._check()


def _sessions_that_return_after(m, think, sessions):
    """Sessions of two turns each: a checkpoint written, hit again ``think`` s later."""
    for s in range(sessions):
        put(m, entry(f"s{s}", 100, 10), s * 5)
        m.record_hit(f"s{s}", s * 5 + think)
    m.evict_some(len(m), sessions * 5 + think + 5_000)  # nothing comes back later


def test_prefix_chain_learns_how_long_an_idle_checkpoint_is_worth_keeping():
    p = PrefixChainPolicy(clock="seconds", age_base=10.0)  # ages in seconds, to read them here
    m = EvictionManager(10_000, p, block_tokens=100)
    _sessions_that_return_after(m, think=60, sessions=40)
    assert len(m) == 0
    # sessions return after about a minute, never after an hour
    assert p.density("leaf", 50) > 10 * p.density("leaf", 3_600)
    # so a shallow (dense) checkpoint idle for an hour goes before a deep one idle for a minute
    now = 100_000.0
    put(m, entry("stale", 100, 10), now - 3_600)
    put(m, entry("active", 2_000, 2_000), now - 60)
    assert p.saved("stale") / 10 > p.saved("active") / 2_000
    assert [v.key for v in m.evict_for(m.capacity_bytes - 2_000, now)] == ["stale"]
    p._check()


def test_prefix_chain_ages_count_events_so_time_scale_changes_nothing():
    """The same events 100x faster or slower give the same victims: ages are
    counted in the store's own events (inserts and hits), not in seconds."""
    def victims(scale):
        p = PrefixChainPolicy()
        m = EvictionManager(1_000, p, block_tokens=100)
        for s in range(30):  # sessions interleaved three at a time: each returns 6 events later
            put(m, entry(f"s{s}", 100, 10), s * scale)
            if s >= 3:
                m.record_hit(f"s{s - 3}", (s + 0.5) * scale)
        put(m, entry("deep", 2_000, 200), 31 * scale)  # fresh, large, few tokens per byte
        return [v.key for v in m.evict_for(m.free_bytes + 100, 32 * scale)]
    slow = victims(100.0)
    assert slow == victims(1.0) == victims(0.01)
    # sessions idle for many events go before the fresh deep checkpoint and
    # before sessions not yet due back, whatever their tokens per byte
    assert len(slow) == 10 and not {"deep", "s27", "s28", "s29"} & set(slow)


def test_prefix_chain_density_statistics_are_forgotten_with_a_half_life():
    p = PrefixChainPolicy(memory=10)
    m = EvictionManager(10_000, p, block_tokens=100)
    _sessions_that_return_after(m, think=60, sessions=5)  # 10 idle spells end: halved once
    assert sum(p.ends["leaf"]) == pytest.approx(5.0)
    assert sum(p.hits["leaf"]) == pytest.approx(2.5)


@pytest.mark.parametrize("option, value", [("prefix_weight", 1.5), ("admit_threshold", -0.1),
                                           ("context_scale", -1.0), ("age_base", 0.0), ("memory", 0),
                                           ("clock", "wall"), ("prior_decay", 0.0), ("drift", 1.0),
                                           ("drift", -0.1), ("native", "yes")])
def test_prefix_chain_rejects_bad_options_by_name(option, value):
    with pytest.raises(ValueError, match=option):
        PrefixChainPolicy(**{option: value})


def test_prefix_chain_priority_ranks_what_the_engine_writes():
    p = PrefixChainPolicy()
    m = EvictionManager(30, p, block_tokens=1)
    put(m, entry("low", 1, 10, priority=0), 0)
    put(m, entry("high", 1, 10, priority=5), 0)
    put(m, entry("mid", 1, 10, priority=1), 0)
    assert [v.key for v in m.evict_for(20, 1)] == ["low", "mid"]


def test_every_policy_is_listed_with_a_description():
    names = policies.available()
    assert set(policies.registry.BUILTIN) <= set(names)
    assert all(len(d) > 10 for d in names.values())
    assert "belady" not in policies.online() and set(policies.offline()) == {"belady", "belady-size"}


def make(name):
    if name == "belady":
        return BeladyPolicy(next_use=lambda key, now: now + (hash(key) % 97) + 1)
    return policies.get(name)


# The contract under any event sequence, for every policy and both layouts,
# is tests/test_conformance.py (the kvstore.testing kit).


@pytest.mark.parametrize("name", sorted(policies.online()))
def test_every_online_policy_treats_priority_as_a_strict_tier(name):
    m = EvictionManager(60, make(name), block_tokens=1)
    for i in range(6):  # the high-priority ones are the oldest, least used and least dense
        put_past_admission(m, entry(f"k{i}", 10 + i, 10, priority=1 if i < 3 else 0), i)
    for i in range(3, 6):
        m.record_hit(f"k{i}", 10 + i)
    victims = [v.key for v in m.evict_for(30, 20)]
    assert sorted(victims) == ["k3", "k4", "k5"]


def test_hicache_writes_on_the_second_request_and_evicts_leaves_first():
    p = policies.HiCachePolicy()
    m = EvictionManager(30, p, block_tokens=1)
    first = entry("a", 1, 10)
    assert not m.admit(first, 0) and m.admit(first, 1)
    put_past_admission(m, first, 1)
    put_past_admission(m, entry("b", 2, 10, parent="a", ancestors=("a",)), 2)
    put_past_admission(m, entry("c", 1, 10), 3)
    m.record_hit("a", 4)  # a is the most recent, but b is a leaf and c is older
    assert [v.key for v in m.evict_for(20, 5)] == ["b", "c"]


def test_vllm_offload_gates_admission_on_reuse_frequency():
    p = policies.VllmOffloadPolicy(min_requests=3)
    m = EvictionManager(30, p, block_tokens=1)
    e = entry("a", 1, 10)
    assert [m.admit(e, t) for t in range(3)] == [False, False, True]


def test_marconi_trades_recency_against_flop_efficiency():
    m = EvictionManager(30, policies.MarconiPolicy(alpha=0.0), block_tokens=1)
    put(m, entry("dense-old", 100, 10), 0)
    put(m, entry("sparse-new", 1, 10), 1)
    assert m.policy.victim(2) == "dense-old"  # alpha 0: pure recency
    m = EvictionManager(30, policies.MarconiPolicy(alpha=10.0), block_tokens=1)
    put(m, entry("dense-old", 100, 10), 0)
    put(m, entry("sparse-new", 1, 10), 1)
    assert m.policy.victim(2) == "sparse-new"  # efficiency dominates


def _chain_entry(i: int, priority: int) -> Entry:
    """Checkpoint ``k{i}`` of a small tree (``k0``, ``k1`` roots; ``k{i}`` under
    ``k{(i-2)//2}``), every fifth one a tail: leaves, interior checkpoints,
    branches and tails, with marginal tokens that change as ancestors come and go."""
    chain, j = [], i
    while j >= 2:
        j = (j - 2) // 2
        chain.append(f"k{j}")
    ancestors = tuple(reversed(chain))
    tail = i % 5 == 4 and bool(ancestors)
    tokens = 100 * (len(ancestors) + 1) + (37 if tail else 0)
    return entry(f"k{i}", tokens, 4 * tokens + i % 3, parent=ancestors[-1] if ancestors else None,
                 ancestors=ancestors, tail=tail, priority=priority)


@pytest.mark.parametrize("native", [False, True], ids=["python", "compiled"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(st.randoms(use_true_random=False), st.sampled_from(["events", "seconds"]), st.booleans())
def test_prefix_chain_victim_is_the_least_rank_of_a_full_scan(native, rnd, clock, learn_kinds):
    """Long random walks of inserts, hits, removals, pins and evictions: the
    victim is always the eligible checkpoint with the least (priority, rank,
    last use, key) over every checkpoint (its groups, their cached least entries
    and the aged buckets say no more than that); ``_check`` holds after every step.
    Both age-bucket indexes: the pure-Python one and the compiled one."""
    p = PrefixChainPolicy(clock=clock, learn_kinds=learn_kinds, memory=25, native=native)

    def is_the_least_rank(m, victim):
        eligible = [m.entry(k) for k in list(m) if m.is_eligible(k)]
        expected = min(((e.priority, p.rank(e.key, p._now), p._last_use[e.key], e.key) for e in eligible),
                       default=(None, None, None, None))[3]
        assert victim == expected

    _walk(p, rnd, 300, lambda op, key: p._check(), check_victim=is_the_least_rank)


def _walk(p, rnd, steps, after_step, check_victim=None):
    """A random walk of inserts, hits, removals, pins, victim choices and
    evictions on ``p``; ``after_step(op, key)`` runs after every step, and
    ``check_victim(manager, victim)`` sees every victim before it is evicted."""
    m = EvictionManager(10**9, p, block_tokens=100, pin_quota_bytes=10**9)
    now = 0.0
    for _ in range(steps):
        op = rnd.choice(["insert", "insert", "hit", "hit", "remove", "pin", "unpin", "victim", "evict"])
        i = rnd.randint(0, 15)
        now += rnd.choice([0, 1, 1, 2, 7, 40, 300])
        if op in ("victim", "evict"):
            victim = p.victim(now)
            if check_victim is not None:
                check_victim(m, victim)
            if op == "evict" and victim is not None:
                m.evict_some(1, now)
        else:
            apply_op(m, op, f"k{i}", now, lambda: _chain_entry(i, priority=int(i > 13)))
        after_step(op, f"k{i}")


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_prefix_chain_densities_are_exact_without_drift(rnd, learn_kinds):
    """``drift=0``: every density a victim choice reads is the one all counts give now."""
    p = PrefixChainPolicy(learn_kinds=learn_kinds, memory=25, drift=0.0)

    def densities_are_current(op, key):
        for kind in KINDS:
            assert p._table(kind) == p._densities(kind)[0], (op, kind)

    _walk(p, rnd, 200, densities_are_current)


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from([0.05, 0.3]))
def test_prefix_chain_densities_drift_at_most_their_share_and_follow_hits_at_once(rnd, drift):
    """With ``drift``, a kind's densities are computed again once its spell ends
    and idle counts changed by more than that share of their total, and at once
    after a hit on a checkpoint of that kind."""
    p = PrefixChainPolicy(memory=25, drift=drift)
    computed = {}  # kind -> its counts, their total and its hits when its table was last computed
    computing = p._densities

    def counts(kind):
        return [e + i for e, i in zip(p.ends[kind], p._index.idle(KINDS.index(kind)))]

    def recording(kind):
        table, total = computing(kind)
        computed[kind] = (counts(kind), total, list(p.hits[kind]))
        return table, total

    p._densities = recording

    def drift_is_bounded(op, key):
        for kind in KINDS:
            if kind not in p._density:
                continue
            then, total, hits = computed[kind]
            changed = sum(abs(a - b) for a, b in zip(counts(kind), then))
            assert changed <= int(total * drift), (kind, changed, total)
            assert p.hits[kind] == hits, kind  # (a hit, or halving with the memory, recomputes)

    _walk(p, rnd, 200, drift_is_bounded)


def test_prefix_chain_drift_skips_most_recomputes_and_decides_as_exact_densities_do():
    """On a generated agent trace at 5%: ``drift=0.01`` computes densities again
    less often than after every change (the bigger the store, the fewer: 45% of
    the times here), and its re-prefill stays within 0.5%."""
    from simulator.costmodel import PROFILES
    from simulator.generators.openclaw import OpenClawConfig, generate
    from simulator.keyed import KeyedTrace
    from simulator.replay import ReplayConfig, replay

    keys = KeyedTrace.build(generate(OpenClawConfig(sessions=300, session_gap_s=20, seed=108)))
    base = ReplayConfig(capacity_bytes=1, policy="lru", profile=PROFILES["ds4"])
    capacity = int(keys.working_set_bytes(base.entry_bytes) * 0.05)
    seconds, recomputes = {}, {}
    for drift in (0.0, 0.01):
        policy = PrefixChainPolicy(drift=drift)
        computing = policy._densities
        calls = []

        def counted(kind, computing=computing, calls=calls):
            calls.append(kind)
            return computing(kind)

        policy._densities = counted
        config = ReplayConfig(capacity_bytes=capacity, policy=policy, profile=PROFILES["ds4"])
        seconds[drift] = replay(None, config, keys=keys).reprefill_seconds
        recomputes[drift] = len(calls)
    assert recomputes[0.01] < 0.6 * recomputes[0.0], recomputes
    assert seconds[0.01] == pytest.approx(seconds[0.0], rel=0.005)


def test_prefix_chain_on_a_wall_clock_of_epoch_seconds_keeps_evicting():
    """With ``clock="seconds"`` at epoch timestamps, the aging margin is about a
    second wide: a group rescheduled inside it used to be popped again forever,
    hanging the engine's put. Run in a subprocess so a hang fails the test."""
    import subprocess
    import sys

    script = (
        "from kvstore.eviction import Entry, EvictionManager\n"
        "from policies import PrefixChainPolicy\n"
        "p = PrefixChainPolicy(clock='seconds')\n"
        "m = EvictionManager(10**6, p, block_tokens=4)\n"
        "for i in range(50):\n"
        "    e = Entry(f'k{i}', tokens=4, size=100_000)\n"
        "    m.make_room(e, 1.7e9 + i * 0.5)\n"
        "    m.insert(e, 1.7e9 + i * 0.5)\n"
        "    p._check()\n"
        "print(m.evictions)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 40  # room for 10 checkpoints of 100,000 bytes: the other 40 evicted


@pytest.mark.parametrize("option, value", [("alpha", -1.0), ("native", "yes")])
def test_marconi_rejects_bad_options_by_name(option, value):
    with pytest.raises(ValueError, match=option):
        policies.MarconiPolicy(**{option: value})


@pytest.mark.parametrize("native", [False, True], ids=["python-staircase", "compiled-staircase"])
@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from([0.0, 0.3, 1.0, 10.0]), st.sampled_from([0, 3, 20]))
def test_marconi_victim_is_the_least_score_of_a_full_scan(native, rnd, alpha, back):
    """The staircase names the victim a full scan of every eligible checkpoint
    names: the least normalised score, then the older last use, then the
    smaller key — over a tree of prefixes whose nearest stored ancestors (so
    efficiencies) change as checkpoints come and go, with priorities, pins and
    time running back by up to ``back``; ``_check`` holds after every step.
    (Long random walks: a removed step must reveal several hidden ones.)"""
    import numpy as np

    p = policies.MarconiPolicy(alpha=alpha, native=native)
    m = EvictionManager(10**9, p, block_tokens=1, pin_quota_bytes=10**9)

    def path(i):  # k0 is the root; k(i) hangs from k((i - 1) // 2)
        return path((i - 1) // 2) + [i] if i else [0]

    now = 0.0
    for _ in range(300):
        op = rnd.choice(["insert", "insert", "hit", "hit", "remove", "pin", "unpin", "victim", "victim"])
        k, dt, size = rnd.randint(0, 30), rnd.randint(-back, 200), rnd.randint(1, 40)
        now += dt / 10  # time may run back a little
        key, chain_of = f"k{k}", path(k)
        ancestors = tuple(f"k{i}" for i in chain_of[:-1])
        if op != "victim":
            apply_op(m, op, key, now, lambda: Entry(key, tokens=4 * len(chain_of), size=size, ancestors=ancestors,
                                                    parent=ancestors[-1] if ancestors else None,
                                                    priority=k % 7 // 6))
        else:
            eligible = [m.entry(x) for x in list(m) if not m.entry(x).pinned]
            expected = None
            if eligible:
                lowest = min(e.priority for e in eligible)
                keys = [e.key for e in eligible if e.priority == lowest]
                recency = np.array([p._last_use[x] for x in keys])
                efficiency = np.array([p.flop_efficiency(x) for x in keys])

                def normalise(values):
                    span = values.max() - values.min()
                    return (values - values.min()) / span if span > 0 else np.zeros(len(values))

                score = normalise(recency) + alpha * normalise(efficiency)
                expected = min(zip(score.tolist(), recency.tolist(), keys))[2]
            assert p.victim(now) == expected
        p._check()
