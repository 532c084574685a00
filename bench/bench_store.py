"""Store benchmark: every figure is a ratio taken side by side in one run.

    python bench/bench_store.py [--dir DIR] [--rounds N] [--skip-1gib]

- put / load throughput of 64 MiB payloads vs writing (write + fsync) and
  reading the same bytes with plain files in the same directory;
- lookup of a 131,072-token prompt vs only hashing its 512 KiB;
- peak extra memory (tracemalloc) while putting and loading a 1 GiB numpy
  payload, in units of the payload size.

Rounds alternate store and baseline so that drift on a shared machine hits
both alike; medians are reported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc

import numpy as np

from kvstore import CheckpointStore
from kvstore.keys import Namespace

MiB = 1 << 20


def plain_write(path: str, data: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = data
        while view.nbytes:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_read(path: str, size: int) -> bytearray:
    buf = bytearray(size)
    with open(path, "rb", buffering=0) as fh:
        fh.readinto(buf)
    return buf


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_throughput(workdir: str, rounds: int) -> dict[str, float]:
    payload = np.random.default_rng(0).integers(0, 255, 64 * MiB, dtype=np.uint8)
    view = memoryview(payload)
    block = 4096
    store = CheckpointStore(os.path.join(workdir, "store"), capacity_bytes=64 * 1024 * MiB,
                            block_tokens=block, namespace="bench")
    plain_dir = os.path.join(workdir, "plain")
    os.makedirs(plain_dir)
    put_s, putp_s, load_s, loadp_s = [], [], [], []
    for r in range(rounds):
        tokens = np.arange(r * block, (r + 1) * block, dtype=np.uint32)
        put_s.append(timed(lambda: store.put(tokens, payload)))
        path = os.path.join(plain_dir, f"{r}.bin")
        putp_s.append(timed(lambda: plain_write(path, view)))
        match = store.lookup(tokens)
        load_s.append(timed(lambda: store.load(match)))
        loadp_s.append(timed(lambda: plain_read(path, payload.nbytes)))
    store.close()
    mb = payload.nbytes / MiB
    return {
        "put MiB/s": mb / statistics.median(put_s),
        "plain write+fsync MiB/s": mb / statistics.median(putp_s),
        "put ratio": statistics.median(putp_s) / statistics.median(put_s),
        "load MiB/s": mb / statistics.median(load_s),
        "plain read MiB/s": mb / statistics.median(loadp_s),
        "load ratio": statistics.median(loadp_s) / statistics.median(load_s),
    }


def bench_lookup(workdir: str, rounds: int) -> dict[str, float]:
    tokens = np.random.default_rng(1).integers(0, 150_000, 131_072, dtype=np.uint32)
    ns = Namespace("bench")
    store = CheckpointStore(os.path.join(workdir, "lookup"), capacity_bytes=1024 * MiB,
                            block_tokens=4096, namespace="bench")
    for n in range(4096, 65_537, 4096):  # half the prompt is stored, as after a divergence
        store.put(tokens[:n], b"x")
    raw = tokens.tobytes()
    look, hash_only = [], []
    for _ in range(rounds * 20):
        look.append(timed(lambda: store.lookup(tokens)))
        hash_only.append(timed(lambda: hashlib.sha1(ns.salt + raw).digest()))
    assert store.lookup(tokens).tokens == 65_536
    store.close()
    return {
        "lookup ms": statistics.median(look) * 1e3,
        "hash only ms": statistics.median(hash_only) * 1e3,
        "lookup / hash ratio": statistics.median(look) / statistics.median(hash_only),
    }


def bench_memory(workdir: str) -> dict[str, float]:
    payload = np.ones(1024 * MiB // 2, dtype=np.float16)  # 1 GiB
    tokens = np.arange(4096, dtype=np.uint32)
    store = CheckpointStore(os.path.join(workdir, "memory"), capacity_bytes=4 * 1024 * MiB,
                            block_tokens=4096, namespace="bench")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    store.put(tokens, payload)
    put_peak = tracemalloc.get_traced_memory()[1] - base
    match = store.lookup(tokens)
    del payload
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    loaded = store.load(match)
    load_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert loaded.nbytes == 1024 * MiB and loaded.dtype == np.float16
    store.close()
    size = loaded.nbytes
    return {
        "put: extra memory / payload": put_peak / size,
        "load: memory / payload (the result itself is 1.0)": load_peak / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where to write (default: a temp dir under /tmp)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-1gib", action="store_true", help="skip the 1 GiB memory measurement")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(dir=args.dir, prefix="kvstore-bench-")
    try:
        results = {}
        results.update(bench_throughput(workdir, args.rounds))
        results.update(bench_lookup(workdir, args.rounds))
        if not args.skip_1gib:
            results.update(bench_memory(workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:10.3f}")


if __name__ == "__main__":
    main()
