"""``prefix-chain``: rank a checkpoint by the prefill it alone saves, per byte
and per unit of time it is kept, with reuse odds learned from the workload. The default policy.

For a checkpoint ``e`` of ``t_e`` tokens whose nearest *stored* ancestor has
``t_a`` tokens (0 if none), idle for ``age`` (counted in the store's events,
see below), of kind ``c``::

    rank(e)  = density(c, age) · saved(e) / bytes(e)
    saved(e) = (t_e − t_a) + (t_e² − t_a²) / (2 · context_scale)

    density(c, a) = Σ_{x ≥ a} hits_c(x)  /  Σ_{x ≥ a} (x − a) · ends_c(x)

and the lowest rank is evicted first. ``hits_c(x)`` counts uses of checkpoints
of kind ``c`` at age ``x``; ``ends_c(x)`` counts every end of an idle spell at
age ``x`` — a use, or an eviction — and every checkpoint idle at age ``x`` right
now (a spell at least that long: without these, ages at which nothing was ever
evicted would look promising, and a store full of stale files would keep them
and evict every fresh checkpoint instead). ``density`` is the expected number of future
uses per unit of time of keeping a checkpoint that has already been idle for
``a`` (the *hit density* of Beckmann et al., "LHD: Improving Cache Hit Rate
by Maximizing Hit Density", NSDI 2018), learned online in log-spaced age
buckets and forgotten with a half-life of ``memory`` idle-spell ends.

So ``rank`` is the prefill saved per byte per unit of time on disk, the
quantity a full store should maximise. Why each term:

- ``saved(e)``: evicting ``e`` only costs the prefill between it and its
  nearest stored ancestor — a request that would have matched ``e`` still
  loads ``t_a`` tokens. A short prefix with nothing stored below it protects
  its whole length; a checkpoint 4096 tokens past its stored parent protects
  4096, and more the deeper they sit, since attention makes each token of a
  long context dearer (the quadratic term; ``context_scale=0`` drops it).
- ``/ bytes(e)``: snapshots cost nearly as much space as their depth, so the
  saving is per byte of disk.
- the chain: a hit on a deep checkpoint passes through every shorter prefix
  of its chain, but a stored ancestor saves nothing on that request — the
  deeper checkpoint served it. A short shared prefix (a system prompt, an
  early turn) earns its place as the *longest* match whenever prompts diverge
  below it — a new session, a rewritten tail, a compacted history — and those
  are its own hits; its kind (``branch``, ``interior``) learns their density,
  and ``saved`` counts every token below it that no other stored checkpoint
  covers. So a pass-through is not counted by default (``prefix_weight=0``);
  with ``prefix_weight > 0`` it counts as that share of a use. Measured on the
  shipped traces at 5% capacity, counting it (0.5) costs 3–30% more
  re-prefill, because ancestors then look busy while they save nothing.
- ``density(c, age)`` instead of a fixed recency rule: the workload decides how
  long an idle checkpoint is still worth keeping. Agent sessions come back
  after a think time and then never again once they end; the density of a
  checkpoint idle for longer than sessions ever pause falls to nearly nothing,
  so stale sessions age out however valuable they once were, while one idle
  for a usual think time is kept. This is how the policy adapts online: the
  same code keeps tool-chain tails on agent traces and short shared prefixes
  on conversation traces because it measured which kind and age get reused.
- ``age`` counts *events*, not seconds: every insert and every hit the store
  sees advances the policy's clock by one (``clock="seconds"`` restores wall
  time). An engine writes all checkpoints of one prefill within seconds, and
  a trace may run 100x faster or slower than another; in seconds, both would
  squeeze every checkpoint into one age bucket, leave ``saved / bytes`` alone
  to rank, and evict the deepest snapshot of the live chain first (measured:
  1,792 of 2,048 tokens reloaded on the wall clock instead of 2,048). In
  events, the same sequence of events gives the same decisions at any speed,
  and "idle" means "the store served others meanwhile".
- the prior: with no hit seen at some age, ``density`` falls back on
  ``0.01 · prior_decay ** bucket`` hits, so among checkpoints with no evidence
  the longer idle one is worth less (recency as the prior). With a flat prior,
  LHD's ratio ranks a store full of never-hit stale files *above* the fresh
  live chain — their expected remaining lifetime is shorter — which lost the
  DS4 #444 scenario at 3–10% capacity (267 s of re-prefill where LRU needs
  169 s: the live 32,768-token checkpoint was evicted on every turn).
- kinds ``c``: a ``tail`` (the exact end of a prompt, off the block grid), a
  ``leaf`` (an aligned checkpoint nothing extended), an ``interior`` one (a
  later prompt extended it) or a ``branch`` (prompts diverged from it) are
  reused differently — on tool chains that extend the prompt exactly, tails
  get hit within seconds; when a client rewrites the previous message, tails
  never do and the last aligned checkpoint before the rewrite does; branches
  are shared prefixes. A kind only moves up (leaf, interior, branch), so it
  records the checkpoint's history and its statistics stay comparable. Each
  kind learns its own density (``learn_kinds=False`` pools them: 4–65% more
  re-prefill at 5% capacity on the shipped traces).
- ``priority`` (from ``put(..., priority=)``) is a strict tier above ``rank``,
  as in every built-in policy: nothing is evicted while an eligible checkpoint
  of lower priority is left.

Admission: with ``admit_threshold > 0`` a new checkpoint of a kind whose
density when fresh is below that share of the best kind's is not written while
the store is full (the default admits everything and lets eviction decide).

Cost: an age bucket holds its checkpoints sorted by ``saved/bytes``; the victim
is the lowest of the bucket minima, and checkpoints move to an older bucket
when asked for a victim — O(buckets · log n) per victim, and at most one move
per bucket in a checkpoint's idle spell. The buckets live in
:mod:`policies.age_buckets`, compiled when the package was built with a C
compiler (``native=``; the pure-Python twin makes the same decisions, about
half as fast end to end). A kind's densities are computed again
(O(buckets)) after any hit of that kind, and after its other counts (spells
ended by an eviction, checkpoints idle in each bucket) changed by more than
``drift`` of their total: every move, insert and eviction changes those by
one, and recomputing after each one took about 3.3 recomputes per victim
(under one now) and a sixth of the victim search's time on the shipped
strip-history trace at 5%.

>>> PrefixChainPolicy().name
'prefix-chain'
"""

from __future__ import annotations

import math

from .age_buckets import age_buckets
from .base import EntryView, Policy

__all__ = ["PrefixChainPolicy", "KINDS"]

KINDS = ("tail", "leaf", "interior", "branch")
_KIND_BY_CHILDREN = ("leaf", "interior", "branch")  # by the most stored aligned children, up to 2
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}


class PrefixChainPolicy(Policy):
    """Prefill saved per byte, times a hit density learned per kind and age.

    :param prefix_weight: how much a hit through a deeper checkpoint counts as a use
        of it (0..1; 0, the default, ignores such pass-throughs).
    :param learn_kinds: learn each kind of checkpoint separately (else pooled).
    :param admit_threshold: decline checkpoints whose kind's fresh density is below
        this share of the best kind's while the store is full (0 admits everything).
    :param marginal: count tokens from the nearest stored ancestor (True) or from 0 (False).
    :param context_scale: context length at which attention costs as much as the rest
        of prefill (0: count tokens only).
    :param age_base: width of the first age bucket, in events (or seconds with
        ``clock="seconds"``); bucket ``b`` holds idle times
        ``age_base · (2**b − 1) .. age_base · (2**(b+1) − 1)``.
    :param memory: idle-spell ends after which the learned statistics count half.
    :param clock: ``"events"`` (default: ages count inserts and hits, so the time
        scale changes nothing) or ``"seconds"`` (ages from ``now``).
    :param prior_decay: how fast the prior hit count falls per age bucket (0..1];
        1 gives every age the same prior.
    :param drift: how far a kind's spell ends and idle counts may change, as a
        share of their total, before its densities are computed again (0: after
        every change). Hits always count at once.
    :param native: keep the age buckets in the compiled index (``None``: when it
        was built; ``True``: required; ``False``: the pure-Python one). Both make
        the same decisions; see :mod:`policies.age_buckets`.
    """

    name = "prefix-chain"
    description = ("ours: prefill saved per byte (tokens past the nearest stored ancestor) times "
                   "a hit density learned online per kind of checkpoint and idle time")

    BUCKETS = 24

    def __init__(self, *, prefix_weight: float = 0.0, learn_kinds: bool = True,
                 admit_threshold: float = 0.0, marginal: bool = True,
                 context_scale: float = 65_536.0, age_base: float = 2.0, memory: int = 8_000,
                 clock: str = "events", prior_decay: float = 0.5, drift: float = 0.01,
                 native: bool | None = None) -> None:
        if not 0.0 <= prefix_weight <= 1.0:
            raise ValueError(f"prefix_weight must be in [0, 1], got {prefix_weight!r}")
        if not 0.0 <= admit_threshold <= 1.0:
            raise ValueError(f"admit_threshold must be in [0, 1], got {admit_threshold!r}")
        if not context_scale >= 0:
            raise ValueError(f"context_scale must be >= 0, got {context_scale!r}")
        if not age_base > 0:
            raise ValueError(f"age_base must be > 0, got {age_base!r}")
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ValueError(f"memory must be an int >= 1, got {memory!r}")
        if clock not in ("events", "seconds"):
            raise ValueError(f"clock must be 'events' or 'seconds', got {clock!r}")
        if not 0.0 < prior_decay <= 1.0:
            raise ValueError(f"prior_decay must be in (0, 1], got {prior_decay!r}")
        if not 0.0 <= drift < 1.0:
            raise ValueError(f"drift must be in [0, 1), got {drift!r}")
        self.drift = float(drift)
        self.clock = clock
        self.prior_decay = float(prior_decay)
        self._tick = 0
        self.prefix_weight = float(prefix_weight)
        self.learn_kinds = bool(learn_kinds)
        self.admit_threshold = float(admit_threshold)
        self.marginal = bool(marginal)
        self.context_scale = float(context_scale)
        self.age_base = float(age_base)
        self.memory = memory
        self.hits = {k: [0.0] * self.BUCKETS for k in KINDS}
        self.ends = {k: [0.0] * self.BUCKETS for k in KINDS}
        self._density: dict[str, list[float]] = {}  # kind -> density per bucket, while still current
        # per table: its count changes since it was computed, and how many it may take
        self._drifted = dict.fromkeys(KINDS, 0)
        self._tolerated = dict.fromkeys(KINDS, 0)
        self._spells = 0
        self._now = -math.inf
        self._last_use: dict[str, float] = {}
        self._kind: dict[str, str] = {}
        self._weight: dict[str, float] = {}
        self._extended: dict[str, int] = {}  # most stored aligned children seen
        # the eligible checkpoints, grouped by priority, kind and age bucket
        self._index = age_buckets(kinds=len(KINDS), buckets=self.BUCKETS, age_base=self.age_base, native=native)
        self._pending_rescore: dict[str, None] = {}  # an ordered set: runs repeat across processes
        self._widths = [self.age_base * 2 ** b for b in range(self.BUCKETS)]
        self._mids = [self._bucket_start(b) + self._widths[b] / 2 for b in range(self.BUCKETS)]
        # per bucket, oldest first: (bucket, width, middle, prior hits), the prior
        # divided by the decay once per bucket exactly as the suffix sums go
        terms, prior = [], 0.01 * self.prior_decay ** self.BUCKETS
        for b in range(self.BUCKETS - 1, -1, -1):
            prior /= self.prior_decay
            terms.append((b, self._widths[b], self._mids[b], prior))
        self._suffix_terms = tuple(terms)
        # a bucket above every one with hits, ends or idle checkpoints has density
        # prior / width: _densities starts below the highest bucket ever used per kind
        # (the higher of this, for spell ends, and the index's top, for idle checkpoints)
        self._top = dict.fromkeys(KINDS, -1)
        self._empty = [(0.0 + prior) / ((0.0 - mid * 0.0) + 0.0 * width / 2 + width)
                       for _, width, mid, prior in reversed(terms)]

    # ------------------------------------------------------------ the model
    def _time(self, now: float, event: bool) -> float:
        """The policy's own clock: events seen (an insert or a hit is one) or ``now``."""
        if self.clock == "seconds":
            self._now = max(self._now, now)
        else:
            self._tick += event
            self._now = float(self._tick)
        return self._now

    def bucket(self, age: float) -> int:
        """Age bucket of an idle time (log-spaced from ``age_base``)."""
        if age <= 0:
            return 0
        return min(self.BUCKETS - 1, int(math.log2(1 + age / self.age_base)))

    def _bucket_start(self, b: int) -> float:
        return self.age_base * (2 ** b - 1)

    def density(self, kind: str, age: float) -> float:
        """Learned uses per unit of time of keeping a checkpoint of ``kind`` idle for ``age``
        (events, or seconds with ``clock="seconds"``)."""
        return self._table(kind)[self.bucket(age)]

    def _table(self, kind: str) -> list[float]:
        """The density of each age bucket of ``kind``, computed again only once its
        statistics changed (a hit, or more than ``drift`` of its other counts: see
        :meth:`_drift`; a victim choice asks for the kinds it meets)."""
        pooled = kind if self.learn_kinds else KINDS[0]  # one pooled table when kinds are not learned
        table = self._density.get(pooled)
        if table is None:
            table, counted = self._densities(kind)
            self._density[pooled] = table
            self._drifted[pooled], self._tolerated[pooled] = 0, int(counted * self.drift)
        return table

    def _stale(self, kind: str) -> None:
        """The statistics of ``kind`` changed: its densities are computed again when asked."""
        if self.learn_kinds:
            self._density.pop(kind, None)
        else:
            self._density.clear()

    def _drift(self, kind: str, changes: int = 1) -> None:
        """Spell ends or idle counts of ``kind`` changed by one, ``changes`` times: its
        densities are computed again once the counts may differ from those they
        were computed from by more than ``drift`` of their total (summed over
        buckets, the absolute differences). O(1)."""
        pooled = kind if self.learn_kinds else KINDS[0]
        drifted = self._drifted[pooled] = self._drifted[pooled] + changes
        if drifted > self._tolerated[pooled]:
            self._density.pop(pooled, None)

    def _densities(self, kind: str) -> tuple[list[float], float]:
        """Density of each age bucket of ``kind``, and the spell ends and idle
        checkpoints they count. Runtime complexity: O(BUCKETS)."""
        index = self._index
        if self.learn_kinds:
            i = _KIND_INDEX[kind]
            return index.densities(self.hits[kind], self.ends[kind], i, max(self._top[kind], index.top(i)),
                                   self._suffix_terms, self._empty)
        # one pooled table: every kind's hits, spell ends and idle checkpoints summed per bucket
        hits = [sum(column) for column in zip(*(self.hits[k] for k in KINDS))]
        ends = [sum(column) for column in zip(*(self.ends[k] for k in KINDS),
                                              *(index.idle(i) for i in range(len(KINDS))))]
        top = max(max(self._top.values()), max(index.top(i) for i in range(len(KINDS))))
        return index.densities(hits, ends, None, top, self._suffix_terms, self._empty)

    def kind(self, key: str) -> str:
        """``tail``, or by the most stored aligned children it has had: ``leaf``
        (none), ``interior`` (one: a later prompt extended it) or ``branch``
        (several: prompts diverged from it). A kind only moves up, so it tells
        the checkpoint's history and its statistics stay comparable."""
        if self.view.entry(key).is_tail:
            return "tail"
        return _KIND_BY_CHILDREN[min(2, max(self._extended.get(key, 0), self.view.aligned_children(key)))]

    def marginal_tokens(self, key: str) -> int:
        entry = self.view.entry(key)
        return entry.tokens - self._below(key)

    def _below(self, key: str) -> int:
        """Tokens of ``key``'s nearest stored ancestor (0 if none, or when not ``marginal``)."""
        if not self.marginal:
            return 0
        ancestor = self.view.nearest_stored_ancestor(key)
        return self.view.entry(ancestor).tokens if ancestor is not None else 0

    def saved(self, key: str) -> float:
        """Prefill work the checkpoint saves over its nearest stored ancestor:
        its marginal tokens, plus attention's growth with context when
        ``context_scale`` is set: ``(t - a) + (t² - a²) / (2 · context_scale)``."""
        return self._saved(self.view.entry(key).tokens, self._below(key))

    def _saved(self, t: int, a: int) -> float:
        """:meth:`saved` of a checkpoint of ``t`` tokens whose nearest stored ancestor has ``a``."""
        if self.context_scale <= 0:
            return t - a
        return (t - a) + (t * t - a * a) / (2 * self.context_scale)

    def rank(self, key: str, now: float) -> float:
        """Prefill saved per byte per unit of time of keeping ``key``: the lowest is
        evicted first. ``now`` counts only with ``clock="seconds"``."""
        clock = now if self.clock == "seconds" else self._now
        return self.density(self._kind[key], clock - self._last_use[key]) * self._weight[key]

    def reuse(self, kind: str) -> float:
        """Density of a fresh checkpoint of ``kind``, relative to the best kind (0..1]."""
        best = max(self.density(k, 0.0) for k in KINDS)
        return self.density(kind, 0.0) / best

    def _end_spell(self, key: str, now: float, used: float) -> None:
        kind, b = self._kind[key], self.bucket(now - self._last_use[key])
        if b > self._top[kind]:
            self._top[kind] = b
        self.hits[kind][b] += used
        self.ends[kind][b] += 1
        if used:
            self._stale(kind)
        else:
            self._drift(kind)
        self._spells += 1
        if self._spells % self.memory == 0:
            for k in KINDS:
                self.hits[k] = [x / 2 for x in self.hits[k]]
                self.ends[k] = [x / 2 for x in self.ends[k]]
            self._density.clear()

    # ------------------------------------------------- the ordered buckets
    def _unlink(self, key: str) -> None:
        """Take ``key`` out of its group, if it is in one. O(log n)."""
        if self._index.unlink(key):
            self._drift(self._kind[key])

    def _link(self, key: str, bucket: int | None = None) -> None:
        """Put ``key`` in the group of its priority, kind and age bucket. O(log n)."""
        if bucket is None:
            bucket = self.bucket(self._now - self._last_use[key])
        kind = self._kind[key]
        self._index.link(key, self.view.entry(key).priority, _KIND_INDEX[kind], bucket,
                         self._weight[key], self._last_use[key])
        self._drift(kind)

    def _rescore(self, key: str) -> None:
        """Compute ``key``'s kind and weight again, and move it only if either changed
        (a checkpoint whose group lags behind its age is moved by ``_age`` before
        any victim is chosen). O(log n) when it moves."""
        entry = self.view.entry(key)  # (kind() and saved() inlined: this runs on every insert)
        if entry.is_tail:
            kind = "tail"
        else:
            children = self.view.aligned_children(key)
            extended = self._extended.get(key, 0)
            if children > extended:
                extended = children
            self._extended[key] = extended
            kind = _KIND_BY_CHILDREN[min(2, extended)]
        weight = self._saved(entry.tokens, self._below(key)) / max(1, entry.size)
        if kind == self._kind.get(key) and weight == self._weight.get(key):
            return
        eligible = key in self._index
        self._unlink(key)
        self._kind[key], self._weight[key] = kind, weight
        if eligible:
            self._link(key)

    def _use(self, key: str, now: float, used: float) -> None:
        now = self._time(now, True)
        self._end_spell(key, now, used)
        eligible = key in self._index
        self._unlink(key)
        self._last_use[key] = now
        if eligible:
            self._link(key, 0)

    # --------------------------------------------------------------- events
    def on_insert(self, key: str, now: float) -> None:
        now = self._time(now, True)
        self._last_use[key] = now
        parent = self.view.entry(key).parent
        self._rescore(key)
        if self.view.child_count(key):  # their nearest stored ancestor is now this one
            for child in sorted(self.view.children(key)):
                if child in self._weight:
                    self._rescore(child)
        if parent in self._weight:  # it may have become interior or a branch
            self._rescore(parent)

    def on_hit(self, key: str, now: float) -> None:
        self._use(key, now, 1.0)

    def on_prefix_hit(self, key: str, now: float) -> None:
        if self.prefix_weight > 0:
            self._use(key, now, self.prefix_weight)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible and key not in self._index:
            self._link(key)
        elif not eligible:
            self._unlink(key)

    def on_evict(self, key: str, now: float) -> None:
        self._end_spell(key, self._now, 0.0)  # an idle spell that ended without a use

    def on_remove(self, key: str) -> None:
        self.on_eligible(key, False)
        for table in (self._last_use, self._kind, self._weight, self._extended):
            table.pop(key, None)
        self._pending_rescore.pop(key, None)
        # its stored children lose their nearest stored ancestor: rescore them
        # before the next victim is chosen
        self._pending_rescore.update((c, None) for c in sorted(self.view.children(key)) if c in self._weight)

    def _flush(self) -> None:
        pending, self._pending_rescore = self._pending_rescore, {}
        for key in pending:
            if key in self._weight and key in self.view:
                self._rescore(key)

    def admit(self, candidate: EntryView, now: float) -> bool:
        if self.admit_threshold <= 0 or self.view.used_bytes + candidate.size <= self.view.capacity_bytes:
            return True
        return self.reuse("tail" if candidate.is_tail else "leaf") >= self.admit_threshold

    def victim(self, now: float) -> str | None:
        self._time(now, False)
        if self._pending_rescore:
            self._flush()
        index = self._index
        if not len(index):
            return None
        moved = index.age(self._now)
        if moved is not None:  # each move: one idle checkpoint less in a bucket, one more in another
            for i, count in enumerate(moved):
                if count:
                    self._drift(KINDS[i], 2 * count)
        return index.victim(self._table_at)

    def _table_at(self, kind: int) -> list[float]:
        """:meth:`_table` of the ``kind``-th of :data:`KINDS` (the index numbers kinds)."""
        return self._table(KINDS[kind])

    def _check(self) -> None:
        index = self._index
        index.check()
        assert set(index.keys()) <= set(self._last_use)
        assert set(self._last_use) == set(self._kind) == set(self._weight) >= set(self._extended)
        for key in index.keys():
            entry = index.entry(key)
            assert entry is not None
            priority, kind_index, bucket, weight, last_use = entry
            assert (priority, KINDS[kind_index], weight, last_use) == (
                self.view.entry(key).priority, self._kind[key], self._weight[key], self._last_use[key])
        for i, kind in enumerate(KINDS):
            top, idle = max(self._top[kind], index.top(i)), index.idle(i)
            for b in range(self.BUCKETS):
                assert b <= top or not (self.hits[kind][b] or self.ends[kind][b] or idle[b])
