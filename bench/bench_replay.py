"""Replay speed and memory of the simulator on a large generated trace.

    python bench/bench_replay.py [--requests N] [--policy NAME] [--capacity 5%]

Generates an OpenClaw-like trace of about N requests (default 100,000) into a
temp file, then replays it streaming through the eviction manager, printing
requests per second, time per request relative to only hashing its prompt
(the floor: keys must be computed), the projected time for 1,000,000 requests
and the peak resident memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time

from kvstore.keys import Namespace
from simulator.costmodel import PROFILES
from simulator.generators.openclaw import OpenClawConfig, generate
from simulator.replay import ReplayConfig, replay
from simulator.sweep import resolve_capacity
from simulator.tokens import TokenMaterializer
from simulator.trace import read_trace, write_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--policy", default="prefix-chain")
    parser.add_argument("--capacity", default="2TiB")
    args = parser.parse_args()
    sessions = max(1, args.requests // 27)  # about 27 requests per generated session
    path = os.path.join(tempfile.mkdtemp(prefix="kvsim-bench-"), "trace.jsonl")
    started = time.perf_counter()
    count = write_trace(path, generate(OpenClawConfig(sessions=sessions, session_gap_s=30, seed=1)))
    print(f"generated {count:,} requests in {time.perf_counter() - started:.1f} s")

    ns = Namespace("kvsim")
    tokens_of = TokenMaterializer()
    started = time.perf_counter()
    for request in read_trace(path):
        hashlib.sha1(ns.salt + tokens_of.tokens(request.prompt).tobytes()).digest()
    hash_only = time.perf_counter() - started

    config = ReplayConfig(capacity_bytes=resolve_capacity(args.capacity, None), policy=args.policy,
                          profile=PROFILES["ds4"])
    started = time.perf_counter()
    metrics = replay(read_trace(path), config)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"replayed {metrics.requests:,} requests with {args.policy} at {args.capacity}: {elapsed:.1f} s, "
          f"{metrics.requests / elapsed:,.0f} requests/s, {metrics.evictions:,} evictions")
    print(f"replay / (read + materialise + hash only): {elapsed / hash_only:.2f}x")
    print(f"projected for 1,000,000 requests: {1_000_000 / (metrics.requests / elapsed) / 60:.1f} min")
    print(f"peak resident memory: {peak_mib:,.0f} MiB")
    os.unlink(path)


if __name__ == "__main__":
    main()
