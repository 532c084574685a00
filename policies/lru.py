"""``lru``: evict the checkpoint whose last use is oldest.

A use is an insert, a hit, or (with ``count_prefix_hits=True``, the default) a
prefix hit through a deeper checkpoint of the same chain.

>>> LRUPolicy().name
'lru'
"""

from __future__ import annotations

from .base import ScoredPolicy

__all__ = ["LRUPolicy"]


class LRUPolicy(ScoredPolicy):
    """Least recently used first.

    :param count_prefix_hits: also refresh a checkpoint when a deeper one of its
        chain is hit (it served those tokens too).
    """

    name = "lru"
    description = "least recently used first; prefix hits refresh ancestors"

    def __init__(self, *, count_prefix_hits: bool = True) -> None:
        super().__init__()
        self.count_prefix_hits = bool(count_prefix_hits)
        self._last_use: dict[str, float] = {}

    def score(self, key: str, now: float) -> float:
        return self._last_use[key]

    def on_insert(self, key: str, now: float) -> None:
        self._last_use[key] = now
        super().on_insert(key, now)

    def on_hit(self, key: str, now: float) -> None:
        self._last_use[key] = now
        self._rescore(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.count_prefix_hits:
            self.on_hit(key, now)

    def on_remove(self, key: str) -> None:
        super().on_remove(key)
        self._last_use.pop(key, None)
