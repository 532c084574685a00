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

import math
from collections.abc import Callable

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
        if next_use is None:
            raise ValueError("belady needs next_use(key, now): it is an offline reference "
                             "that only the simulator can drive")
        self.next_use = next_use
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


class BeladySizePolicy(BeladyPolicy):
    """Size-aware MIN that knows when a snapshot is redundant (offline).

    Evicts the largest ``(useful next use - now) * size``, never-again first
    (largest first among those). A checkpoint's *useful* next use skips the
    uses at which a stored child is used too: that request loads the deeper
    child, so the shorter snapshot saves nothing there (checked a few uses
    ahead, then counted as never). This is the ``belady`` the issue tracker's
    libCacheSim comparison calls BeladySize, plus that chain knowledge.
    Runtime complexity: O(n) per victim — a reference, not an engine policy.

    >>> BeladySizePolicy(next_use=lambda key, now: float("inf")).name
    'belady-size'
    """

    name = "belady-size"
    description = ("OFFLINE reference: size-aware MIN that skips uses a stored deeper "
                   "checkpoint covers (simulator only)")
    LOOKAHEAD = 4

    def __init__(self, *, next_use: Callable[[str, float], float] | None = None) -> None:
        super().__init__(next_use=next_use, size_aware=True)

    def useful_next_use(self, key: str, now: float) -> float:
        """The next use of ``key`` after ``now`` that no stored child of it shares."""
        when = self.next_use(key, now)
        children = self.view.children(key)
        for _ in range(self.LOOKAHEAD):
            if when == math.inf or not any(self.next_use(c, now) == when for c in children):
                return when
            when = self.next_use(key, when)
        return math.inf

    def victim(self, now: float) -> str | None:
        best, best_rank = None, None
        for _, key in self._order:
            size = self.view.entry(key).size
            when = self.useful_next_use(key, now)
            rank = (1, size, key) if when == math.inf else (0, (when - now) * size, key)
            if best_rank is None or rank > best_rank:
                best, best_rank = key, rank
        return best
