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
  keyword argument (default 1.0). Victim choice is O(n).

>>> sorted(p.name for p in (HiCachePolicy, VllmOffloadPolicy, MarconiPolicy))
['hicache', 'marconi', 'vllm-offload']
"""

from __future__ import annotations

from collections import OrderedDict

from .base import EntryView, Policy
from .lru import LRUPolicy

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
        return (1 if self.view.children(key) else 0, self._last_use[key])


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

    :param alpha: weight of FLOP efficiency against recency.
    :param context_scale: context length at which attention costs as much as the rest.
    """

    name = "marconi"
    description = "Marconi-like: normalised recency + alpha * FLOPs saved per byte (alpha fixed)"

    def __init__(self, *, alpha: float = 1.0, context_scale: float = 65_536.0) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.context_scale = float(context_scale)
        self._last_use: dict[str, float] = {}
        self._eligible: set[str] = set()

    def on_insert(self, key: str, now: float) -> None:
        self._last_use[key] = now

    def on_hit(self, key: str, now: float) -> None:
        self._last_use[key] = now

    def on_prefix_hit(self, key: str, now: float) -> None:
        self._last_use[key] = now

    def on_eligible(self, key: str, eligible: bool) -> None:
        (self._eligible.add if eligible else self._eligible.discard)(key)

    def on_remove(self, key: str) -> None:
        self._eligible.discard(key)
        self._last_use.pop(key, None)

    def flop_efficiency(self, key: str) -> float:
        entry = self.view.entry(key)
        ancestor = self.view.nearest_stored_ancestor(key)
        a = self.view.entry(ancestor).tokens if ancestor is not None else 0
        t = entry.tokens
        return ((t - a) + (t * t - a * a) / (2 * self.context_scale)) / max(1, entry.size)

    def victim(self, now: float) -> str | None:
        if not self._eligible:
            return None
        lowest = min(self.view.entry(k).priority for k in self._eligible)
        keys = [k for k in self._eligible if self.view.entry(k).priority == lowest]
        recency = {k: self._last_use[k] for k in keys}
        efficiency = {k: self.flop_efficiency(k) for k in keys}

        def normalise(values: dict[str, float]) -> dict[str, float]:
            lo, hi = min(values.values()), max(values.values())
            span = hi - lo
            return {k: (v - lo) / span if span > 0 else 0.0 for k, v in values.items()}

        r, e = normalise(recency), normalise(efficiency)
        return min(keys, key=lambda k: (r[k] + self.alpha * e[k], recency[k], k))
