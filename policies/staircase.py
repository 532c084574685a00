"""The Pareto staircase of points ``(r, e)``: the only candidates for the least
value of any score that grows with both ``r`` and ``e``.

Points are kept in order of ``r`` (ties in the order they came). A point is on
the staircase when no point before it has a smaller ``e``: the running minima
of ``e`` in that order. Every other point has one before it that is no larger
in ``r`` and smaller in ``e``, so it never scores below it. Marconi's
normalised ``recency + alpha · efficiency`` is such a score, whatever the
minima and maxima it is normalised by.

>>> s = Staircase()
>>> for key, r, e in [("a", 0.0, 5.0), ("b", 1.0, 7.0), ("c", 2.0, 3.0)]:
...     s.append(key, r, e)
>>> [key for _, _, key in s.steps()]
['a', 'c']
>>> s.remove("a"); [key for _, _, key in s.steps()]
['b', 'c']
>>> s.bounds()
(1.0, 2.0, 3.0, 7.0)
>>> s.least(alpha=1.0)  # recency 0 + efficiency 1 against 1 + 0: a tie, the older wins
'b'

Points live in arrays by position, appended in ``r`` order, with a hole where
one left; the staircase's positions are an ``array`` that numpy copies in one
memcpy; the minimum of ``e`` per block of positions finds the next step
after a step leaves. Runtime complexity: :meth:`append` O(log n); :meth:`remove`
and :meth:`change` O(log n) plus O(n/B) numpy work per step that appears
(B = 64); :meth:`steps` and :meth:`least` O(steps). Arrays are compacted when
half are holes.

``policies/_staircase.c`` is a compiled twin of this class: the same answers,
its upkeep and its least score in C. :func:`staircase` gives the compiled one
when it was built.
"""

from __future__ import annotations

from array import array
import bisect
import heapq
import math
from typing import Any, Protocol

import numpy as np

from .native import compiled as native_twin, pick

__all__ = ["Staircase", "StaircaseIndex", "compiled", "staircase", "staircase_type"]

_HOLE = math.inf  # e of an empty position: above every threshold a search uses
_TOP = np.finfo(np.float64).max  # the threshold standing for "no step before"


class StaircaseIndex(Protocol):
    """What :class:`Staircase` and its compiled twin both offer."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def append(self, key: Any, r: float, e: float) -> None: ...
    def move(self, key: Any, r: float) -> None: ...
    def remove(self, key: Any) -> None: ...
    def change(self, key: Any, e: float) -> None: ...
    def steps(self) -> list[tuple[float, float, Any]]: ...
    def bounds(self) -> tuple[float, float, float, float]: ...
    def least(self, alpha: float) -> Any: ...
    def _check(self) -> None: ...


def compiled() -> type | None:
    """The compiled :class:`Staircase`, or None when the package was installed without it.

    >>> compiled() is None or compiled().__module__ == "policies._staircase"
    True
    """
    return native_twin("_staircase", "Staircase")


def staircase_type(*, native: bool | None = None) -> type:
    """The staircase class to build: the compiled one when it was built
    (``native=None``), required (``True``: ImportError without it) or the
    pure-Python one (``False``).

    >>> staircase_type(native=False) is Staircase
    True
    """
    return pick(native, "_staircase", "Staircase", Staircase)


def staircase(*, native: bool | None = None) -> StaircaseIndex:
    """A new, empty staircase of :func:`staircase_type`.

    >>> len(staircase(native=False))
    0
    """
    points: StaircaseIndex = staircase_type(native=native)()
    return points


class Staircase:
    """Points ``(r, e)`` by key, and their running minima of ``e`` in ``r`` order.

    ``e`` must be finite. ``r`` normally arrives in order (a clock); an earlier
    ``r`` is accepted and costs a re-sort, O(n log n).
    """

    BLOCK = 64

    def __init__(self) -> None:
        self._pos: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._r = np.zeros(256)
        self._e = np.full(256, _HOLE)
        self._block_min = np.full(256 // self.BLOCK, _HOLE)
        self._steps = array("q")  # positions of the staircase, ascending (numpy copies them in one memcpy)
        self._by_e: list[tuple[float, str]] = []  # max-heap of (-e, key), stale once its e changed
        self._last_r = -math.inf

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    # ------------------------------------------------------------ changes
    def append(self, key: str, r: float, e: float) -> None:
        """Add a point with the largest ``r`` so far (else re-sort). O(log n) amortised.

        >>> s = Staircase(); s.append("a", 1.0, 2.0); len(s)
        1
        """
        if key in self._pos:
            raise KeyError(f"{key!r} is already a point")
        self._at_end(key, r, e)
        self._remember(key, e)

    def move(self, key: str, r: float) -> None:
        """Give ``key``'s point a new, largest ``r`` (a use), keeping its ``e``. O(log n) amortised.

        >>> s = Staircase(); s.append("a", 0.0, 1.0); s.append("b", 1.0, 2.0); s.move("a", 2.0)
        >>> [k for *_, k in s.steps()]
        ['b', 'a']
        """
        p = self._pos.pop(key)
        e = float(self._e[p])
        self._vacate(p)
        self._at_end(key, r, e)  # (its entry in the max-heap of e stays current)
        self._keep_dense()

    def remove(self, key: str) -> None:
        """Take ``key``'s point out; the points it alone hid join the staircase.

        >>> s = Staircase(); s.append("a", 0.0, 1.0); s.append("b", 1.0, 2.0); s.remove("a")
        >>> [k for *_, k in s.steps()]
        ['b']
        """
        self._vacate(self._pos.pop(key))
        self._keep_dense()

    def change(self, key: str, e: float) -> None:
        """Give ``key``'s point a new ``e``, keeping its ``r`` and its place.

        >>> s = Staircase(); s.append("a", 0.0, 1.0); s.append("b", 1.0, 2.0); s.change("b", 0.5)
        >>> [k for *_, k in s.steps()]
        ['a', 'b']
        """
        p = self._pos[key]
        if self._e[p] == e:
            return
        self._vacate(p)
        self._keys[p] = key
        self._put(key, p, self._r[p], e)
        self._remember(key, e)
        steps = self._steps
        i = bisect.bisect_left(steps, p)
        if i == 0 or e <= self._e[steps[i - 1]]:  # a step now: it hides the later steps above it
            j = i
            while j < len(steps) and self._e[steps[j]] > e:
                j += 1
            steps[i:j] = array("q", (p,))
        self._keep_dense()

    # ------------------------------------------------------------ queries
    def steps(self) -> list[tuple[float, float, str]]:
        """``(r, e, key)`` of every point on the staircase, in ``r`` order. O(steps)."""
        r, e, keys = self._r, self._e, self._keys
        return [(float(r[p]), float(e[p]), keys[p]) for p in self._steps]

    def bounds(self) -> tuple[float, float, float, float]:
        """``(min r, max r, min e, max e)`` over every point. O(log n) amortised.

        >>> s = Staircase(); s.append("a", 0.0, 4.0); s.append("b", 1.0, 2.0); s.bounds()
        (0.0, 1.0, 2.0, 4.0)
        """
        if not self._pos:
            raise IndexError("the staircase has no points")
        steps, e, by_e, pos = self._steps, self._e, self._by_e, self._pos
        while by_e[0][1] not in pos or e[pos[by_e[0][1]]] != -by_e[0][0]:
            heapq.heappop(by_e)
        last = len(self._keys) - 1
        while self._keys[last] is None:
            last -= 1
        return (float(self._r[steps[0]]), float(self._r[last]), float(e[steps[-1]]), -by_e[0][0])

    def least(self, alpha: float) -> Any:
        """The key of the least ``(r − min r) / (max r − min r) + alpha · (e − min e) /
        (max e − min e)`` (a span of 0 counts as 0), then the least ``r``, then the
        least key; ``None`` with no points. Only steps can be least. O(steps).

        >>> s = Staircase(); s.append("a", 0.0, 4.0); s.append("b", 1.0, 2.0)
        >>> s.least(alpha=0.5), s.least(alpha=2.0)
        ('a', 'b')
        """
        if not self._pos:
            return None
        low_r, high_r, low_e, high_e = self.bounds()
        positions = np.frombuffer(self._steps, dtype=np.int64).copy()
        recency, efficiency = self._r[positions], self._e[positions]

        def normalise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
            span = hi - lo
            return (values - lo) / span if span > 0 else np.zeros(len(values))

        score = normalise(recency, low_r, high_r) + alpha * normalise(efficiency, low_e, high_e)
        best = np.flatnonzero(score == score.min())
        if len(best) > 1:  # ties: the older last use, then the smaller key
            best = best[recency[best] == recency[best].min()]
        keys: list[Any] = self._keys
        return min(keys[int(positions[b])] for b in best)

    # ----------------------------------------------------------- internals
    def _put(self, key: str, p: int, r: float, e: float) -> None:
        self._pos[key] = p
        self._r[p] = r
        self._e[p] = e
        b = p // self.BLOCK
        if e < self._block_min[b]:
            self._block_min[b] = e

    def _remember(self, key: str, e: float) -> None:
        """Note ``key``'s new ``e`` in the max-heap (older entries go stale). O(log n) amortised."""
        heapq.heappush(self._by_e, (-e, key))
        if len(self._by_e) > 2 * len(self._pos) + 1024:
            self._by_e = [(-self._e[q], k) for k, q in self._pos.items()]
            heapq.heapify(self._by_e)

    def _at_end(self, key: str, r: float, e: float) -> None:
        """Put a point after every other one; if its ``r`` came before the last
        one's, sort again (O(n log n)). O(1) amortised."""
        p = len(self._keys)
        if p == len(self._e):
            self._grow()
        self._keys.append(key)
        self._put(key, p, r, e)
        if r < self._last_r:
            self._rebuild(sorted(self._pos.values(), key=lambda q: (self._r[q], q)))
            return
        steps = self._steps
        if not steps or e <= self._e[steps[-1]]:
            steps.append(p)
        self._last_r = r

    def _vacate(self, p: int) -> None:
        """Empty position ``p``; the points it alone hid become steps. O(log n + n/B)."""
        e = self._e
        e[p] = _HOLE  # (its block's minimum stays a lower bound: mended when a search meets it)
        self._keys[p] = None
        steps = self._steps
        i = bisect.bisect_left(steps, p)
        if i == len(steps) or steps[i] != p:
            return  # hidden: it hid nothing that is not hidden still
        del steps[i]
        threshold = e[steps[i - 1]] if i else _TOP
        end = steps[i] if i < len(steps) else len(self._keys)
        found, q = [], p + 1
        while True:
            q = self._first_at_most(q, end, threshold)
            if q < 0:
                break
            found.append(q)
            threshold = e[q]
            q += 1
        steps[i:i] = array("q", found)

    def _first_at_most(self, lo: int, hi: int, threshold: float) -> int:
        """The first position in ``[lo, hi)`` whose ``e <= threshold``, or -1. O(n/B) in numpy.

        A block whose minimum (a lower bound: removals leave it) says yes but
        holds no such position gets its true minimum, and the search goes on."""
        e, block, block_min = self._e, self.BLOCK, self._block_min
        edge = min((lo // block + 1) * block, hi)
        if lo < edge:
            hits = e[lo:edge] <= threshold
            i = int(hits.argmax())
            if hits[i]:
                return lo + i
        while edge < hi:
            first, last = edge // block, (hi - 1) // block
            candidates = block_min[first:last + 1] <= threshold
            c = int(candidates.argmax())
            if not candidates[c]:
                return -1
            start = (first + c) * block
            edge = min(start + block, hi)
            hits = e[start:edge] <= threshold
            i = int(hits.argmax())
            if hits[i]:
                return start + i
            if edge == start + block:
                block_min[first + c] = e[start:edge].min()
        return -1

    def _grow(self) -> None:
        size = 2 * len(self._e)
        r, e = np.zeros(size), np.full(size, _HOLE)
        r[:len(self._r)], e[:len(self._e)] = self._r, self._e
        self._r, self._e = r, e
        block_min = np.full(size // self.BLOCK, _HOLE)
        block_min[:len(self._block_min)] = self._block_min
        self._block_min = block_min

    def _keep_dense(self) -> None:
        if len(self._keys) > 2 * len(self._pos) + 1024:
            self._rebuild(np.flatnonzero(self._e[:len(self._keys)] != _HOLE).tolist())

    def _rebuild(self, order: list[int]) -> None:
        """Lay the points out again at positions 0.. in ``order``. O(n)."""
        keys = [self._keys[q] for q in order]
        index = np.array(order, dtype=np.int64)
        r, e = self._r[index], self._e[index]
        size = max(256, 1 << max(8, (2 * len(order)).bit_length()))
        self._r, self._e = np.zeros(size), np.full(size, _HOLE)
        self._r[:len(order)], self._e[:len(order)] = r, e
        self._keys = keys
        self._pos = {k: i for i, k in enumerate(keys)}
        self._block_min = self._e.reshape(-1, self.BLOCK).min(axis=1)
        running = np.minimum.accumulate(e) if len(e) else e
        before = np.concatenate(([_TOP], running[:-1])) if len(e) else e
        self._steps = array("q", np.flatnonzero(e <= before).tobytes())
        self._by_e = list(zip((-e).tolist(), keys))
        heapq.heapify(self._by_e)
        self._last_r = float(r[-1]) if len(r) else -math.inf

    def _check(self) -> None:
        live = sorted(self._pos.values())
        assert all(self._keys[p] is not None for p in live)
        assert sum(k is not None for k in self._keys) == len(live)
        r, e = self._r[live], self._e[live]
        assert np.all(np.diff(r) >= 0)
        running, expected = _TOP, []
        for p, x in zip(live, e):
            if x <= running:
                expected.append(p)
                running = x
        assert list(self._steps) == expected, (self._steps, expected)
        for b in range(len(self._block_min)):  # a lower bound
            assert self._block_min[b] <= self._e[b * self.BLOCK:(b + 1) * self.BLOCK].min()
        pos = self._pos
        assert {k for negative, k in self._by_e if k in pos and self._e[pos[k]] == -negative} == set(pos)
