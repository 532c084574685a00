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

Victim choice is exact and sublinear. A checkpoint never hit scores its
density alone, so the least of them (priority, then density, last use, key)
comes from one sorted list. A hit one scores ``d · (1 + h · 2^(-(now - t)/half_life))``,
which rises with its density ``d`` and with ``x = ln h + t · ln 2 / half_life``
(the log of its hits, undecayed to a common origin). Hit checkpoints sit in
density bands (0.4% wide), each split into 16 fine bands (0.024%), each split
by exact density (every aligned snapshot of one length has the same one), all
sorted by ``x``. The victim visits the bands from the least dense and skips a
band whose least-``x`` checkpoint cannot score below the best found. In a fine
band it visits the exact densities by their least ``x`` while the least score
they could have (the fine band's floor density, that ``x``) is not above the
best found. A density whose least-``x`` checkpoint cannot score below the best
(``density · (1 + e^(x − origin))`` is a lower bound of the score) is skipped;
otherwise its checkpoints are scored exactly in ``x`` order until that bound
is above the best. So it scores only checkpoints that tie the winner or come
within rounding of it: on a 200,000-request generated trace at 50% capacity,
0.2 per victim, flat over the trace. Scanning by density alone would visit
every hit checkpoint shorter than the winner on each victim (quadratic on
agent traces, whose short prefixes are the hit ones); walking by density and
by ``x`` separately (a threshold algorithm) bounds too loosely when densities
differ by a few percent. Walking a fine band by ``x`` with its floor density
alone scored every long-decayed hit of the winner's own density: they score
within 0.024% of it, and there are more of them the longer the trace (38 per
victim at 200,000 requests, 125 at 400,000).

>>> Ds4DensityPolicy(half_life_s=3600).half_life_s
3600.0
"""

from __future__ import annotations

import bisect
import math

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
        self._rate = math.log(2.0) / self.half_life_s  # decay rate of ln(hits) per second
        self._hits: dict[str, tuple[float, float]] = {}  # key -> (hits at t, t)
        self._last_use: dict[str, float] = {}
        self._density: dict[str, float] = {}
        self._priority: dict[str, int] = {}
        # eligible keys, by priority: never hit ones by (density, last use, key);
        # hit ones by density band, each band by (x, key), x = ln(hits) + t * rate
        self._unhit: dict[int, SortedList] = {}
        self._bands: dict[int, dict[int, SortedList]] = {}
        self._band_order: dict[int, list[int]] = {}  # the bands in use, by priority, in order
        self._band_least: dict[int, dict[int, float]] = {}  # priority -> band -> its least x
        # each band split into _FINE narrower ones, each of those by exact density:
        # (priority, density) -> (x, key) in order, and (priority, fine band) -> the
        # densities in it as (least x, density) in order
        self._exact: dict[tuple[int, float], SortedList] = {}
        self._fine: dict[tuple[int, int], SortedList] = {}
        self._fine_order: dict[tuple[int, int], list[int]] = {}  # (priority, band) -> fine bands in use, in order
        self._floors: dict[int, float] = {}  # fine band -> _band_floor(fine band), as met
        self._filed: dict[str, tuple] = {}  # eligible key -> the item it was filed under
        self._latest_hit = -math.inf  # the latest hit time seen (keeps the bound a bound if time runs back)

    def _effective_hits(self, key: str, now: float) -> float:
        hits, at = self._hits.get(key, (0.0, now))
        if hits == 0.0:
            return 0.0
        return hits * 0.5 ** (max(0.0, now - at) / self.half_life_s)

    def score(self, key: str, now: float) -> float:
        """The engine's score of ``key`` at ``now``."""
        return (self._effective_hits(key, now) + 1.0) * self._density[key]

    # ------------------------------------------------------------ the lists
    def _file(self, key: str) -> None:
        """Make ``key`` a candidate. O(log n)."""
        priority, density = self._priority[key], self._density[key]
        hit = self._hits.get(key)
        if hit is None:
            item = (density, self._last_use[key], key)
            self._unhit.setdefault(priority, SortedList()).add(item)
        else:
            item = (math.log(hit[0]) + hit[1] * self._rate, key)
            bands = self._bands.setdefault(priority, {})
            fine = _fine_band(density)
            band = fine // _FINE
            members = bands.get(band)
            if members is None:
                members = bands[band] = SortedList()
                bisect.insort(self._band_order.setdefault(priority, []), band)
                self._band_least.setdefault(priority, {})[band] = item[0]
            elif item[0] < self._band_least[priority][band]:
                self._band_least[priority][band] = item[0]
            members.add(item)
            groups = self._fine.get((priority, fine))
            if groups is None:
                groups = self._fine[priority, fine] = SortedList()
                bisect.insort(self._fine_order.setdefault((priority, band), []), fine)
            members = self._exact.get((priority, density))
            if members is None:
                members = self._exact[priority, density] = SortedList()
            elif item < members[0]:  # the density's least x changes
                groups.remove((members[0][0], density))
            else:
                groups = None
            members.add(item)
            if groups is not None:
                groups.add((item[0], density))
        self._filed[key] = item

    def _unfile(self, key: str) -> None:
        """Take ``key`` out of the candidates. O(log n)."""
        item = self._filed.pop(key, None)
        if item is None:
            return
        priority = self._priority[key]
        if len(item) == 3:
            _drop(self._unhit, priority, item)
        else:
            fine = _fine_band(self._density[key])
            bands, band = self._bands[priority], fine // _FINE
            _drop(bands, band, item)
            least = self._band_least[priority]
            if band not in bands:
                del least[band]
            elif item[0] == least[band]:  # (it may have been the least)
                least[band] = bands[band][0][0]
            density = self._density[key]
            members = self._exact[priority, density]
            if members[0] == item:  # the density's least x changes
                groups = self._fine[priority, fine]
                groups.remove((item[0], density))
                if len(members) > 1:
                    groups.add((members[1][0], density))
            _drop(self._exact, (priority, density), item)
            if not self._fine[priority, fine]:
                del self._fine[priority, fine]
                _drop(self._fine_order, (priority, band), fine)
            if band not in bands:  # the band emptied
                order = self._band_order[priority]
                del order[bisect.bisect_left(order, band)]
                if not bands:
                    del self._bands[priority], self._band_order[priority], self._band_least[priority]

    # --------------------------------------------------------------- events
    def on_insert(self, key: str, now: float) -> None:
        entry = self.view.entry(key)
        self._density[key] = entry.tokens / max(1, entry.size)
        self._priority[key] = entry.priority
        self._last_use[key] = now

    def _touch(self, key: str, now: float) -> None:
        filed = key in self._filed
        if filed:
            self._unfile(key)
        self._hits[key] = (self._effective_hits(key, now) + 1.0, now)
        self._latest_hit = max(self._latest_hit, now)
        self._last_use[key] = now
        if filed:
            self._file(key)

    def on_hit(self, key: str, now: float) -> None:
        self._touch(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.count_prefix_hits:
            self._touch(key, now)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible and key not in self._filed:
            self._file(key)
        elif not eligible:
            self._unfile(key)

    def on_remove(self, key: str) -> None:
        self._unfile(key)
        self._hits.pop(key, None)
        self._last_use.pop(key, None)
        self._density.pop(key, None)
        self._priority.pop(key, None)

    def victim(self, now: float) -> str | None:
        """The lowest ``(priority, score, last use, key)``.

        Runtime complexity: O(bands below the winner, and densities whose least
        hit could beat it) plus O(log n) per checkpoint scored (those that tie
        the winner or come within rounding of it)."""
        if not self._filed:
            return None
        lowest = min(p for table in (self._unhit, self._bands) for p in table)
        best = None
        unhit = self._unhit.get(lowest)
        if unhit:
            density, last_use, key = unhit[0]
            best = ((0.0 + 1.0) * density, last_use, key)  # (the score of a never hit one)
        bands = self._bands.get(lowest)
        if bands:
            # no hit checkpoint decays past the latest hit time: a lower bound even if time ran back
            origin = max(now, self._latest_hit) * self._rate
            slack = _slack(origin)
            exp, score, last_use_of, fine_of, exact_of = math.exp, self.score, self._last_use, self._fine, self._exact
            band_least = self._band_least[lowest]
            floors = self._floors
            for band in self._band_order[lowest]:
                floor = floors.get(band * _FINE)
                if floor is None:
                    floor = floors[band * _FINE] = _band_floor(band * _FINE)
                if best is not None and floor > best[0]:
                    break  # every later band is denser: none scores below the best
                if best is not None and floor * (1.0 + exp(band_least[band] - origin) * slack) > best[0]:
                    continue  # its least hit one scores higher: so do all the others
                for fine in self._fine_order[lowest, band]:
                    floor = floors.get(fine)
                    if floor is None:
                        floor = floors[fine] = _band_floor(fine)
                    if best is not None and floor > best[0]:
                        break
                    for least_x, density in fine_of[lowest, fine]:  # its densities, by their least x
                        if best is not None and floor * (1.0 + exp(least_x - origin) * slack) > best[0]:
                            break  # the rest of the fine band scores higher still
                        if best is not None and density * (1.0 + exp(least_x - origin) * slack) > best[0]:
                            continue  # its least hit one scores higher: so do all the others
                        for x, key in exact_of[lowest, density]:
                            if best is not None and density * (1.0 + exp(x - origin) * slack) > best[0]:
                                break  # the rest of this density scores higher still
                            candidate = (score(key, now), last_use_of[key], key)
                            if best is None or candidate < best:
                                best = candidate
        return best[2]

    def _check(self) -> None:
        for key, item in self._filed.items():
            priority = self._priority[key]
            if len(item) == 3:
                assert key not in self._hits and item == (self._density[key], self._last_use[key], key), key
                assert item in self._unhit[priority], key
            else:
                hits, at = self._hits[key]
                assert item == (math.log(hits) + at * self._rate, key), key
                fine = _fine_band(self._density[key])
                assert item in self._bands[priority][fine // _FINE], key
                members = self._exact[priority, self._density[key]]
                assert item in members and (members[0][0], self._density[key]) in self._fine[priority, fine], key
                assert self._density[key] >= _band_floor(fine), key
        filed = sum(map(len, self._unhit.values())) + sum(
            len(members) for bands in self._bands.values() for members in bands.values())
        assert filed == len(self._filed), filed
        assert {p: sorted(b) for p, b in self._bands.items()} == {p: list(o) for p, o in self._band_order.items()}
        assert {p: {b: m[0][0] for b, m in bands.items()} for p, bands in self._bands.items()} == self._band_least
        assert sum(map(len, self._exact.values())) == sum(len(m) for b in self._bands.values() for m in b.values())
        assert sum(map(len, self._fine.values())) == len(self._exact)
        assert sorted(self._fine) == sorted((p, f) for (p, _), o in self._fine_order.items() for f in o)
        assert all(f // _FINE == b for (_, b), o in self._fine_order.items() for f in o)
        assert all(o == sorted(o) for o in self._fine_order.values())
        assert set(self._density) == set(self._last_use)


#: fine density bands are this much wider than the previous one (0.024%); a band
#: (0.4%) is _FINE fine ones
_BAND_GROWTH = 1.0 + 1.0 / 4096
_LOG_GROWTH = math.log(_BAND_GROWTH)
_FINE = 16
_NO_DENSITY = -(1 << 34)  # the fine band of a density of 0


def _slack(origin: float) -> float:
    """A factor that keeps ``exp(x - origin) · _slack(origin)`` below a checkpoint's
    decayed hits as :meth:`Ds4DensityPolicy.score` computes them: ``x`` and
    ``origin`` carry rounding errors of a few ulps of their size. O(1)."""
    return math.exp(-1e-12 - 4e-15 * (abs(origin) + 64.0))


def _fine_band(density: float) -> int:
    """The fine density band of ``density`` (densities are >= 0). O(1)."""
    return math.floor(math.log(density) / _LOG_GROWTH) if density > 0 else _NO_DENSITY


def _band_floor(fine: int) -> float:
    """A density no member of fine band ``fine`` (or of the band it starts) is below
    (rounded down a little). O(1)."""
    return 0.0 if fine <= _NO_DENSITY else math.exp(fine * _LOG_GROWTH) * (1.0 - 1e-6)


def _drop(table: dict, at: object, item: object) -> None:
    """Remove ``item`` from the list ``table[at]`` (and the list once empty).
    O(log n) for a SortedList, O(n) for a plain list (the few fine bands of a band)."""
    items = table[at]
    items.remove(item)
    if not items:
        del table[at]
