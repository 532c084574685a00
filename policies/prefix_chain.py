"""``prefix-chain``: value a checkpoint by the prefill it alone saves, per byte,
learning online which kinds of checkpoint get reused. The default policy.

For a checkpoint ``e`` of ``t_e`` tokens whose nearest *stored* ancestor has
``t_a`` tokens (0 if none)::

    H(e)     = L_e + value(e)
    value(e) = uses(e) · reuse(class(e)) · saved(e) / bytes(e)
    saved(e) = (t_e − t_a) + (t_e² − t_a²) / (2 · context_scale)
    uses(e)  = 1 + own_hits(e) + prefix_weight · prefix_hits(e)

and the lowest ``H`` is evicted first.

Why each term:

- ``saved(e)``: evicting ``e`` only costs the prefill between it and its
  nearest stored ancestor — a request that would have matched ``e`` still
  loads ``t_a`` tokens. A short prefix with nothing stored below it protects
  its whole length; a checkpoint 4096 tokens past its stored parent protects
  4096, and more the deeper they sit, since attention makes each token of a
  long context dearer (the quadratic term; ``context_scale=0`` drops it).
- ``/ bytes(e)``: snapshots cost nearly as much space as their depth, so the
  saving is per byte of disk.
- ``prefix_hits``: a hit on a deep checkpoint also passed through every shorter
  prefix of its chain; those prefixes are what still matches when a client
  rewrites the tail, compacts a session or edits the system message.
- ``reuse(class)``: the workload decides which kinds of checkpoint pay. Each
  checkpoint is a ``tail`` (end of a prompt, off the block grid), a ``leaf``
  (deepest aligned one of its chain), ``interior`` (one stored aligned child)
  or ``branch`` (two or more: a prefix shared by diverging prompts, such as a
  system prompt). The policy counts own hits per class against the number of
  checkpoints that entered the class, and weighs every checkpoint by its
  class's smoothed hit rate (relative to the best class). On agent sessions
  whose client rewrites the previous message, leaves and branches get hit and
  tails and interiors do not; on tool chains that extend the prompt exactly,
  tails get hit. Nothing about that is hard-coded.
- ``L_e``: GreedyDual aging. ``L`` rises to the ``H`` of each victim, and an
  entry's ``L_e`` is the ``L`` of its last use, so stale sessions sink below
  anything used since, however valuable they once were.
- ``priority`` (from ``put(..., priority=)``) is a strict tier above ``H``, as
  in every built-in policy: nothing is evicted while an eligible checkpoint of
  lower priority is left.

Admission: with ``admit_threshold > 0`` a checkpoint whose class's relative
reuse rate is below that threshold is not written while the store is full
(the default admits everything and lets eviction decide).

>>> PrefixChainPolicy().name
'prefix-chain'
"""

from __future__ import annotations

from sortedcontainers import SortedList

from .base import EntryView, Policy

__all__ = ["PrefixChainPolicy", "CLASSES"]

CLASSES = ("tail", "leaf", "interior", "branch")


class PrefixChainPolicy(Policy):
    """Marginal prefill saved per byte, hits through the chain, learned class weights.

    :param prefix_weight: weight of a hit through a deeper checkpoint (0..1).
    :param learn_classes: weigh checkpoints by their class's learned reuse rate.
    :param admit_threshold: decline checkpoints whose class's relative reuse
        rate is below this while the store is full (0 admits everything).
    :param marginal: count tokens from the nearest stored ancestor (True) or
        from 0 (False).
    :param class_floor: the least a class's learned weight can be (0..1).
    :param context_scale: context length at which attention costs as much as
        the rest of prefill (0: count tokens only).
    """

    name = "prefix-chain"
    description = ("ours: marginal prefill saved per byte, hits credited through the chain, "
                   "online-learned reuse per checkpoint class, GreedyDual aging")

    def __init__(self, *, prefix_weight: float = 0.5, learn_classes: bool = True,
                 admit_threshold: float = 0.0, marginal: bool = True,
                 class_floor: float = 0.5, context_scale: float = 65_536.0) -> None:
        if not 0.0 <= prefix_weight <= 1.0:
            raise ValueError(f"prefix_weight must be in [0, 1], got {prefix_weight!r}")
        if not 0.0 <= admit_threshold <= 1.0:
            raise ValueError(f"admit_threshold must be in [0, 1], got {admit_threshold!r}")
        self.prefix_weight = float(prefix_weight)
        self.learn_classes = bool(learn_classes)
        self.admit_threshold = float(admit_threshold)
        self.marginal = bool(marginal)
        self.class_floor = float(class_floor)
        self.context_scale = float(context_scale)
        self.inflation = 0.0
        self._own: dict[str, int] = {}
        self._prefix: dict[str, int] = {}
        self._base: dict[str, float] = {}
        self._h: dict[str, tuple[float, int]] = {}
        self._class: dict[str, str] = {}
        self._order = SortedList()  # (H, seq, key) of eligible keys
        self._eligible: set[str] = set()
        self._seq = 0
        self.class_hits = dict.fromkeys(CLASSES, 0)
        self.class_entries = dict.fromkeys(CLASSES, 0)
        self._parent: dict[str, str | None] = {}
        self._pending_rescore: dict[str, None] = {}  # an ordered set: runs repeat across processes

    # ------------------------------------------------------------ the score
    def reuse(self, cls: str) -> float:
        """Smoothed own-hit rate of a class, relative to the best class (0..1]."""
        if not self.learn_classes:
            return 1.0
        rates = {c: (self.class_hits[c] + 1) / (self.class_entries[c] + 1) for c in CLASSES}
        return self.class_floor + (1 - self.class_floor) * rates[cls] / max(rates.values())

    def classify(self, key: str) -> str:
        entry = self.view.entry(key)
        if entry.is_tail:
            return "tail"
        aligned_children = self.view.aligned_children(key)
        return "leaf" if aligned_children == 0 else "interior" if aligned_children == 1 else "branch"

    def marginal_tokens(self, key: str) -> int:
        entry = self.view.entry(key)
        if not self.marginal:
            return entry.tokens
        ancestor = self.view.nearest_stored_ancestor(key)
        return entry.tokens - (self.view.entry(ancestor).tokens if ancestor is not None else 0)

    def saved(self, key: str) -> float:
        """Prefill work the checkpoint saves over its nearest stored ancestor:
        its marginal tokens, plus attention's growth with context when
        ``context_scale`` is set: ``(t - a) + (t² - a²) / (2 · context_scale)``."""
        marginal = self.marginal_tokens(key)
        if self.context_scale <= 0:
            return marginal
        t = self.view.entry(key).tokens
        a = t - marginal
        return marginal + (t * t - a * a) / (2 * self.context_scale)

    def value(self, key: str) -> float:
        entry = self.view.entry(key)
        uses = 1 + self._own[key] + self.prefix_weight * self._prefix[key]
        value = uses * self.reuse(self._class[key]) * self.saved(key) / max(1, entry.size)
        return value

    def _rescore(self, key: str) -> None:
        eligible = key in self._eligible
        if eligible and key in self._h:
            h, seq = self._h[key]
            self._order.remove((h, seq, key))
        h = (self.view.entry(key).priority, self._base[key] + self.value(key))
        self._seq += 1
        self._h[key] = (h, self._seq)
        if eligible:
            self._order.add((h, self._seq, key))

    def _reclassify(self, key: str | None) -> None:
        if key is None or key not in self._class:
            return
        cls = self.classify(key)
        if cls != self._class[key]:
            self._class[key] = cls
            self.class_entries[cls] += 1
            self._rescore(key)

    # --------------------------------------------------------------- events
    def on_insert(self, key: str, now: float) -> None:
        self._own[key] = 0
        self._prefix[key] = 0
        self._base[key] = self.inflation
        self._parent[key] = self.view.entry(key).parent
        cls = self.classify(key)
        self._class[key] = cls
        self.class_entries[cls] += 1
        self._rescore(key)
        entry = self.view.entry(key)
        self._reclassify(entry.parent if entry.parent in self.view else None)
        for child in sorted(self.view.children(key)):  # their nearest stored ancestor is now this one
            if child in self._h:
                self._rescore(child)

    def on_hit(self, key: str, now: float) -> None:
        self.class_hits[self._class[key]] += 1
        self._own[key] += 1
        self._base[key] = self.inflation
        self._rescore(key)

    def on_prefix_hit(self, key: str, now: float) -> None:
        self._prefix[key] += 1
        self._base[key] = self.inflation
        self._rescore(key)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible == (key in self._eligible):
            return
        h, seq = self._h[key]
        if eligible:
            self._eligible.add(key)
            self._order.add((h, seq, key))
        else:
            self._eligible.discard(key)
            self._order.remove((h, seq, key))

    def on_remove(self, key: str) -> None:
        self.on_eligible(key, False)
        parent = self._parent.pop(key, None)
        for table in (self._own, self._prefix, self._base, self._h, self._class):
            table.pop(key, None)
        # its stored children lose their nearest stored ancestor and its parent
        # may change class: rescore them before the next victim is chosen
        self._pending_rescore.update((c, None) for c in sorted(self.view.children(key)) if c in self._h)
        if parent is not None and parent in self._h:
            self._pending_rescore[parent] = None

    def _flush(self) -> None:
        pending, self._pending_rescore = self._pending_rescore, {}
        for key in pending:
            if key in self._h and key in self.view:
                self._reclassify(key)
                self._rescore(key)

    def admit(self, candidate: EntryView, now: float) -> bool:
        if self.admit_threshold <= 0 or self.view.used_bytes + candidate.size <= self.view.capacity_bytes:
            return True
        cls = "tail" if candidate.is_tail else "leaf"
        return self.reuse(cls) >= self.admit_threshold

    def victim(self, now: float) -> str | None:
        if self._pending_rescore:
            self._flush()
        if not self._order:
            return None
        (_, h), _, key = self._order[0]
        self.inflation = max(self.inflation, h)
        return key

    def _check(self) -> None:
        assert len(self._order) == len(self._eligible)
        for h, seq, key in self._order:
            assert self._h[key] == (h, seq) and key in self._eligible
        assert set(self._h) == set(self._class) == set(self._own) == set(self._parent)
