"""The DS4 #444 report, end to end through the real CheckpointStore.

The trace of ``kvsim generate ds4-issue-444`` is scaled down 64x in tokens
(block 64 instead of 4096) with the same ratio of fixed to per-token bytes as
the DS4 files (22 MiB fixed + 54 MiB per 4096 tokens) and the same ratio of
capacity to file sizes as the 256 GB store. A tiny engine loop does what DS4
does: reload the longest stored prefix, then write a checkpoint at every block
boundary past it and one at the end of the prompt.
"""

import time

import numpy as np
import pytest

from kvstore import CheckpointStore
from simulator.generators.ds4 import Ds4Config, generate
from simulator.tokens import TokenMaterializer

SCALE = 64
BLOCK = 4096 // SCALE
BYTES_PER_TOKEN = 250  # headers (~0.3 KB) stay as negligible as beside 76 MiB files
FIXED = int(22 / 54 * 4096 / SCALE * BYTES_PER_TOKEN)  # keeps DS4's fixed : per-token ratio
PAYLOAD_BUDGET = int(256e9 / (54 * 2**20 / 4096) / SCALE * BYTES_PER_TOKEN)
INDEX = 16 << 20  # roomy, like the 1 GiB index of a 256 GB store: evictions are for bytes only


def scaled(spans):
    return tuple((content, max(1, n // SCALE)) for content, n in spans)


def engine_turns(store_dir, policy, clock="injected"):
    tokens_of = TokenMaterializer()
    loaded_per_live_turn = []
    # injected: a minute per store call; wall: every checkpoint seconds apart, as in a real engine
    clock = iter(np.arange(0.0, 1e9, 60.0)).__next__ if clock == "injected" else time.time
    with CheckpointStore(store_dir, capacity_bytes=PAYLOAD_BUDGET + INDEX, index_bytes=INDEX,
                         block_tokens=BLOCK, namespace="ds4-scaled", policy=policy, clock=clock) as store:
        for request in generate(Ds4Config()):
            tokens = tokens_of.tokens(scaled(request.prompt))
            loaded, _ = store.load_longest(tokens)
            for n in range((loaded // BLOCK + 1) * BLOCK, len(tokens) + 1, BLOCK):
                store.put(tokens[:n], bytes(FIXED + n * BYTES_PER_TOKEN))
            if len(tokens) % BLOCK:
                store.put(tokens, bytes(FIXED + len(tokens) * BYTES_PER_TOKEN), tail=True)
            if not request.tags.get("warmup"):
                loaded_per_live_turn.append(loaded)
        stats = store.stats()
        store._check()
    return loaded_per_live_turn, stats


@pytest.mark.parametrize("policy, expected, clock", [
    ("ds4-density", 0, "injected"),  # its failure needs stale files hours old: not on a seconds-long run
    ("prefix-chain", 32_768 // SCALE, "injected"),
    ("prefix-chain", 32_768 // SCALE, "wall"),  # all checkpoints seconds apart, as in a real engine
    ("lru", 32_768 // SCALE, "wall"),
])
def test_ds4_issue_444_through_the_real_store(tmp_path, policy, expected, clock):
    loaded, stats = engine_turns(str(tmp_path / policy), policy, clock)
    assert stats["evictions"] > 500 and stats["entries"] > 100  # at capacity, hundreds of files
    assert loaded[0] == 0  # the live session's first turn is cold for everyone
    assert loaded[1:] == [expected] * (len(loaded) - 1)
