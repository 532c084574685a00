"""Classic baselines: ``fifo``, ``lfu``, ``gdsf`` and ``random``.

>>> sorted(cls.name for cls in (FIFOPolicy, LFUPolicy, GDSFPolicy, RandomPolicy))
['fifo', 'gdsf', 'lfu', 'random']
"""

from __future__ import annotations

import random

from .base import Policy, ScoredPolicy

__all__ = ["FIFOPolicy", "LFUPolicy", "GDSFPolicy", "RandomPolicy"]


class FIFOPolicy(ScoredPolicy):
    """First in, first out: hits change nothing."""

    name = "fifo"
    description = "first in, first out; hits change nothing"

    def score(self, key: str, now: float) -> float:
        return self.view.entry(key).inserted_at

    def on_hit(self, key: str, now: float) -> None:
        pass


class LFUPolicy(ScoredPolicy):
    """Least frequently used first; ties go to the least recently used.

    :param count_prefix_hits: count a hit through a deeper checkpoint too.
    """

    name = "lfu"
    description = "least frequently used first (ties: least recent); prefix hits count"

    def __init__(self, *, count_prefix_hits: bool = True) -> None:
        super().__init__()
        self.count_prefix_hits = bool(count_prefix_hits)
        self._uses: dict[str, tuple[int, float]] = {}

    def score(self, key: str, now: float) -> tuple[int, float]:
        return self._uses[key]

    def on_insert(self, key: str, now: float) -> None:
        self._uses[key] = (0, now)
        self._rescore(key, now)

    def on_hit(self, key: str, now: float) -> None:
        self._uses[key] = (self._uses[key][0] + 1, now)
        self._rescore(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.count_prefix_hits:
            self.on_hit(key, now)

    def on_remove(self, key: str) -> None:
        super().on_remove(key)
        self._uses.pop(key, None)


class GDSFPolicy(ScoredPolicy):
    """GreedyDual-Size-Frequency: ``H = L + frequency · cost / size``, lowest first.

    ``cost`` is the checkpoint's tokens (the prefill it saves); ``L`` (aging)
    rises to the ``H`` of each victim, so entries not hit lately sink.

    :param count_prefix_hits: count a hit through a deeper checkpoint too.
    """

    name = "gdsf"
    description = "GreedyDual-Size-Frequency: L + hits * tokens / bytes, with aging"

    def __init__(self, *, count_prefix_hits: bool = True) -> None:
        super().__init__()
        self.count_prefix_hits = bool(count_prefix_hits)
        self.inflation = 0.0
        self._freq: dict[str, int] = {}
        self._base: dict[str, float] = {}

    def score(self, key: str, now: float) -> float:
        entry = self.view.entry(key)
        return self._base[key] + self._freq[key] * entry.tokens / max(1, entry.size)

    def _touch(self, key: str, now: float, hit: bool) -> None:
        self._freq[key] = self._freq.get(key, 0) + 1
        self._base[key] = self.inflation
        self._rescore(key, now)

    def on_insert(self, key: str, now: float) -> None:
        self._freq[key] = 0
        self._touch(key, now, hit=False)

    def on_hit(self, key: str, now: float) -> None:
        self._touch(key, now, hit=True)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.count_prefix_hits:
            self._touch(key, now, hit=True)

    def victim(self, now: float) -> str | None:
        head = self._head()
        if head is None:
            return None
        (_, score), _, key = head
        self.inflation = max(self.inflation, score)
        return key

    def on_remove(self, key: str) -> None:
        super().on_remove(key)
        self._freq.pop(key, None)
        self._base.pop(key, None)


class RandomPolicy(Policy):
    """Evicts a uniformly random eligible checkpoint of the lowest priority
    present (seeded, so runs repeat).

    :param seed: seed of the policy's own random generator.
    """

    name = "random"
    description = "uniformly random eligible victim (seeded)"

    def __init__(self, *, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._buckets: dict[int, list[str]] = {}  # priority -> eligible keys
        self._slot: dict[str, tuple[int, int]] = {}  # key -> (priority, index in its bucket)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible and key not in self._slot:
            priority = self.view.entry(key).priority
            bucket = self._buckets.setdefault(priority, [])
            self._slot[key] = (priority, len(bucket))
            bucket.append(key)
        elif not eligible and key in self._slot:
            priority, index = self._slot.pop(key)
            bucket = self._buckets[priority]
            last = bucket.pop()
            if last != key:  # move the last key into the hole: O(1) removal
                bucket[index] = last
                self._slot[last] = (priority, index)
            if not bucket:
                del self._buckets[priority]

    def on_remove(self, key: str) -> None:
        self.on_eligible(key, False)

    def victim(self, now: float) -> str | None:
        if not self._buckets:
            return None
        bucket = self._buckets[min(self._buckets)]
        return bucket[self._rng.randrange(len(bucket))]

    def _check(self) -> None:
        for key, (priority, index) in self._slot.items():
            assert self._buckets[priority][index] == key
        assert sum(map(len, self._buckets.values())) == len(self._slot)
