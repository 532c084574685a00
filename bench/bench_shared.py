"""Shared-tier benchmark, side by side in one run: loading a 64 MiB checkpoint
from the shared tier (a real 3-master Redis Cluster on loopback, started
here) vs from the local disk tier (page cache dropped) vs prefilling it cold;
and what publishing adds to the engine's durable put.

    python bench/bench_shared.py [--mib 64] [--rounds 5] [--dir DIR]

Needs ``redis-server``/``redis-cli`` (Debian package ``redis-server``) and
redis-py (``pip install 'kvstore[shared]'``). Loopback is the best case for
the network: on a real fleet add the wire time (64 MiB is ~0.5 s at 1 Gb/s,
~0.05 s at 10 Gb/s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kvstore import CheckpointStore
from kvstore.pagecache import drop_page_cache
from kvstore.testing.redis_servers import RedisCluster
from simulator.costmodel import PROFILES

MiB = 1 << 20
BLOCK = 4096


def _median(times: list[float]) -> float:
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="checkpoint size in MiB (default 64)")
    parser.add_argument("--rounds", type=int, default=9, help="repetitions of each measurement (median shown; default 9)")
    parser.add_argument("--dir", default=None, help="where the stores and the cluster live (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-shared-", dir=args.dir))
    size = args.mib * MiB
    rng = np.random.default_rng(0)
    cluster = RedisCluster(root / "cluster", persist=False).start()
    try:
        shared = dict(shared_url=cluster.url, shared_capacity_bytes=(args.rounds + 1) * size)
        capacity = 4 * size * (args.rounds + 2)
        prompts = [list(rng.integers(0, 50_000, 2 * BLOCK)) for _ in range(args.rounds)]
        states = [rng.standard_normal(size // 2).astype(np.float16) for _ in range(args.rounds)]

        # -- publishing overhead: durable puts with and without a shared tier, interleaved
        plain_times, shared_times, publish_times = [], [], []
        with CheckpointStore(root / "plain", capacity, block_tokens=BLOCK, namespace="bench") as plain, \
                CheckpointStore(root / "a", capacity, block_tokens=BLOCK, namespace="bench", **shared) as a:
            for prompt, state in zip(prompts, states):
                started = time.perf_counter()
                plain.put(prompt[:BLOCK], state)
                plain_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                a.put(prompt[:BLOCK], state)
                shared_times.append(time.perf_counter() - started)
                a.flush()  # the background publish, timed apart
                publish_times.append(time.perf_counter() - started - shared_times[-1])
            published = a.stats()["tiers"]["shared"]

            # -- loads: local disk (page cache dropped) vs shared tier vs cold prefill
            disk_times, shared_read_times, hit_times = [], [], []
            for prompt in prompts:
                drop_page_cache(str(root / "a"))
                started = time.perf_counter()
                n, payload = a.load_longest(prompt)
                disk_times.append(time.perf_counter() - started)
                assert n == BLOCK and payload.nbytes == size
            tier = a._stack.shared
            for prompt in prompts:
                key = a.lookup(prompt).key
                started = time.perf_counter()
                header, payload = tier.read(key)
                shared_read_times.append(time.perf_counter() - started)
                assert payload.nbytes == size
            for i, prompt in enumerate(prompts):  # a whole shared hit in a fresh engine: lookup, read, copy to disk
                with CheckpointStore(root / f"b{i}", capacity, block_tokens=BLOCK, namespace="bench",
                                     **shared) as b:
                    started = time.perf_counter()
                    n, payload = b.load_longest(prompt)
                    hit_times.append(time.perf_counter() - started)
                    assert n == BLOCK and payload.nbytes == size
                    assert np.array_equal(payload, states[i])
                shutil.rmtree(root / f"b{i}")
    finally:
        cluster.stop()

    plain_put, shared_put = _median(plain_times), _median(shared_times)
    print(f"checkpoint: {args.mib} MiB, {args.rounds} rounds (medians), 3-master Redis Cluster on loopback")
    print()
    print(f"{'load':<50} {'seconds':>8} {'vs disk':>8}")
    disk = _median(disk_times)
    rows = [("local disk tier (page cache dropped)", disk),
            ("shared tier: read + verify chunks", _median(shared_read_times)),
            ("shared hit in a fresh engine (+ copy to disk)", _median(hit_times))]
    for name, profile in PROFILES.items():
        tokens = max(0, (size - profile.fixed_bytes) / profile.kv_bytes_per_token)
        rows.append((f"cold prefill, {name} profile ({tokens:,.0f} tokens)", profile.prefill_seconds(0, tokens)))
    for label, seconds in rows:
        print(f"{label:<50} {seconds:>8.3f} {seconds / disk:>7.2f}x")
    print()
    print(f"{'durable put':<50} {'seconds':>8}")
    print(f"{'without a shared tier':<50} {plain_put:>8.3f}")
    print(f"{'with a shared tier (publish queued)':<50} {shared_put:>8.3f}")
    print(f"{'added by publishing':<50} {(shared_put / plain_put - 1) * 100:>7.1f}%  (goal: <= 5%)")
    print(f"{'background publish, after the put returned':<50} {_median(publish_times):>8.3f}")
    print(f"published {published['local']['publishes']}, dropped {published['local']['drops']}")
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
