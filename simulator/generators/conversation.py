"""Multi-turn chat conversations written in the Mooncake/FAST'25 JSONL format.

A stand-in with the shape of the public conversation trace (one shared first
block, then per conversation a history that every follow-up turn extends by
the previous answer and a new question), for use with ``kvsim import
mooncake``: ``timestamp`` in ms, ``input_length``, ``output_length``,
``hash_ids`` of ``block_size``-token blocks (a block's id depends on the whole
prefix, as in the real trace, so a partial last block gets a fresh id).

>>> lines = list(generate_mooncake_lines(ConversationConfig(conversations=3, seed=1)))
>>> all({"timestamp", "input_length", "output_length", "hash_ids"} <= set(l) for l in lines)
True
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ConversationConfig", "generate_mooncake_lines"]


@dataclass
class ConversationConfig:
    conversations: int = 400
    turns: tuple[int, int] = (1, 8)
    first_tokens: tuple[int, int] = (900, 30_000)
    question_tokens: tuple[int, int] = (20, 1_500)
    answer_tokens: tuple[int, int] = (50, 900)
    block_size: int = 512
    shared_tokens: int = 512
    arrival_gap_ms: float = 3_000.0
    think_time_ms: float = 120_000.0
    seed: int = 0


def generate_mooncake_lines(cfg: ConversationConfig) -> Iterator[dict]:
    rng = random.Random(cfg.seed)
    next_id = iter(range(1, 10**12))
    events: list[tuple[float, int, dict]] = []
    start = 0.0
    for conv in range(cfg.conversations):
        tokens = 0
        ids: list[int] = []  # ids of the full blocks of the history so far
        t = start
        history = cfg.shared_tokens + rng.randint(*cfg.first_tokens)
        for _ in range(rng.randint(*cfg.turns)):
            tokens = history
            full, rest = divmod(tokens, cfg.block_size)
            while len(ids) < full:
                ids.append(0 if not ids and cfg.shared_tokens >= cfg.block_size else next(next_id))
            hash_ids = ids[:full] + ([next(next_id)] if rest else [])
            answer = rng.randint(*cfg.answer_tokens)
            events.append((t, len(events), {"timestamp": int(t), "input_length": tokens,
                                            "output_length": answer, "hash_ids": hash_ids}))
            history = tokens + answer + rng.randint(*cfg.question_tokens)
            t += rng.expovariate(1.0 / cfg.think_time_ms) + 5_000
        start += rng.expovariate(1.0 / cfg.arrival_gap_ms)
    events.sort(key=lambda e: (e[0], e[1]))
    for _, _, doc in events:
        yield doc
