"""``belady``: the offline reference. NOT a policy an engine can run.

Evicts the checkpoint whose next use lies furthest in the future (never used
again first): Belady's MIN, optimal when every entry has the same size and
miss cost. Checkpoints differ in both — a snapshot's miss costs only the
tokens past its nearest stored ancestor, and every prefix of a prompt shares
its next use — so here it is a strong reference, not a bound: an online
policy can beat it. It needs the future, given as ``next_use(key, now) -> time or
inf``; the simulator builds that from the trace. With ``size_aware=True`` it
evicts the largest ``(next_use - now) * size`` instead, which frees bytes
that are needed least soon (a better reference when sizes differ a lot).
As a reference it ignores the engine's ``priority``.

>>> BeladyPolicy(next_use=lambda key, now: float("inf")).offline
True
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Sequence

from sortedcontainers import SortedList

from .base import Policy

__all__ = ["BeladyPolicy", "BeladySizePolicy"]


class BeladyPolicy(Policy):
    """Furthest next use first (offline; needs ``next_use``).

    :param next_use: ``next_use(key, now)``: time of the next request after
        ``now`` that would use ``key``, or ``math.inf``.
    :param size_aware: rank by ``(next_use - now) * size`` instead.
    """

    name = "belady"
    description = "OFFLINE reference: evicts the checkpoint needed furthest in the future (simulator only)"
    offline = True

    def __init__(self, *, next_use: Callable[[str, float], float] | None = None,
                 size_aware: bool = False) -> None:
        self.next_use = _required_future(next_use, self.name)
        self.size_aware = bool(size_aware)
        self._when: dict[str, float] = {}
        self._order = SortedList()  # (next use, key) of eligible keys

    def _refresh(self, key: str, now: float) -> None:
        eligible = self._unlist(key)
        self._when[key] = self.next_use(key, now)
        if eligible:
            self._order.add((self._when[key], key))

    def _unlist(self, key: str) -> bool:
        item = (self._when.get(key), key)
        if key in self._when and item in self._order:
            self._order.remove(item)
            return True
        return False

    def on_insert(self, key: str, now: float) -> None:
        self._when[key] = self.next_use(key, now)

    def on_hit(self, key: str, now: float) -> None:
        self._refresh(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        self._refresh(key, now)

    def on_eligible(self, key: str, eligible: bool) -> None:
        self._unlist(key)
        if eligible:
            self._order.add((self._when[key], key))

    def on_remove(self, key: str) -> None:
        self._unlist(key)
        self._when.pop(key, None)

    def victim(self, now: float) -> str | None:
        # next uses that have passed (the key was used through a longer match,
        # or not at all) are stale: look them up again
        while self._order and self._order[0][0] <= now:
            _, key = self._order.pop(0)
            self._when[key] = self.next_use(key, now)
            self._order.add((self._when[key], key))
            if self._when[key] <= now:
                break
        if not self._order:
            return None
        if not self.size_aware:
            return self._order[-1][1]
        return max(self._order, key=lambda item: (
            (math.inf if item[0] == math.inf else (item[0] - now) * self.view.entry(item[1]).size),
            self.view.entry(item[1]).size))[1]


class BeladySizePolicy(Policy):
    """Size-aware MIN that knows when a snapshot is redundant (offline).

    Evicts the largest ``(useful next use - now) * size``, never-again first
    (largest first among those). A checkpoint's *useful* next use skips the
    uses at which a stored child is used too: that request loads the deeper
    child, so the shorter snapshot saves nothing there (checked a few uses
    ahead, then counted as never). This is the ``belady`` the issue tracker's
    libCacheSim comparison calls BeladySize, plus that chain knowledge.

    A checkpoint's useful next use stays what it was until time reaches its
    own next use or one of its stored children's, or its stored children
    change: it is kept, and looked up again only then. The next uses of each
    checkpoint's stored children are kept too, sorted, and each is looked up
    again only once time passes it, so a checkpoint with thousands of stored
    children (a shared system prompt) does not look them all up whenever it is
    filed. The never-again candidates sit in one sorted list by size; the
    others in size classes (16 per doubling), each sorted by useful next use.
    A victim visits the classes by the most any member could rank and stops
    once none can beat the best found, so it ranks only the checkpoints that
    could win.
    Runtime complexity: O(log n) per checkpoint whose useful next use expired
    and per stored child whose next use passed, plus O(size classes) and
    O(log n) per candidate ranked, per victim (it was a full scan of every
    candidate). ``next_use(key, now)`` must depend on ``now`` only through
    which uses lie after it, as the trace's does.

    >>> BeladySizePolicy(next_use=lambda key, now: float("inf")).name
    'belady-size'
    """

    name = "belady-size"
    description = ("OFFLINE reference: size-aware MIN that skips uses a stored deeper "
                   "checkpoint covers (simulator only)")
    offline = True
    LOOKAHEAD = 4

    def __init__(self, *, next_use: Callable[[str, float], float] | None = None) -> None:
        self.next_use = _required_future(next_use, self.name)
        self._parent: dict = {}  # key -> its parent key, as stored
        # the eligible keys are the filed ones and the stale ones
        self._stale: set = set()  # eligible keys whose useful next use must be looked up again
        self._never = SortedList()  # (size, key): eligible, never useful again
        self._classes: dict[int, SortedList] = {}  # size class -> (useful next use, key), eligible
        self._filed: dict = {}  # eligible key -> (size class or None, its item, valid until)
        self._expiry = SortedList()  # (valid until, key) of the filed keys
        self._clock = -math.inf  # the latest time a victim was asked at
        # every stored key with a parent, by its next use (looked up at the clock)
        self._unclocked: set = set()  # stored since the last victim: next use not yet looked up
        self._next_of: dict = {}  # key -> its next use after the clock, when not never
        self._passing: list = []  # heap of (next use, key); entries not in _next_of are stale
        self._shared_of: dict = {}  # key -> sorted next uses (not never) of its stored children

    def _useful_and_until(self, key: str, now: float, shared: Sequence[float]) -> tuple[float, float]:
        """The useful next use of ``key`` after ``now``, and the time until which
        it stays so (the earliest next use it read), given ``shared``: the
        sorted next uses after ``now`` of its stored children (never-again ones
        may be left out). O(log children)."""
        when = self.next_use(key, now)
        if when == math.inf:
            return when, when
        if not shared:
            return when, when
        until = min(when, shared[0])
        for _ in range(self.LOOKAHEAD):
            if when == math.inf or not _holds(shared, when):
                return when, until
            when = self.next_use(key, when)
        return math.inf, until

    def useful_next_use(self, key: str, now: float) -> float:
        """The next use of ``key`` after ``now`` that no stored child of it
        shares, looked up afresh. O(children)."""
        shared = sorted(self.next_use(child, now) for child in self.view.children(key))
        return self._useful_and_until(key, now, shared)[0]

    # ------------------------------------------------- children's next uses
    def _clock_child(self, key: str, now: float) -> None:
        """Look up the next use of stored ``key`` (which has a parent) after ``now``.
        Amortised O(log n)."""
        when = self.next_use(key, now)
        if when != math.inf:
            next_of = self._next_of
            next_of[key] = when
            passing = self._passing
            heapq.heappush(passing, (when, key))
            if len(passing) > 3 * len(next_of) + 64:  # mostly removed children: keep only the kept uses
                passing[:] = [(w, k) for k, w in next_of.items()]  # (in place: a caller may hold it)
                heapq.heapify(passing)
            bisect.insort(self._shared_of.setdefault(self._parent[key], []), when)

    def _unclock_child(self, key: str) -> None:
        when = self._next_of.pop(key, None)
        if when is None:
            self._unclocked.discard(key)
            return
        parent = self._parent[key]
        shared = self._shared_of[parent]
        del shared[bisect.bisect_left(shared, when)]
        if not shared:
            del self._shared_of[parent]

    def _advance_children(self, now: float) -> None:
        """Bring every stored child's next use to ``now``: the ones stored since
        the last victim, and the ones whose next use ``now`` reached.
        O(log n) per child looked up."""
        for key in self._unclocked:
            self._clock_child(key, now)
        self._unclocked.clear()
        passing, next_of = self._passing, self._next_of
        while passing and passing[0][0] <= now:
            when, key = heapq.heappop(passing)
            if next_of.get(key) == when:  # (else stale: removed, or looked up again since)
                self._unclock_child(key)
                self._clock_child(key, now)

    def _restart_children(self) -> None:
        """Time ran back: every stored child's next use is looked up again."""
        self._unclocked = {key for key, parent in self._parent.items() if parent is not None}
        self._next_of.clear()
        self._passing.clear()
        self._shared_of.clear()

    # --------------------------------------------------------------- filing
    def _file(self, key: str, now: float) -> None:
        when, until = self._useful_and_until(key, now, self._shared_of.get(key, ()))
        size = self.view.entry(key).size
        if when == math.inf:
            item, size_class = (size, key), None
            self._never.add(item)
        else:
            item, size_class = (when, key), _size_class(size)
            members = self._classes.get(size_class)
            if members is None:
                members = self._classes[size_class] = SortedList()
            members.add(item)
        self._filed[key] = (size_class, item, until)
        if until != math.inf:
            self._expiry.add((until, key))

    def _unfile(self, key: str) -> None:
        filed = self._filed.pop(key, None)
        if filed is None:
            return
        size_class, item, until = filed
        if size_class is None:
            self._never.remove(item)
        else:
            members = self._classes[size_class]
            members.remove(item)
            if not members:
                del self._classes[size_class]
        if until != math.inf:
            self._expiry.remove((until, key))

    def _mark_stale(self, key: object) -> None:
        if key in self._filed:  # (an eligible key not filed is stale already)
            self._unfile(key)
            self._stale.add(key)

    # --------------------------------------------------------------- events
    def on_insert(self, key: str, now: float) -> None:
        parent = self.view.entry(key).parent
        self._parent[key] = parent
        if parent is not None:
            self._mark_stale(parent)  # its stored children changed
            self._unclocked.add(key)

    def on_hit(self, key: str, now: float) -> None:
        pass  # what it will be used for is the trace's, not the hits'

    def on_prefix_hit(self, key: str, now: float) -> None:
        pass

    def on_eligible(self, key: str, eligible: bool) -> None:
        self._unfile(key)
        if eligible:
            self._stale.add(key)
        else:
            self._stale.discard(key)

    def on_remove(self, key: str) -> None:
        self.on_eligible(key, False)
        parent = self._parent.get(key)
        if parent is not None:
            self._unclock_child(key)
            self._mark_stale(parent)
        self._parent.pop(key, None)

    def victim(self, now: float) -> str | None:
        """The largest ``(useful next use - now) * size``, never-again first."""
        if now < self._clock:  # time ran back: what was kept may not hold
            for key in list(self._filed):
                self._mark_stale(key)
            self._restart_children()
        self._clock = now
        self._advance_children(now)
        while self._expiry and self._expiry[0][0] <= now:
            self._mark_stale(self._expiry[0][1])
        for key in self._stale:
            self._file(key, now)
        self._stale.clear()
        if self._never:
            return self._never[-1][1]
        bounds = []
        for size_class, members in self._classes.items():
            ahead = members[-1][0] - now
            ceiling = _class_ceiling(size_class)
            bounds.append((ahead * ceiling if ahead > 0 else 0.0, size_class, ceiling))
        bounds.sort(reverse=True)
        best = None  # (rank, key)
        entry = self.view.entry
        for bound, size_class, ceiling in bounds:
            if best is not None and bound < best[0]:
                break  # no later class can rank higher
            for when, key in reversed(self._classes[size_class]):
                ahead = when - now
                if best is not None and (ahead * ceiling if ahead > 0 else 0.0) < best[0]:
                    break  # nor any later member of this class
                candidate = (ahead * entry(key).size, key)
                if best is None or candidate > best:
                    best = candidate
        return None if best is None else best[1]

    def _check(self) -> None:
        filed = set(self._filed)
        assert not filed & self._stale
        eligible = {k for k in self.view if self.view.is_eligible(k) and not self.view.entry(k).pinned}
        assert filed | self._stale == eligible, (filed | self._stale) ^ eligible
        assert len(self._never) + sum(map(len, self._classes.values())) == len(filed)
        assert sorted(self._expiry) == sorted((f[2], k) for k, f in self._filed.items() if f[2] != math.inf)
        children = {k for k, parent in self._parent.items() if parent is not None}
        assert set(self._next_of) | self._unclocked <= children and not set(self._next_of) & self._unclocked
        assert set(self._next_of) <= {k for _, k in self._passing}
        shared: dict = {}
        for key in children - self._unclocked:  # each kept next use is the one after the clock
            when = self.next_use(key, self._clock)
            assert self._next_of.get(key, math.inf) == when > self._clock, key
            if when != math.inf:
                shared.setdefault(self._parent[key], []).append(when)
        assert {k: sorted(v) for k, v in shared.items()} == self._shared_of, "children's next uses"
        for key, (size_class, item, _) in self._filed.items():
            size = self.view.entry(key).size
            if size_class is None:
                assert item == (size, key) and item in self._never, key
            else:
                assert size_class == _size_class(size) and size <= _class_ceiling(size_class), key
                assert item[1] == key and item in self._classes[size_class], key


def _required_future(next_use: Callable[[str, float], float] | None, name: str
                     ) -> Callable[[str, float], float]:
    """``next_use``, or a one-line error naming the policy when it is missing."""
    if next_use is None:
        raise ValueError(f"{name} needs next_use(key, now): it is an offline reference "
                         "that only the simulator can drive")
    return next_use


def _holds(ordered: Sequence[float], value: float) -> bool:
    """Whether sorted ``ordered`` holds ``value``. O(log n).

    >>> _holds([1.0, 3.0], 3.0), _holds([1.0, 3.0], 2.0)
    (True, False)
    """
    i = bisect.bisect_left(ordered, value)
    return i < len(ordered) and ordered[i] == value


def _size_class(size: float) -> int:
    """The size class of ``size`` bytes: 16 classes per doubling (sizes up to 31
    have one each). O(1).

    >>> [_size_class(s) for s in (0, 31, 32, 33, 34, 64)]
    [0, 31, 32, 32, 33, 48]
    """
    whole = math.ceil(size)
    shift = max(0, whole.bit_length() - 5)
    return (shift << 4) + (whole >> shift)


def _class_ceiling(size_class: int) -> int:
    """No size in ``size_class`` is larger. O(1).

    >>> [_class_ceiling(_size_class(s)) for s in (0, 31, 32, 33, 34, 64)]
    [0, 31, 33, 33, 35, 67]
    """
    shift = max(0, (size_class >> 4) - 1)
    top = size_class - (shift << 4)
    return ((top + 1) << shift) - 1
