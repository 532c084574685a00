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

Victim choice is exact: every eligible checkpoint's score is computed with
numpy over arrays of densities, hits and last uses (O(n) in C per victim),
and the few within a rounding error of the lowest are scored again exactly,
in Python, to break ties as the engine does (older last use, then key).
Scanning in density order instead, stopping once the density alone passes
the best score, visits every hit checkpoint shorter than the winner on each
victim: quadratic on agent traces, whose short prefixes are the hit ones.

>>> Ds4DensityPolicy(half_life_s=3600).half_life_s
3600.0
"""

from __future__ import annotations

import numpy as np

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
        self._priority: dict[str, int] = {}
        # eligible keys in slots of parallel arrays (a free list reuses slots)
        self._slot: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: list[int] = []
        self._arrays = {"density": np.zeros(0), "hits": np.zeros(0), "hit_at": np.zeros(0),
                        "last_use": np.zeros(0), "priority": np.zeros(0, dtype=np.int64),
                        "used": np.zeros(0, dtype=bool)}

    def _effective_hits(self, key: str, now: float) -> float:
        hits, at = self._hits.get(key, (0.0, now))
        if hits == 0.0:
            return 0.0
        return hits * 0.5 ** (max(0.0, now - at) / self.half_life_s)

    def score(self, key: str, now: float) -> float:
        """The engine's score of ``key`` at ``now``."""
        return (self._effective_hits(key, now) + 1.0) * self._density[key]

    # ---------------------------------------------------------------- slots
    def _place(self, key: str) -> None:
        """Make ``key`` a candidate. O(1) amortised."""
        arrays = self._arrays
        if not self._free:
            old = len(self._keys)
            new = max(64, 2 * old)
            self._keys.extend([None] * (new - old))
            self._free.extend(range(new - 1, old - 1, -1))
            for name, array in arrays.items():
                grown = np.zeros(new, dtype=array.dtype)
                grown[:old] = array
                arrays[name] = grown
        slot = self._slot[key] = self._free.pop()
        self._keys[slot] = key
        arrays["used"][slot] = True
        arrays["density"][slot] = self._density[key]
        arrays["priority"][slot] = self._priority[key]
        self._refresh(key)

    def _refresh(self, key: str) -> None:
        slot = self._slot.get(key)
        if slot is not None:
            hits, at = self._hits.get(key, (0.0, 0.0))
            self._arrays["hits"][slot], self._arrays["hit_at"][slot] = hits, at
            self._arrays["last_use"][slot] = self._last_use[key]

    def _vacate(self, key: str) -> None:
        slot = self._slot.pop(key, None)
        if slot is not None:
            self._arrays["used"][slot] = False
            self._keys[slot] = None
            self._free.append(slot)

    # --------------------------------------------------------------- events
    def on_insert(self, key: str, now: float) -> None:
        entry = self.view.entry(key)
        self._density[key] = entry.tokens / max(1, entry.size)
        self._priority[key] = entry.priority
        self._last_use[key] = now

    def _touch(self, key: str, now: float) -> None:
        self._hits[key] = (self._effective_hits(key, now) + 1.0, now)
        self._last_use[key] = now
        self._refresh(key)

    def on_hit(self, key: str, now: float) -> None:
        self._touch(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.count_prefix_hits:
            self._touch(key, now)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible and key not in self._slot:
            self._place(key)
        elif not eligible:
            self._vacate(key)

    def on_remove(self, key: str) -> None:
        self._vacate(key)
        self._hits.pop(key, None)
        self._last_use.pop(key, None)
        self._density.pop(key, None)
        self._priority.pop(key, None)

    def victim(self, now: float) -> str | None:
        """The lowest ``(priority, score, last use, key)``. O(n) in C, plus O(ties) in Python."""
        if not self._slot:
            return None
        a = self._arrays
        used = a["used"]
        priority = np.where(used, a["priority"], np.iinfo(np.int64).max)
        lowest = priority.min()
        hits = a["hits"]
        with np.errstate(over="ignore", under="ignore"):
            decayed = hits * 0.5 ** (np.maximum(0.0, now - a["hit_at"]) / self.half_life_s)
        score = np.where(priority == lowest, (decayed + 1.0) * a["density"], np.inf)
        best = score.min()
        # numpy's power may differ from Python's in the last bits: score the close ones exactly
        close = np.flatnonzero(score <= best * (1.0 + 1e-9))
        if len(close) > 16:  # many ties: those without hits score their density exactly; keep the
            plain = close[hits[close] == 0.0]  # least (density, last use) of them and every hit one
            if len(plain):
                order = np.lexsort((a["last_use"][plain], score[plain]))
                first = order[0]
                same = (score[plain] == score[plain[first]]) & (a["last_use"][plain] == a["last_use"][plain[first]])
                close = np.concatenate([plain[same], close[hits[close] != 0.0]])
        keys = self._keys
        return min(((int(lowest), self.score(keys[s], now), self._last_use[keys[s]], keys[s])
                    for s in close.tolist()))[3]

    def _check(self) -> None:
        a = self._arrays
        for key, slot in self._slot.items():
            assert self._keys[slot] == key and a["used"][slot], key
            assert a["density"][slot] == self._density[key] and a["last_use"][slot] == self._last_use[key], key
            assert a["priority"][slot] == self._priority[key], key
            assert (a["hits"][slot], a["hit_at"][slot]) == self._hits.get(key, (0.0, 0.0)), key
        assert int(a["used"].sum()) == len(self._slot)
        assert set(self._density) == set(self._last_use)
