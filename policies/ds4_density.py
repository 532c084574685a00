"""``ds4-density``: the eviction score of the DS4 engine, kept faithful.

``score = (effective_hits + 1) * tokens / file_bytes``, lowest evicted first,
where ``effective_hits`` decays with a half-life (6 hours by default) since the
last hit, and ties go to the older last use. Because every file of one model
has about the same bytes per token plus a fixed overhead, the density grows
with length: short prefixes are evicted first. They are exactly the files that
still match after an agent client rewrites the tail of its prompt, which is the
failure this policy exists to reproduce (see the DS4 #444 field report).

The engine's ``priority`` is a strict tier above the score (lowest first).
The engine writes the new file before evicting and never evicts the file just
written; here eviction runs before the write, so the new file is never a
candidate either.

Victim choice is exact and usually O(log n): entries are kept sorted by their
*undecayed floor* ``tokens / bytes`` (a lower bound of the score), and the scan
stops as soon as that bound exceeds the best score found.

>>> Ds4DensityPolicy(half_life_s=3600).half_life_s
3600.0
"""

from __future__ import annotations

from sortedcontainers import SortedList

from .base import Policy

__all__ = ["Ds4DensityPolicy"]


class Ds4DensityPolicy(Policy):
    """``(hits + 1) * tokens / bytes`` with decaying hits.

    :param half_life_s: half-life of a hit, in seconds (default 6 hours).
    :param count_prefix_hits: count a hit on a deeper checkpoint as a hit on its
        stored ancestors too (DS4 does not: default ``False``).
    """

    name = "ds4-density"
    description = "DS4's (hits+1)*tokens/bytes, hits decaying (6 h half-life); evicts short prefixes first"

    def __init__(self, *, half_life_s: float = 6 * 3600.0, count_prefix_hits: bool = False) -> None:
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s!r}")
        self.half_life_s = float(half_life_s)
        self.count_prefix_hits = bool(count_prefix_hits)
        self._hits: dict[str, tuple[float, float]] = {}  # key -> (hits at t, t)
        self._last_use: dict[str, float] = {}
        self._density: dict[str, float] = {}
        self._by_density: SortedList = SortedList()  # (priority, density, last_use, key) of eligible keys
        self._priority: dict[str, int] = {}

    def _effective_hits(self, key: str, now: float) -> float:
        hits, at = self._hits.get(key, (0.0, now))
        if hits == 0.0:
            return 0.0
        return hits * 0.5 ** (max(0.0, now - at) / self.half_life_s)

    def score(self, key: str, now: float) -> float:
        """The engine's score of ``key`` at ``now``."""
        return (self._effective_hits(key, now) + 1.0) * self._density[key]

    def on_insert(self, key: str, now: float) -> None:
        entry = self.view.entry(key)
        self._density[key] = entry.tokens / max(1, entry.size)
        self._priority[key] = entry.priority
        self._last_use[key] = now

    def _touch(self, key: str, now: float) -> None:
        eligible = self._unlist(key)
        self._hits[key] = (self._effective_hits(key, now) + 1.0, now)
        self._last_use[key] = now
        if eligible:
            self._by_density.add((self._priority[key], self._density[key], now, key))

    def on_hit(self, key: str, now: float) -> None:
        self._touch(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.count_prefix_hits:
            self._touch(key, now)

    def _unlist(self, key: str) -> bool:
        item = (self._priority[key], self._density[key], self._last_use[key], key)
        if item in self._by_density:
            self._by_density.remove(item)
            return True
        return False

    def on_eligible(self, key: str, eligible: bool) -> None:
        self._unlist(key)
        if eligible:
            self._by_density.add((self._priority[key], self._density[key], self._last_use[key], key))

    def on_remove(self, key: str) -> None:
        self._unlist(key)
        self._hits.pop(key, None)
        self._last_use.pop(key, None)
        self._density.pop(key, None)
        self._priority.pop(key, None)

    def victim(self, now: float) -> str | None:
        best: tuple[int, float, float, str] | None = None
        for priority, density, last_use, key in self._by_density:
            if best is not None and (priority, density) > best[:2]:
                break  # the score is never below the density: nothing further can win
            candidate = (priority, self.score(key, now), last_use, key)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else best[3]

    def _check(self) -> None:
        for priority, density, last_use, key in self._by_density:
            assert self._density[key] == density and self._last_use[key] == last_use, key
            assert self._priority[key] == priority, key
        assert set(self._density) == set(self._last_use)
