"""Turn prompt spans into real token arrays, so keys are computed exactly as
the store computes them (``kvstore.keys``).

Content ``c`` is a fixed pseudo-random sequence of uint32 tokens seeded by a
hash of ``c``; the span ``[c, n]`` is its first ``n`` tokens. Arrays are cached
(bounded), since system prompts and histories recur in every request.

>>> m = TokenMaterializer()
>>> a = m.tokens((("sys", 8), ("u1", 4)))
>>> b = m.tokens((("sys", 8), ("u2", 4)))
>>> bool((a[:8] == b[:8]).all()), bool((a[8:] == b[8:]).any())
(True, False)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

__all__ = ["TokenMaterializer"]


class TokenMaterializer:
    """Deterministic tokens for spans; holds at most ``cache_tokens`` tokens of contents."""

    def __init__(self, cache_tokens: int = 64_000_000) -> None:
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached = 0
        self.cache_tokens = cache_tokens

    def content(self, content_id: str, n_tokens: int) -> np.ndarray:
        arr = self._cache.get(content_id)
        if arr is not None and len(arr) >= n_tokens:
            self._cache.move_to_end(content_id)
            return arr[:n_tokens]
        seed = int.from_bytes(hashlib.blake2b(content_id.encode(), digest_size=8).digest(), "little")
        size = max(n_tokens, 0 if arr is None else len(arr))
        arr = np.random.Generator(np.random.PCG64(seed)).integers(0, 2**32, size=size, dtype=np.uint32)
        if content_id in self._cache:
            self._cached -= len(self._cache.pop(content_id))
        self._cache[content_id] = arr
        self._cached += len(arr)
        while self._cached > self.cache_tokens and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)
        return arr[:n_tokens]

    def tokens(self, spans: tuple[tuple[str, int], ...]) -> np.ndarray:
        """The prompt's tokens (a new array)."""
        if len(spans) == 1:
            return self.content(*spans[0]).copy()
        return np.concatenate([self.content(c, n) for c, n in spans])
