"""Hypothesis strategies for realistic KV-cache workloads.

>>> from hypothesis import given
>>> @given(prompt_families(block_tokens=4))
... def test(prompts):
...     assert all(len(p) > 0 for p in prompts)
>>> test()
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = ["prompt_families", "payloads"]


@st.composite
def prompt_families(draw, block_tokens: int = 4, max_prompts: int = 8) -> list[list[int]]:
    """Prompts that share prefixes the way agent sessions do: a common system
    prompt, branches per session, growing tapes, rewritten tails and
    compactions (a summary right after the system prompt)."""
    system = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3 * block_tokens))
    prompts: list[list[int]] = []
    tape = list(system)
    for _ in range(draw(st.integers(1, max_prompts))):
        move = draw(st.sampled_from(["grow", "grow", "rewrite-tail", "new-session", "compact"]))
        extra = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=2 * block_tokens))
        if move == "grow":
            tape = tape + extra
        elif move == "rewrite-tail" and len(tape) > len(system):
            cut = draw(st.integers(len(system), len(tape) - 1))
            tape = tape[:cut] + extra
        elif move == "new-session":
            tape = list(system) + extra
        else:
            tape = list(system) + [0xC0FFEE] + extra
        prompts.append(list(tape))
    return prompts


def payloads(max_bytes: int = 20_000) -> st.SearchStrategy:
    """Bytes, bytearrays and numpy arrays of varied dtypes and shapes."""
    arrays = st.tuples(st.sampled_from(["<f2", "<f4", "|i1", "|u1", "<u4", "<i8", "<c8"]),
                       st.integers(0, max_bytes // 8), st.integers(1, 4)).map(
        lambda t: np.arange(t[1] - t[1] % t[2], dtype=t[0]).reshape(t[2], -1))
    return st.one_of(st.binary(max_size=max_bytes), st.binary(max_size=max_bytes).map(bytearray), arrays)
