"""Rarer garbage collections during a replay: thresholds raised for its duration only."""

import gc

import pytest

from simulator.collector import rarer_collections
from simulator.generators.openclaw import OpenClawConfig, generate
from simulator.sweep import RunSpec, run
from simulator.trace import write_trace


def test_thresholds_are_raised_inside_and_restored_after_even_on_an_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="boom"):
        with rarer_collections(123_456):
            assert gc.get_threshold() == (123_456, max(20, before[1]), max(100, before[2]))
            raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_nested_uses_restore_in_the_order_they_exit():
    before = gc.get_threshold()
    with rarer_collections(60_000):
        with rarer_collections(70_000):
            assert gc.get_threshold()[0] == 70_000
        assert gc.get_threshold()[0] == 60_000
    assert gc.get_threshold() == before


def test_a_threshold_already_higher_is_not_lowered():
    before = gc.get_threshold()
    gc.set_threshold(200_000, 50, 500)
    try:
        with rarer_collections(50_000):
            assert gc.get_threshold() == (200_000, 50, 500)
    finally:
        gc.set_threshold(*before)


def test_garbage_in_cycles_left_by_the_body_is_freed_on_exit():
    import weakref

    class Node:
        pass

    with rarer_collections():
        a, b = Node(), Node()
        a.other, b.other = b, a  # (a store, its policy and the view between them)
        alive = weakref.ref(a)
        del a, b
        assert alive() is not None  # reference counting alone cannot free a cycle
    assert alive() is None


def test_a_sweep_worker_does_not_keep_one_replay_while_it_runs_the_next(tmp_path, monkeypatch):
    import weakref

    from policies.registry import resolve as real_resolve
    import simulator.replay

    trace = str(tmp_path / "t.jsonl")
    write_trace(trace, generate(OpenClawConfig(sessions=3, seed=5)))
    policies = []

    def keep(name, **options):
        policy = real_resolve(name, **options)
        policies.append(weakref.ref(policy))
        return policy

    monkeypatch.setattr(simulator.replay, "resolve", keep)
    collected = []

    def age_the_replay(result):  # as a long replay does: its tables end in the oldest generation
        if not collected:
            collected.append(gc.collect())

    run(RunSpec(trace, "prefix-chain", 4 * 10**9, "4GB", "ds4"), on_request=age_the_replay)
    assert len(policies) == 1 and policies[0]() is None  # its store, policy and view were freed


@pytest.mark.parametrize("first", [0, -1, 1.5, True, "50000"])
def test_a_bad_threshold_is_a_one_line_error_naming_it(first):
    with pytest.raises(ValueError, match="first must be an int >= 1"):
        with rarer_collections(first):
            pass


def test_a_replay_runs_with_rarer_collections_and_gives_the_same_metrics(tmp_path):
    trace = str(tmp_path / "t.jsonl")
    write_trace(trace, generate(OpenClawConfig(sessions=3, seed=5)))
    spec = RunSpec(trace, "prefix-chain", 4 * 10**9, "4GB", "ds4")
    before = gc.get_threshold()
    seen = []
    inside = run(spec, on_request=lambda r: seen.append(gc.get_threshold()))
    assert seen and all(t[0] >= 50_000 for t in seen)
    assert gc.get_threshold() == before
    gc.disable()  # the same replay with no collections at all: the same decisions
    try:
        off = run(spec)
    finally:
        gc.enable()
    assert off == inside
