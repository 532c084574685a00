"""The age-bucket index behind prefix-chain: the compiled and the pure-Python
implementations give the same answers to the same calls, and each answers
what a full scan would."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.age_buckets import AgeBuckets, age_buckets, compiled

KINDS, BUCKETS = 3, 6


def test_the_compiled_index_is_built():
    """The install builds it (a compiler is at hand wherever the tests run): without
    this, a failed build would leave every run on the slower Python index unnoticed."""
    cls = compiled()
    assert cls is not None
    assert type(age_buckets(kinds=4, buckets=24, age_base=2.0)) is cls
    assert type(age_buckets(kinds=4, buckets=24, age_base=2.0, native=False)) is AgeBuckets


def _full_scan(linked, tables, now_bucket):
    """The least (priority, table[kind][bucket] · weight, last use, key) of every linked key."""
    if not linked:
        return None
    lowest = min(p for p, *_ in linked.values())
    return min(((tables[kind][now_bucket(key)] * weight, last_use, key)
                for key, (p, kind, _, weight, last_use) in linked.items() if p == lowest))[2]


@pytest.mark.parametrize("seconds", [False, True], ids=["events", "seconds"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), age_base=st.sampled_from([1.0, 2.0, 0.37]), string_keys=st.booleans())
def test_both_indexes_answer_alike_and_as_a_full_scan(seconds, seed, age_base, string_keys):
    """Random links, unlinks, agings and victims (ties in weight included, two
    priorities, keys as ints or strings): every answer of the compiled index equals
    the pure-Python one's, the victim is the least rank of a full scan over the
    buckets each key's idle time gives, and both indexes' invariants hold throughout."""
    rnd = random.Random(seed)
    python, native = (age_buckets(kinds=KINDS, buckets=BUCKETS, age_base=age_base, native=flag)
                      for flag in (False, True))
    linked: dict = {}  # key -> (priority, kind, bucket at link, weight, last use)
    now = 0.0

    def exact_bucket(key):
        age = now - linked[key][4]
        return min(BUCKETS - 1, int(math.log2(1 + age / age_base))) if age > 0 else 0

    calls = {"python": [], "native": []}
    for step in range(300):
        now += rnd.choice([0.0, 1.0, 1.0, 3.0, 17.0]) if not seconds else rnd.uniform(0.0, 9.0)
        if not seconds:
            now = float(int(now))
        op = rnd.random()
        if op < 0.45 or not linked:
            key = rnd.randrange(60)
            key = f"k{key:03d}" if string_keys else key
            if key in linked:
                continue
            entry = (rnd.choice([0, 0, 0, 1]), rnd.randrange(KINDS), 0,
                     rnd.choice([0.5, 1.0, 2.0, rnd.random()]), now)
            for index in (python, native):
                index.link(key, *entry)
            linked[key] = entry
        elif op < 0.65:
            key = rnd.choice(sorted(linked, key=str))
            assert python.unlink(key) is native.unlink(key) is True
            del linked[key]
        else:
            moved = python.age(now)
            assert native.age(now) == moved
            tables = [[rnd.choice([0.1, 1.0, rnd.random()]) for _ in range(BUCKETS)] for _ in range(KINDS)]
            for name, index in (("python", python), ("native", native)):
                calls[name].clear()

                def table_of(kind, seen=calls[name]):
                    seen.append(kind)
                    return tables[kind]

                answer = index.victim(table_of)
                assert answer == _full_scan(linked, tables, exact_bucket), name
            assert sorted(calls["python"]) == sorted(calls["native"])  # the same kinds asked, once each
            assert len(set(calls["native"])) == len(calls["native"])
        assert len(python) == len(native) == len(linked)
        if step % 7 == 0:  # the densities read the idle counts: the same floats, to the last bit
            hits = [rnd.choice([0.0, 1.0, rnd.random() * 9]) for _ in range(BUCKETS)]
            ends = [rnd.choice([0.0, 2.0, rnd.random() * 30]) for _ in range(BUCKETS)]
            decay = rnd.choice([0.5, 0.8])  # (a new terms object each time, its values may change)
            terms = tuple((b, age_base * 2 ** b, age_base * (2 ** b - 1) + age_base * 2 ** b / 2,
                           0.01 * decay ** b) for b in reversed(range(BUCKETS)))
            empty = [rnd.random() for _ in range(BUCKETS)]
            for kind in (None, *range(KINDS)):
                top = max(python.top(kind), rnd.randrange(-1, BUCKETS)) if kind is not None else BUCKETS - 1
                got = native.densities(hits, ends, kind, top, terms, empty)
                assert got == python.densities(hits, ends, kind, top, terms, empty)
                assert all(math.isfinite(d) and d >= 0 for d in got[0])
        for kind in range(KINDS):
            assert python.idle(kind) == native.idle(kind)
            assert python.top(kind) == native.top(kind)
        key = rnd.randrange(60)
        key = f"k{key:03d}" if string_keys else key
        assert (key in python) == (key in native) == (key in linked)
        assert python.entry(key) == native.entry(key)
        if step % 25 == 0:
            python.check()
            native.check()
            assert sorted(python.keys(), key=str) == sorted(native.keys(), key=str) == sorted(linked, key=str)


@pytest.mark.parametrize("native", [False, True], ids=["python", "compiled"])
def test_misuse_names_the_argument(native):
    index = age_buckets(kinds=2, buckets=4, age_base=2.0, native=native)
    index.link("a", 0, 1, 3, 1.0, 0.0)
    with pytest.raises(ValueError, match="already linked"):
        index.link("a", 0, 1, 3, 1.0, 0.0)
    with pytest.raises(ValueError, match="kind must be in"):
        index.link("b", 0, 2, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="bucket must be in"):
        index.link("b", 0, 0, 4, 1.0, 0.0)
    assert len(index) == 1 and index.unlink("b") is False
    with pytest.raises(ValueError, match="age_base must be > 0"):
        age_buckets(kinds=2, buckets=4, age_base=0.0, native=native)
    with pytest.raises(ValueError, match="buckets must be in"):
        age_buckets(kinds=2, buckets=65, age_base=1.0, native=native)

    def broken(kind):
        raise RuntimeError("no table")

    with pytest.raises(RuntimeError, match="no table"):
        index.victim(broken)
    assert index.victim(lambda kind: [1.0] * 4) == "a"  # nothing kept from the failed call


def test_a_short_table_is_refused_by_the_compiled_index():
    index = age_buckets(kinds=1, buckets=4, age_base=2.0, native=True)
    index.link("a", 0, 0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"returned 2 values for 4 buckets"):
        index.victim(lambda kind: [1.0, 2.0])


def test_the_compiled_index_refuses_use_before_init():
    cls = compiled()
    assert cls is not None
    index = cls.__new__(cls)
    for call in (lambda: index.link("a", 0, 0, 0, 1.0, 0.0), lambda: index.unlink("a"), lambda: "a" in index,
                 index.keys, index.check, lambda: index.entry("a")):
        with pytest.raises(RuntimeError, match="__init__ was not called"):
            call()
