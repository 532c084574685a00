"""Store three checkpoints of a prompt, rewrite its tail, and reload the longest prefix.

    python examples/quickstart.py [STORE_DIR]
"""

import shutil
import sys

import numpy as np

from kvstore import CheckpointStore

path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/kvstore-quickstart"
shutil.rmtree(path, ignore_errors=True)
rng = np.random.default_rng(0)
prompt = rng.integers(0, 150_000, 14_000, dtype=np.uint32)

with CheckpointStore(path, capacity_bytes=256 << 20, block_tokens=4096,
                     namespace="demo-model-fp16") as store:
    for n in (4096, 8192, 12288):
        kv_state = np.full((n // 64, 64), n, dtype=np.float16)  # stand-in for real KV tensors
        store.put(prompt[:n], kv_state)
    store.put(prompt, np.zeros(16, np.float16), tail=True)

    next_turn = prompt.copy()
    next_turn[10_000:] = rng.integers(0, 150_000, 4_000)  # the client rewrote the tail
    n, kv_state = store.load_longest(next_turn)
    print(f"next turn: reloaded {n} tokens ({kv_state.nbytes} bytes), prefill {len(next_turn) - n}")
    print(f"same prompt again: {store.lookup(prompt)}")
