"""What the cyclic garbage collector costs a replay and a hashing pass.

    .venv/bin/python bench/bench_gc.py [--trace FILE] [--capacity 0.05] [--policies lru,prefix-chain] [--repeat 3]

Runs each step twice in alternation, at CPython's default collector thresholds
and inside :func:`simulator.collector.rarer_collections` (what ``kvsim``
does), and prints the best time of each and their ratio. The replays' metrics
are checked equal: the collector changes when memory is looked at, never a
decision. Default trace: the shipped ``openclaw-strip-history``; the effect
grows with the store, so try a generated one too::

    .venv/bin/kvsim generate openclaw -o g200k.jsonl --sessions 7150 --seed 11 --session-gap 30
    .venv/bin/python bench/bench_gc.py --trace g200k.jsonl --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from simulator.collector import rarer_collections  # noqa: E402
from simulator.costmodel import PROFILES  # noqa: E402
from simulator.keyed import KeyedTrace  # noqa: E402
from simulator.replay import ReplayConfig, replay  # noqa: E402
from simulator.trace import load_trace  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(HERE), "traces", "openclaw-strip-history.jsonl")


def side_by_side(repeat: int, step):
    """Best seconds of ``step()`` at default thresholds and with rarer collections,
    run in alternation; the last result of each."""
    best = {"default": float("inf"), "rarer": float("inf")}
    results = {}
    for _ in range(repeat):
        for mode in best:
            gc.collect()
            with rarer_collections() if mode == "rarer" else contextlib.nullcontext():
                started = time.perf_counter()
                results[mode] = step()
                best[mode] = min(best[mode], time.perf_counter() - started)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=SHIPPED)
    parser.add_argument("--capacity", type=float, default=0.05, help="share of the working set (default 0.05)")
    parser.add_argument("--policies", default="lru,prefix-chain")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step in each mode (best is kept)")
    args = parser.parse_args()
    requests = load_trace(args.trace)
    print(f"{os.path.basename(args.trace)}: {len(requests):,} requests; best of {args.repeat}, "
          f"default thresholds {gc.get_threshold()} against rarer collections")
    timing, built = side_by_side(args.repeat, lambda: KeyedTrace.build(requests))
    print(f"  {'hashing':<22} {timing['default']:8.2f} s  {timing['rarer']:8.2f} s  "
          f"{timing['default'] / timing['rarer']:.2f}x")
    keys = built["rarer"]
    working_set = keys.working_set_bytes(ReplayConfig(1, "lru", PROFILES["ds4"]).entry_bytes)
    for policy in args.policies.split(","):
        config = ReplayConfig(capacity_bytes=int(working_set * args.capacity), policy=policy, profile=PROFILES["ds4"])
        timing, metrics = side_by_side(args.repeat, lambda: replay(None, config, keys=keys).as_dict())
        assert metrics["default"] == metrics["rarer"], f"{policy}: the collector changed a decision"
        print(f"  {policy + f' at {args.capacity:.0%}':<22} {timing['default']:8.2f} s  {timing['rarer']:8.2f} s  "
              f"{timing['default'] / timing['rarer']:.2f}x")


if __name__ == "__main__":
    main()
