"""The Pareto staircase behind marconi: the compiled and the pure-Python
implementations give the same answers to the same calls, and each answers what
a full scan of its points would."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.staircase import Staircase, compiled, staircase


def test_the_compiled_staircase_is_built():
    """The install builds it (a compiler is at hand wherever the tests run): without
    this, a failed build would leave marconi on the slower Python staircase unnoticed."""
    cls = compiled()
    assert cls is not None
    assert type(staircase()) is cls
    assert type(staircase(native=False)) is Staircase


def _full_scan(points, alpha):
    """The least (normalised score, r, key) over every point, normalised as numpy
    does. (With ``alpha > 0`` a point off the staircase never scores below the step
    that hides it; with ``alpha = 0`` it may tie one and win on its key.)"""
    if not points:
        return None
    keys = list(points)
    r = np.array([points[k][0] for k in keys])
    e = np.array([points[k][1] for k in keys])

    def normalise(values):
        span = values.max() - values.min()
        return (values - values.min()) / span if span > 0 else np.zeros(len(values))

    score = normalise(r) + alpha * normalise(e)
    return min(zip(score.tolist(), r.tolist(), keys))[2]


def _steps(points):
    """The running minima of e over the points in r order (ties: in the order they came)."""
    out, running = [], None
    for key, (r, e, _) in sorted(points.items(), key=lambda item: (item[1][0], item[1][2])):
        if running is None or e <= running:
            out.append((r, e, key))
            running = e
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), string_keys=st.booleans(), back=st.sampled_from([0.0, 0.5, 30.0]),
       few_values=st.booleans())
def test_both_staircases_answer_alike_and_as_a_full_scan(seed, string_keys, back, few_values):
    """Random appends, moves, changes and removals, with time that may run back
    (a re-sort), ties in e and in r, and enough points and removals to compact:
    both give the same steps, bounds and least key for several weights, equal to a
    full scan, and both keep their invariants."""
    rnd = random.Random(seed)
    python, native = staircase(native=False), staircase(native=True)
    points: dict = {}  # key -> (r, e, order of arrival)
    now, arrivals, compacted, positions = 0.0, 0, False, 0

    def value():
        return float(rnd.randint(0, 3)) if few_values else rnd.uniform(0.0, 100.0)

    for step in range(3000):
        now += rnd.choice([0.0, 0.0, 1.0, 2.5]) - (rnd.random() < 0.01) * back
        op = rnd.random()
        key = rnd.randint(0, 80)
        key = f"k{key}" if string_keys else key
        if key not in points and op < 0.55:
            e = value()
            python.append(key, now, e)
            native.append(key, now, e)
            arrivals += 1
            points[key] = (now, e, arrivals)
        elif key in points and op < 0.75:
            python.move(key, now)
            native.move(key, now)
            arrivals += 1
            points[key] = (now, points[key][1], arrivals)
        elif key in points and op < 0.85:
            e = value()
            python.change(key, e)
            native.change(key, e)
            points[key] = (points[key][0], e, points[key][2])
        elif key in points:
            python.remove(key)
            native.remove(key)
            del points[key]
        assert len(python) == len(native) == len(points)
        assert (key in python) == (key in native) == (key in points)
        compacted |= len(python._keys) < positions
        positions = len(python._keys)
        if step % 29 == 0 or step > 2950:
            if points:
                assert python.bounds() == native.bounds() == (
                    min(r for r, _, _ in points.values()), max(r for r, _, _ in points.values()),
                    min(e for _, e, _ in points.values()), max(e for _, e, _ in points.values()))
            expected_steps = _steps(points)
            if back == 0.0:  # (a re-sort orders equal r by position, not by arrival)
                assert python.steps() == expected_steps
            assert native.steps() == python.steps()
            assert native.least(0.0) == python.least(0.0)  # (a hidden point may tie a step on r alone)
            for alpha in (0.3, 1.0, 10.0):
                assert native.least(alpha) == python.least(alpha) == _full_scan(points, alpha)
            python._check()
            native._check()
    assert compacted  # (the arrays were laid out again at least once: holes, or time running back)


def test_ties_in_the_score_go_to_the_older_then_the_smaller_key():
    for points in (staircase(native=False), staircase(native=True)):
        points.append("b", 0.0, 1.0)
        points.append("a", 0.0, 1.0)
        points.append("c", 1.0, 0.0)
        assert points.least(0.0) == "a"  # r ties first: a and b are older than c; then the key
        assert points.least(1.0) == "a"  # 0 + 1 against 1 + 0: a three-way tie, the older r, then the key
        points.remove("a")
        assert points.least(1.0) == "b"


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
def test_misuse_is_a_clear_error(native):
    points = staircase(native=native)
    assert points.least(1.0) is None
    with pytest.raises(IndexError, match="no points"):
        points.bounds()
    points.append("a", 0.0, 1.0)
    with pytest.raises(KeyError, match="already a point"):
        points.append("a", 1.0, 1.0)
    for call in (lambda: points.remove("x"), lambda: points.move("x", 2.0), lambda: points.change("x", 2.0)):
        with pytest.raises(KeyError):
            call()
    points._check()
    assert points.steps() == [(0.0, 1.0, "a")]


def test_the_compiled_staircase_refuses_use_before_init():
    cls = compiled()
    bare = cls.__new__(cls)
    assert len(bare) == 0 and "a" not in bare
    with pytest.raises(RuntimeError, match="__init__"):
        bare.append("a", 0.0, 1.0)
    with pytest.raises(TypeError):
        cls(1)


def test_native_must_be_none_true_or_false():
    with pytest.raises(ValueError, match="native must be None, True or False, got 'yes'"):
        staircase(native="yes")


def test_a_missing_compiled_twin_falls_back_or_fails_by_name():
    """Where pip could not compile a twin: ``native=None`` builds the Python
    original, ``native=True`` says which module is missing and how to get it."""
    from policies.native import pick

    assert pick(None, "_not_built", "Staircase", Staircase) is Staircase
    assert pick(False, "_staircase", "Staircase", Staircase) is Staircase
    with pytest.raises(ImportError, match=r"policies\._not_built was not built: reinstall kvstore with a C compiler"):
        pick(True, "_not_built", "Staircase", Staircase)
