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
import sys
from collections import OrderedDict

import numpy as np

__all__ = ["TokenMaterializer"]


def _draw(seed: int, size: int) -> np.ndarray:
    """``size`` tokens of PCG64(``seed``): exactly what
    ``Generator(PCG64(seed)).integers(0, 2**32, size, dtype=uint32)`` returns
    (its 32-bit draws are the halves of the 64-bit outputs, low half first),
    read from the raw outputs without the Generator's per-call overhead.

    >>> seed = 12345
    >>> bool((_draw(seed, 5) == np.random.Generator(np.random.PCG64(seed)).integers(
    ...     0, 2**32, size=5, dtype=np.uint32)).all())
    True
    """
    if sys.byteorder != "little":  # (the halves' order in memory would differ)
        return np.random.Generator(np.random.PCG64(seed)).integers(0, 2**32, size=size, dtype=np.uint32)
    return np.random.PCG64(seed).random_raw((size + 1) // 2).view(np.uint32)[:size]


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
        arr = _draw(seed, size)
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
