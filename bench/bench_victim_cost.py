"""What a policy's victim search costs, against the rest of a replay.

    .venv/bin/python bench/bench_victim_cost.py [--trace FILE] [--capacity 0.05] [--policy prefix-chain]

Replays one trace (default: the shipped ``openclaw-strip-history``, keys
computed once) three ways, each the best of five, side by side with ``lru``:

1. the policy as it is;
2. the same policy, but ``victim()`` answers from a list of the victims run 1
   chose: every other hook still runs, and every decision is the same (the
   metrics are checked equal);
3. a policy that does nothing but answer from that list: the replay loop and
   the eviction manager alone.

The difference between 1 and 2 is the victim search; between 2 and 3, the
bookkeeping the policy's hooks do on every insert, hit and eviction. Every
replay runs with the rarer cyclic garbage collections of ``kvsim``
(``simulator.collector``), as in ``bench_replay.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from policies.base import Policy  # noqa: E402
from policies.registry import resolve  # noqa: E402
from simulator.collector import rarer_collections  # noqa: E402
from simulator.costmodel import PROFILES  # noqa: E402
from simulator.keyed import KeyedTrace  # noqa: E402
from simulator.replay import ReplayConfig, replay  # noqa: E402
from simulator.trace import load_trace  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(HERE), "traces", "openclaw-strip-history.jsonl")


class Recorder:
    """Wraps a policy's ``victim`` to note every answer."""

    def __init__(self, policy: Policy) -> None:
        self.victims: list[str | None] = []
        answer = policy.victim

        def victim(now: float) -> str | None:
            key = answer(now)
            self.victims.append(key)
            return key

        policy.victim = victim  # type: ignore[method-assign]


def replaying(policy: Policy, victims: list[str | None]) -> Policy:
    """``policy`` with ``victim()`` answering from ``victims``, in order."""
    answers = iter(victims)
    policy.victim = lambda now: next(answers)  # type: ignore[method-assign]
    return policy


class Idle(Policy):
    """Hears every hook and does nothing (the victims come from a list)."""

    name = "idle"

    def on_insert(self, key, now):
        pass

    def on_hit(self, key, now):
        pass

    def on_prefix_hit(self, key, now):
        pass

    def on_eligible(self, key, eligible):
        pass

    def on_evict(self, key, now):
        pass

    def on_remove(self, key):
        pass


def best_of(n: int, run) -> tuple[float, dict]:
    best, metrics = float("inf"), None
    for _ in range(n):
        started = time.perf_counter()
        metrics = run()
        best = min(best, time.perf_counter() - started)
    return best, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=SHIPPED)
    parser.add_argument("--capacity", type=float, default=0.05, help="share of the working set (default 0.05)")
    parser.add_argument("--policy", default="prefix-chain")
    args = parser.parse_args()
    keys = KeyedTrace.build(load_trace(args.trace))
    working_set = keys.working_set_bytes(ReplayConfig(1, "lru", PROFILES["ds4"]).entry_bytes)

    def run(policy) -> dict:
        config = ReplayConfig(capacity_bytes=int(working_set * args.capacity), policy=policy, profile=PROFILES["ds4"])
        with rarer_collections():  # (as every kvsim replay, and bench_replay.py, runs)
            return replay(None, config, keys=keys).as_dict()

    recorded = resolve(args.policy)
    recorder = Recorder(recorded)
    reference = run(recorded)
    evictions = sum(v is not None for v in recorder.victims)
    lru, _ = best_of(5, lambda: run("lru"))
    full, metrics = best_of(5, lambda: run(args.policy))
    free, same = best_of(5, lambda: run(replaying(resolve(args.policy), recorder.victims)))
    idle, alone = best_of(5, lambda: run(replaying(Idle(), recorder.victims)))
    assert metrics == same == alone == reference, "the recorded victims did not give the same decisions"
    print(f"{os.path.basename(args.trace)} at {args.capacity:.0%}: {evictions:,} evictions; best of 5 each")
    print(f"  lru                                   {lru * 1e3:8.1f} ms")
    print(f"  {args.policy:<37} {full * 1e3:8.1f} ms   {lru / full:.2f}x lru")
    print(f"  {args.policy + ', victims free':<37} {free * 1e3:8.1f} ms   {lru / free:.2f}x lru   "
          f"(victim search {(full - free) / evictions * 1e6:.1f} us per eviction)")
    print(f"  {'every policy hook free':<37} {idle * 1e3:8.1f} ms   {lru / idle:.2f}x lru   "
          f"(the policy's bookkeeping {(free - idle) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
