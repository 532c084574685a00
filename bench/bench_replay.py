"""Replay speed of kvsim, side by side with libCacheSim, and a full sweep's wall time.

    .venv/bin/python bench/bench_replay.py [--trace FILE] [--rounds 5] [--sweep-requests N] [--jobs 2]

Part 1, on one trace (default: the shipped ``openclaw-strip-history``), with
its keys computed once:

- libCacheSim's LRU over ``kvsim export libcachesim`` of the trace, through
  its own C reader: object rows per second;
- kvsim's ``lru`` replaying the same trace: the same rows per second, and the
  ratio to libCacheSim's (goal: at least 0.1);
- kvsim's default ``prefix-chain``: its rate relative to ``lru`` (goal: at
  least 0.5), with its age buckets in the compiled index that ``pip install``
  builds, and in the pure-Python twin used where no C compiler was at hand
  (same decisions: the bench checks the metrics agree).

The three take turns for ``--rounds`` rounds (default 5) and each keeps its
fastest run, so that a shared machine's slow spells fall on all of them.
kvsim's replays run as every ``kvsim`` command runs them, with rarer cyclic
garbage collections (``simulator.collector``).

Part 2: ``kvsim sweep`` of a generated OpenClaw trace of about N requests
(default 100,000) over every online policy at 5%,10%,25%,50% with ``--jobs``,
run as a user runs it: wall time, the time to hash the trace's keys, the peak
memory of the sweep's largest process (each command runs under a wrapper of
its own, so the trace's generation is measured apart), and the time projected
linearly to 1,000,000 requests.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from policies.age_buckets import compiled  # noqa: E402
from policies.registry import online  # noqa: E402
from simulator.collector import rarer_collections  # noqa: E402
from simulator.costmodel import PROFILES  # noqa: E402
from simulator.interop import export_libcachesim  # noqa: E402
from simulator.keyed import KeyedTrace  # noqa: E402
from simulator.replay import Metrics, ReplayConfig, replay  # noqa: E402
from simulator.trace import load_trace, read_trace  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(HERE), "traces", "openclaw-strip-history.jsonl")


def seconds(fn) -> float:
    """Wall time of one call of ``fn``."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def replay_as_kvsim(config: ReplayConfig, keys: KeyedTrace) -> Metrics:
    """One replay under the collector thresholds every kvsim replay runs with."""
    with rarer_collections():
        return replay(None, config, keys=keys)


def part_rates(trace: str, share: float, rounds: int) -> None:
    import libcachesim as lcs

    requests = load_trace(trace)
    started = time.perf_counter()
    keys = KeyedTrace.build(requests)
    hashing = time.perf_counter() - started
    base = ReplayConfig(capacity_bytes=1, policy="lru", profile=PROFILES["ds4"])
    working_set = keys.working_set_bytes(base.entry_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "export.csv")
        with open(path, "w", newline="") as sink:
            rows = export_libcachesim(None, sink, base, keys=keys)
        params = lcs.ReaderInitParam(has_header=True, has_header_set=True, delimiter=",")
        params.time_field, params.obj_id_field, params.obj_size_field = 1, 2, 3
        capacity = int(working_set * share)
        config = {p: ReplayConfig(capacity_bytes=capacity, policy=p, profile=PROFILES["ds4"])
                  for p in ("lru", "prefix-chain")}
        config["prefix-chain, Python index"] = ReplayConfig(
            capacity_bytes=capacity, policy="prefix-chain", profile=PROFILES["ds4"], policy_options={"native": False})
        if compiled() is None:
            sys.exit("the compiled age-bucket index was not built: reinstall with a C compiler (pip install -e .)")
        same = {name: replay_as_kvsim(c, keys) for name, c in config.items() if name.startswith("prefix")}
        if len(set(map(repr, same.values()))) != 1:
            sys.exit(f"the two age-bucket indexes disagree: {same}")
        budget = config["lru"].budget()

        def libcachesim_lru():
            reader = lcs.TraceReader(path, lcs.TraceType.CSV_TRACE, reader_init_params=params)
            lcs.LRU(cache_size=budget).process_trace(reader)

        # the three take turns, round after round, and each keeps its fastest: a
        # shared machine that slows down for a while slows all three alike
        runs = {"libCacheSim": libcachesim_lru,
                **{p: (lambda p=p: replay_as_kvsim(config[p], keys)) for p in config}}
        fastest = {name: math.inf for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                fastest[name] = min(fastest[name], seconds(run))
    theirs = fastest.pop("libCacheSim")
    ours = fastest
    print(f"trace {os.path.basename(trace)}: {len(requests):,} requests, {rows:,} checkpoint rows, "
          f"capacity {share:.0%} of the working set; keys hashed once in {hashing:.2f} s")
    print(f"  libCacheSim LRU (C reader + cache):  {rows / theirs:>10,.0f} rows/s")
    print(f"  kvsim lru (keys computed):           {rows / ours['lru']:>10,.0f} rows/s   "
          f"ratio to libCacheSim {theirs / ours['lru']:.2f}  (goal >= 0.10)")
    print(f"  kvsim prefix-chain:                  {rows / ours['prefix-chain']:>10,.0f} rows/s   "
          f"ratio to kvsim lru {ours['lru'] / ours['prefix-chain']:.2f}  (goal >= 0.50)")
    slow = ours["prefix-chain, Python index"]
    print(f"  kvsim prefix-chain, Python index:    {rows / slow:>10,.0f} rows/s   "
          f"ratio to kvsim lru {ours['lru'] / slow:.2f}  (where no C compiler was at hand)")


_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE)
sys.stdout.buffer.write(done.stdout)
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(done.returncode)
"""


def run_measured(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` under a wrapper process of its own; return it and the peak
    resident memory, in MiB, of the largest of its processes (the command, and
    the workers it waited for)."""
    with tempfile.NamedTemporaryFile("r") as peak:
        done = subprocess.run([sys.executable, "-c", _MEASURE, peak.name, *command], check=True,
                              stdout=subprocess.PIPE, **kwargs)
        return done, int(peak.read()) / 1024


def part_sweep(requests: int, jobs: int) -> None:
    kvsim = [sys.executable, "-m", "simulator.cli"]
    sessions = max(1, requests // 28)  # about 28 requests per generated session
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "openclaw.jsonl")
        started = time.perf_counter()
        _, generator_peak = run_measured([*kvsim, "generate", "openclaw", "-o", trace, "--sessions", str(sessions),
                                          "--seed", "11", "--session-gap", "30"], cwd=os.path.dirname(HERE))
        generated = time.perf_counter() - started
        count = sum(1 for _ in open(trace)) - 1
        started = time.perf_counter()
        with rarer_collections():  # (as the sweep hashes: streaming, in --jobs processes)
            KeyedTrace.build(read_trace(trace), jobs=jobs)
        hashing = time.perf_counter() - started
        policies = ",".join(online())
        started = time.perf_counter()
        done, sweep_peak = run_measured([*kvsim, "sweep", trace, "--capacities", "5%,10%,25%,50%", "--policies",
                                         policies, "--jobs", str(jobs), "--json"], cwd=os.path.dirname(HERE))
        wall = time.perf_counter() - started
    print(f"sweep of a generated OpenClaw trace: {count:,} requests (generated in {generated:.0f} s), "
          f"{len(online())} online policies x 4 capacities, --jobs {jobs}")
    print(f"  wall time {wall / 60:.1f} min (of which hashing the keys once: {hashing:.0f} s); "
          f"projected for 1,000,000 requests: {wall * 1_000_000 / count / 60:.0f} min (goal < 30)")
    print(f"  peak resident memory: {sweep_peak:,.0f} MiB in the largest process of the sweep (it and its "
          f"workers); {generator_peak:,.0f} MiB generating the trace; results {len(done.stdout):,} bytes of JSON")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=SHIPPED, help="trace for the rates (default: shipped strip-history)")
    parser.add_argument("--capacity", type=float, default=0.05, help="share of the working set (default 0.05)")
    parser.add_argument("--sweep-requests", type=int, default=100_000,
                        help="requests of the generated sweep trace (0: skip part 2)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of part 1: libCacheSim, lru and prefix-chain (with either index) each "
                             "run once a round, in turn, and keep their fastest (default 5)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    part_rates(args.trace, args.capacity, args.rounds)
    if args.sweep_requests:
        part_sweep(args.sweep_requests, args.jobs)


if __name__ == "__main__":
    main()
