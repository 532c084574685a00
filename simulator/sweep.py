"""Capacity x policy sweeps, in parallel processes, with sizes like ``10%`` or ``256GiB``.

>>> parse_size("256GiB"), parse_size("1.5GB"), parse_size("4096")
(274877906944, 1500000000, 4096)
>>> resolve_capacity("10%", working_set=1000)
100
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from kvstore.units import parse_size
from policies.registry import available, is_offline, offline, online

from .collector import rarer_collections
from .costmodel import Profile, get_profile, load_profiles
from .keyed import KeyedTrace
from .oracle import FutureOracle
from .replay import ReplayConfig, replay
from .trace import load_trace, read_trace

__all__ = ["parse_size", "resolve_capacity", "RunSpec", "run", "sweep", "parse_policies"]

def resolve_capacity(text: str, working_set: int | None) -> int:
    """A capacity in bytes; ``N%`` is a share of the trace's working set."""
    text = str(text).strip()
    if text.endswith("%"):
        if working_set is None:
            raise ValueError("percentages need the trace's working set")
        try:
            share = float(text[:-1])
        except ValueError:
            raise ValueError(f"not a percentage: {text!r} (use e.g. 5%, 12.5%)") from None
        if not 0 < share < float("inf"):
            raise ValueError(f"capacity percentage must be > 0, got {text!r}")
        return max(1, int(working_set * share / 100))
    size = parse_size(text)
    if size <= 0:
        raise ValueError(f"capacity must be > 0, got {text!r}")
    return size


def parse_policies(text: str) -> list[str]:
    """``all`` (every online policy, plus ``belady``), or a comma-separated list."""
    if text.strip() == "all":
        return online() + offline()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--policies names no policy; give 'all' or some of: {', '.join(available())}")
    known = available()
    for name in names:
        if name not in known:
            raise ValueError(f"unknown policy {name!r}; available: {', '.join(known)}")
    return names


@dataclass(frozen=True)
class RunSpec:
    """One replay of a sweep (plain data, so it can cross to a worker process)."""

    trace: str
    policy: str
    capacity_bytes: int
    capacity_label: str
    profile: str
    layout: str = "snapshot"
    block_tokens: int = 4096
    write_tail: bool = True
    profiles_file: str | None = None
    session_hints: bool = False
    index_bytes: int | None = None
    #: a directory of the trace's keys (``KeyedTrace.save``) shared by the runs of a sweep
    keys_dir: str | None = None


def _profile(spec: RunSpec) -> Profile:
    extra = load_profiles(spec.profiles_file) if spec.profiles_file else None
    return get_profile(spec.profile, extra)


def run(spec: RunSpec, *, on_request=None, progress=None, backend=None, requests=None,
        keys: KeyedTrace | None = None) -> dict:
    """Replay one spec; return the metrics as a dict with the run's labels.

    ``backend`` is :func:`simulator.replay.replay`'s (default: the eviction
    manager alone). ``keys`` (or ``spec.keys_dir``) are the trace's keys
    already computed: the replay reads no trace and hashes nothing. Without
    them, ``requests`` (the trace, already read) spares reading it again."""
    config = ReplayConfig(capacity_bytes=spec.capacity_bytes, policy=spec.policy, profile=_profile(spec),
                          layout=spec.layout, block_tokens=spec.block_tokens, write_tail=spec.write_tail,
                          session_hints=spec.session_hints, index_bytes=spec.index_bytes)
    if getattr(backend, "needs_tokens", False):  # a store of real bytes hashes real tokens
        keys = None
    elif keys is None and spec.keys_dir is not None:
        keys = KeyedTrace.load(spec.keys_dir)
    oracle = None
    if keys is not None:
        oracle = FutureOracle.from_keys(keys).next_use if is_offline(spec.policy) else None
    elif is_offline(spec.policy):  # an offline reference needs the whole future in memory
        requests = load_trace(spec.trace) if requests is None else requests
        oracle = FutureOracle(requests, spec.block_tokens).next_use
    elif requests is None:  # stream: memory stays bounded however long the trace
        requests = read_trace(spec.trace)
    extra = {} if backend is None else {"backend": backend}
    with rarer_collections():  # (millions of short-lived containers, nearly no cycles)
        metrics = replay(requests, config, on_request=on_request, progress=progress, next_use=oracle,
                         keys=keys, **extra)
    return {"policy": spec.policy, "capacity_bytes": spec.capacity_bytes, "capacity": spec.capacity_label,
            "profile": spec.profile, **metrics.as_dict(),
            **({"index_room_evictions": metrics.index_room_evictions} if metrics.index_room_evictions else {})}


#: replay time of each built-in policy relative to ``lru`` (the mean of its ratios at 5%
#: and 50%), measured on a generated 100,000-request OpenClaw trace with its keys
#: computed (``kvsim generate openclaw --sessions 3571 --seed 11 --session-gap 30``);
#: unknown policies count as 2
_RELATIVE_COST = {"belady-size": 2.0, "ds4-density": 2.0, "prefix-chain": 1.6, "lfu": 1.4, "gdsf": 1.4,
                  "belady": 1.3, "marconi": 1.15, "lru": 1.0, "hicache": 1.0, "vllm-offload": 0.7, "fifo": 0.6,
                  "random": 0.6}


def _longest_first(specs: Sequence[RunSpec]) -> list[int]:
    """Indices of ``specs``, the likely longest first, so no long replay starts last
    and runs alone while the other workers idle (smaller capacities first on ties:
    they evict more, and took longer for most policies, the costliest included)."""
    return sorted(range(len(specs)), key=lambda i: (-_RELATIVE_COST.get(specs[i].policy, 2.0),
                                                    specs[i].capacity_bytes, i))


def sweep(specs: Sequence[RunSpec], *, jobs: int = 1, on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every spec (``jobs`` at a time); results in the order of ``specs``. In
    parallel, the replays likely to take longest start first."""
    jobs = max(1, min(jobs, len(specs), os.cpu_count() or 1))
    results: dict[int, dict] = {}
    if jobs == 1:
        for i, spec in enumerate(specs):
            results[i] = run(spec)
            if on_done:
                on_done(results[i])
    else:
        # fresh interpreters: a forked worker would start with the parent's heap (the
        # trace's hashing tables) and count it as its own resident memory
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(run, specs[i]): i for i in _longest_first(specs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done:
                    on_done(results[futures[future]])
        except BaseException:  # a failed run, Ctrl-C, SIGTERM: stop now, not after the runs still queued
            _stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return [results[i] for i in range(len(specs))]


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the runs not started and end the ones running (the executor
    itself would wait for all of them)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # (no public way before 3.14)
    pool.shutdown(wait=False, cancel_futures=True)  # (which forgets the processes)
    for process in processes:
        if process.is_alive():
            process.terminate()
