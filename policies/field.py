"""Approximations of what serving systems in the field do, for comparison.

These model the *decision rules* published for each system, mapped onto
checkpoint eviction; they are not those systems' code.

- ``hicache``: SGLang HiCache — leaf-first LRU over the radix tree, and the
  ``write_through_selective`` write policy: a checkpoint is written only once it
  has been asked for ``write_threshold`` times (2 by default).
- ``vllm-offload``: vLLM's offload tier — LRU, with admission gated on reuse
  frequency (a checkpoint is written once it was requested ``min_requests`` times).
- ``marconi``: Marconi (MLSys 2025) — ``utility = recency + alpha * FLOP efficiency``
  (FLOPs a checkpoint saves per byte), both min-max normalised over the
  candidates, lowest evicted. Marconi tunes alpha online; here it is a fixed
  keyword argument (default 1.0).

>>> sorted(p.name for p in (HiCachePolicy, VllmOffloadPolicy, MarconiPolicy))
['hicache', 'marconi', 'vllm-offload']
"""

from __future__ import annotations

from collections import OrderedDict

from .base import EntryView, Policy
from .lru import LRUPolicy
from .staircase import StaircaseIndex, staircase_type

__all__ = ["HiCachePolicy", "VllmOffloadPolicy", "MarconiPolicy"]


class _RequestCounter:
    """How often each key was offered for writing (bounded, oldest forgotten)."""

    def __init__(self, limit: int) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._limit = limit

    def offer(self, key: str) -> int:
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > self._limit:
            self._counts.popitem(last=False)
        return count


class _AdmitOnRepeat(LRUPolicy):
    """LRU that writes a checkpoint only once it has been requested ``threshold`` times."""

    def __init__(self, threshold: int, memory: int, argument: str) -> None:
        super().__init__(count_prefix_hits=True)
        if threshold < 1:
            raise ValueError(f"{argument} must be >= 1, got {threshold}")
        self._threshold = threshold
        self._requests = _RequestCounter(memory)

    def admit(self, candidate: EntryView, now: float) -> bool:
        return self._requests.offer(candidate.key) >= self._threshold


class HiCachePolicy(_AdmitOnRepeat):
    """Leaf-first LRU; writes a checkpoint only on its ``write_threshold``-th request.

    :param write_threshold: requests before a checkpoint is written (1 = write-through).
    :param memory: how many not-yet-written keys to remember.
    """

    name = "hicache"
    description = "SGLang HiCache-like: leaf-first LRU, write a checkpoint on its 2nd request"

    chain_dependent = True  # whether a checkpoint is a leaf changes as its children come and go

    def __init__(self, *, write_threshold: int = 2, memory: int = 1_000_000) -> None:
        super().__init__(write_threshold, memory, "write_threshold")
        self.write_threshold = write_threshold

    def score(self, key: str, now: float) -> tuple[int, float]:
        # leaves first: an entry with stored children ranks above every leaf
        return (1 if self.view.child_count(key) else 0, self._last_use[key])


class VllmOffloadPolicy(_AdmitOnRepeat):
    """LRU with frequency-gated admission.

    :param min_requests: requests before a checkpoint is written.
    :param memory: how many not-yet-written keys to remember.
    """

    name = "vllm-offload"
    description = "vLLM offload-like: LRU, admit a checkpoint once requested min_requests (2) times"

    def __init__(self, *, min_requests: int = 2, memory: int = 1_000_000) -> None:
        super().__init__(min_requests, memory, "min_requests")
        self.min_requests = min_requests


class MarconiPolicy(Policy):
    """Normalised recency plus ``alpha`` times normalised FLOP efficiency.

    FLOPs saved by a checkpoint of ``t`` tokens over its nearest stored
    ancestor at ``a``: ``(t - a) + (t**2 - a**2) / (2 * context_scale)`` (linear
    layers plus attention), per byte.

    Min-max normalisation is over all eligible checkpoints (of the lowest
    priority), so the order changes with every victim. The victim is the least
    score on the :class:`~policies.staircase.Staircase` of ``(last use,
    efficiency)``: every other checkpoint is older-or-equal *and* less
    efficient than one on it, so it never scores lower. (Were two different
    efficiencies to round to one normalised value, a full scan could break the
    resulting tie differently.) With ``alpha=0`` efficiency counts for nothing,
    so every checkpoint is on the staircase and a victim costs O(n). Each
    checkpoint's nearest stored ancestor is kept up to date as checkpoints come
    and go. Runtime complexity: O(steps) per victim (on generated agent traces
    about 5% of the checkpoints: 580 steps at 100,000 requests, 985 at 200,000);
    O(log n) per hit; per insert or removal, O(ancestors + stored checkpoints
    below it).

    :param alpha: weight of FLOP efficiency against recency.
    :param context_scale: context length at which attention costs as much as the rest.
    :param native: the staircase compiled in C (``policies/_staircase.c``) when it
        was built (``None``), always (``True``) or never (``False``); the same decisions.
    """

    name = "marconi"
    description = "Marconi-like: normalised recency + alpha * FLOPs saved per byte (alpha fixed)"

    def __init__(self, *, alpha: float = 1.0, context_scale: float = 65_536.0, native: bool | None = None) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self._new_points = staircase_type(native=native)  # (a bad value or a missing module fails here)
        self.alpha = float(alpha)
        self.context_scale = float(context_scale)
        self._last_use: dict[str, float] = {}
        self._efficiency: dict[str, float] = {}
        self._nearest: dict[str, str | None] = {}  # stored key -> its nearest stored ancestor
        self._below: dict[str | None, set[str]] = {}  # stored key (None: none) -> keys it is nearest of
        self._through: dict[str, set[str]] = {}  # any aligned key -> stored keys it is an ancestor of
        self._ancestors: dict[str, tuple] = {}
        self._priority: dict[str, int] = {}  # eligible key -> its priority
        self._points: dict[int, StaircaseIndex] = {}  # priority -> its eligible checkpoints

    # ----------------------------------------------------- nearest ancestors
    def _compute(self, key: str) -> None:
        entry = self.view.entry(key)
        nearest = self._nearest[key]
        a = self.view.entry(nearest).tokens if nearest is not None else 0
        t = entry.tokens
        self._efficiency[key] = ((t - a) + (t * t - a * a) / (2 * self.context_scale)) / max(1, entry.size)
        priority = self._priority.get(key)
        if priority is not None and self.alpha:
            self._points[priority].change(key, self._efficiency[key])

    def _set_nearest(self, key: str, nearest: str | None) -> None:
        self._nearest[key] = nearest
        self._below.setdefault(nearest, set()).add(key)
        self._compute(key)

    def flop_efficiency(self, key: str) -> float:
        """FLOPs saved per byte over the nearest stored ancestor."""
        return self._efficiency[key]

    # ---------------------------------------------------------- eligibility
    def _place(self, key: str) -> None:
        """Make ``key`` a candidate. O(log n)."""
        priority = self._priority[key] = self.view.entry(key).priority
        points = self._points.get(priority)
        if points is None:
            points = self._points[priority] = self._new_points()
        points.append(key, self._last_use[key], self._efficiency[key] if self.alpha else 0.0)

    def _vacate(self, key: str) -> None:
        """Stop ``key`` being a candidate. O(log n)."""
        priority = self._priority.pop(key, None)
        if priority is None:
            return
        points = self._points[priority]
        points.remove(key)
        if not len(points):
            del self._points[priority]

    # --------------------------------------------------------------- events
    def on_insert(self, key: str, now: float) -> None:
        self._last_use[key] = now
        entry = self.view.entry(key)
        nearest = self.view.nearest_stored_ancestor(key)
        self._set_nearest(key, nearest)
        self._ancestors[key] = entry.ancestors
        for ancestor in entry.ancestors:
            self._through.setdefault(ancestor, set()).add(key)
        if entry.is_tail:
            return  # a tail is nobody's ancestor
        # stored keys below this one that hung from its nearest stored ancestor now hang from it
        siblings = self._below[nearest]
        moved = [k for k in self._through.get(key, ()) if k in siblings]
        for k in moved:
            siblings.discard(k)
            self._set_nearest(k, key)

    def _touch(self, key: str, now: float) -> None:
        self._last_use[key] = now
        priority = self._priority.get(key)
        if priority is not None:
            self._points[priority].move(key, now)

    def on_hit(self, key: str, now: float) -> None:
        self._touch(key, now)

    def on_prefix_hit(self, key: str, now: float) -> None:
        self._touch(key, now)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible and key not in self._priority:
            self._place(key)
        elif not eligible:
            self._vacate(key)

    def on_remove(self, key: str) -> None:
        self._vacate(key)
        self._last_use.pop(key, None)
        self._efficiency.pop(key, None)
        for ancestor in self._ancestors.pop(key, ()):
            below = self._through[ancestor]
            below.discard(key)
            if not below:
                del self._through[ancestor]
        nearest = self._nearest.pop(key, None)
        above = self._below.get(nearest)
        if above is not None:
            above.discard(key)
        for k in sorted(self._below.pop(key, ()), key=str):  # they now hang from this key's nearest
            self._set_nearest(k, nearest)
        if not self._below.get(nearest, True):
            del self._below[nearest]

    def victim(self, now: float) -> str | None:
        if not self._points:
            return None
        return self._points[min(self._points)].least(self.alpha)

    def _check(self) -> None:
        for key, nearest in self._nearest.items():
            assert nearest == self.view.nearest_stored_ancestor(key), key
            assert key in self._below[nearest], key
        assert sum(map(len, self._points.values())) == len(self._priority)
        for key, priority in self._priority.items():
            assert self.view.entry(key).priority == priority
        for points in self._points.values():
            points._check()
            assert all(self._last_use[k] == r and e == (self._efficiency[k] if self.alpha else 0.0)
                       for r, e, k in points.steps())
        for key, ancestors in self._ancestors.items():
            assert all(key in self._through[a] for a in ancestors), key
        assert sum(map(len, self._through.values())) == sum(map(len, self._ancestors.values()))
