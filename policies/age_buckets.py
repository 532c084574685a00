"""Checkpoints grouped by priority, kind and age bucket: the index behind
``prefix-chain``'s victim search.

A policy that ranks a checkpoint by ``table[kind][bucket] · weight`` — a value
learned per kind and idle-time bucket, times the checkpoint's own weight —
needs, for every victim, the least such rank among eligible checkpoints. All
checkpoints in one (priority, kind, bucket) group share the table's factor, so
each group keeps its checkpoints ordered by ``(weight, last use, key)`` and the
victim is the least of the group minima: O(groups) per victim, not O(n).
Checkpoints change bucket as they idle; :meth:`AgeBuckets.age` moves those
whose idle time crossed into an older bucket (at most once per bucket in an
idle spell, each O(log n)).

Two implementations make the same decisions: this module's pure-Python class,
and a compiled twin (``policies/_age_buckets.c``) built when the package is
installed with a C compiler at hand. :func:`age_buckets` picks one.

>>> index = age_buckets(kinds=2, buckets=4, age_base=2.0)
>>> index.link("a", 0, 0, 0, 0.5, 1.0)
>>> index.link("b", 0, 1, 0, 0.9, 2.0)
>>> index.age(10.0)       # idle 9 and 8 events: both cross into bucket 2
(1, 1)
>>> index.victim(lambda kind: [1.0, 1.0, 1.0, 1.0] if kind == 0 else [0.1] * 4)
'b'
>>> index.unlink("b"), len(index), index.idle(0)
(True, 1, [0, 0, 1, 0])
"""

from __future__ import annotations

import collections
import heapq
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from .native import compiled as native_twin, pick

__all__ = ["AgeBuckets", "AgeBucketsIndex", "age_buckets", "compiled"]

Group = tuple[int, int, int]  # (priority, kind, bucket)


class AgeBucketsIndex(Protocol):
    """What both implementations offer (see :class:`AgeBuckets` for each method)."""

    def link(self, key: str, priority: int, kind: int, bucket: int, weight: float,
             last_use: float) -> None: ...
    def unlink(self, key: str) -> bool: ...
    def age(self, now: float) -> tuple[int, ...] | None: ...
    def densities(self, hits: Sequence[float], ends: Sequence[float], kind: int | None, top: int,
                  terms: Sequence[tuple[int, float, float, float]],
                  empty: Sequence[float]) -> tuple[list[float], float]: ...
    def victim(self, table_of: Callable[[int], Sequence[float]]) -> str | None: ...
    def idle(self, kind: int) -> list[int]: ...
    def top(self, kind: int) -> int: ...
    def entry(self, key: str) -> tuple[int, int, int, float, float] | None: ...
    def keys(self) -> list[str]: ...
    def check(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...


def compiled() -> type | None:
    """The compiled :class:`AgeBuckets`, or None when the package was installed without it.

    >>> compiled() is None or compiled().__module__ == "policies._age_buckets"
    True
    """
    return native_twin("_age_buckets", "AgeBuckets")


def age_buckets(*, kinds: int, buckets: int, age_base: float, native: bool | None = None) -> AgeBucketsIndex:
    """A new, empty index: the compiled one when it was built (``native=None``),
    required (``True``: ImportError without it) or the pure-Python one (``False``).

    >>> len(age_buckets(kinds=4, buckets=24, age_base=2.0, native=False))
    0
    """
    index: AgeBucketsIndex = pick(native, "_age_buckets", "AgeBuckets", AgeBuckets)(
        kinds=kinds, buckets=buckets, age_base=age_base)
    return index


class AgeBuckets:
    """Checkpoints grouped by (priority, kind, age bucket), each group ordered by
    ``(weight, last use, key)``; the pure-Python implementation.

    Bucket ``b`` holds idle times ``age_base · (2**b − 1) .. age_base · (2**(b+1) − 1)``;
    the last bucket has no upper end. Kinds are numbered ``0 .. kinds − 1``.

    Each group has two heaps with lazy deletion: an entry counts while its key is
    still linked in that group with that weight and last use (stale heads are
    popped where a head is read: in :meth:`age` and :meth:`victim`).

    >>> index = AgeBuckets(kinds=1, buckets=3, age_base=1.0)
    >>> index.link("k", 5, 0, 0, 2.0, 0.0)
    >>> index.entry("k"), "k" in index
    ((5, 0, 0, 2.0, 0.0), True)
    """

    def __init__(self, *, kinds: int, buckets: int, age_base: float) -> None:
        if not 1 <= kinds <= 8:
            raise ValueError(f"kinds must be in [1, 8], got {kinds!r}")
        if not 1 <= buckets <= 64:
            raise ValueError(f"buckets must be in [1, 64], got {buckets!r}")
        if not age_base > 0:
            raise ValueError(f"age_base must be > 0, got {age_base!r}")
        self.kinds, self.buckets, self.age_base = kinds, buckets, float(age_base)
        self._starts = [self.age_base * (2 ** b - 1) for b in range(buckets + 1)]
        self._group: dict[str, Group] = {}  # each linked key -> its group
        self._weight: dict[str, float] = {}
        self._last_use: dict[str, float] = {}
        self._by_weight: dict[Group, list[tuple[float, float, str]]] = {}
        self._by_age: dict[Group, list[tuple[float, str]]] = {}
        self._live: dict[Group, int] = {}  # keys linked in each group
        # each group's least entry that is not stale, or None once that entry went
        # stale (looked up again by the next victim): the victim reads only these
        self._least: dict[Group, tuple[float, float, str] | None] = {}
        self._groups_at: collections.Counter[int] = collections.Counter()  # groups in use per priority
        self._idle = [[0] * buckets for _ in range(kinds)]
        self._zeros = [0] * buckets
        self._top = [-1] * kinds
        # when each group's oldest checkpoint crosses into an older bucket: a heap of
        # (time, group), with the earliest time scheduled for each group
        self._moves: list[tuple[float, Group]] = []
        self._move_at: dict[Group, float] = {}

    def __len__(self) -> int:
        return len(self._group)

    def __contains__(self, key: object) -> bool:
        return key in self._group

    def keys(self) -> list[str]:
        """The linked keys. O(n)."""
        return list(self._group)

    def entry(self, key: str) -> tuple[int, int, int, float, float] | None:
        """``(priority, kind, bucket, weight, last_use)`` of a linked key, else None. O(1)."""
        group = self._group.get(key)
        if group is None:
            return None
        return (*group, self._weight[key], self._last_use[key])

    def idle(self, kind: int) -> list[int]:
        """Linked checkpoints of ``kind`` per bucket (do not change the list). O(1)."""
        return self._idle[kind]

    def top(self, kind: int) -> int:
        """The highest bucket a checkpoint of ``kind`` was ever linked in (-1: none). O(1)."""
        return self._top[kind]

    def link(self, key: str, priority: int, kind: int, bucket: int, weight: float, last_use: float) -> None:
        """Put a key that is not linked in its group. Runtime complexity: O(log n)."""
        if key in self._group:
            raise ValueError(f"{key!r} is already linked")
        if not 0 <= kind < self.kinds:
            raise ValueError(f"kind must be in [0, {self.kinds}), got {kind!r}")
        if not 0 <= bucket < self.buckets:
            raise ValueError(f"bucket must be in [0, {self.buckets}), got {bucket!r}")
        group = (priority, kind, bucket)
        self._group[key], self._weight[key], self._last_use[key] = group, weight, last_use
        by_weight = self._by_weight.get(group)
        item = (weight, last_use, key)
        if by_weight is None:
            by_weight = self._by_weight[group] = []
            self._groups_at[priority] += 1
            self._by_age[group], self._live[group] = [], 0
            self._least[group] = item
        else:
            least = self._least[group]
            if least is not None and item < least:
                self._least[group] = item
        heapq.heappush(by_weight, item)
        heapq.heappush(self._by_age[group], (last_use, key))
        live = self._live[group] = self._live[group] + 1
        self._idle[kind][bucket] += 1
        if bucket > self._top[kind]:
            self._top[kind] = bucket
        if bucket < self.buckets - 1:
            self._schedule(group, last_use + self._starts[bucket + 1])
        if len(by_weight) > 2 * live + 64:
            self._compact(group)

    def unlink(self, key: str) -> bool:
        """Take ``key`` out of its group (its heap entries go stale); False if it was
        not linked. Runtime complexity: O(1) (amortised)."""
        group = self._group.pop(key, None)
        if group is None:
            return False
        del self._weight[key], self._last_use[key]
        self._idle[group[1]][group[2]] -= 1
        live = self._live[group] = self._live[group] - 1
        if not live:
            del self._by_weight[group], self._by_age[group], self._live[group], self._least[group]
            self._groups_at[group[0]] -= 1
            return True
        least = self._least[group]
        if least is not None and least[2] == key:
            self._least[group] = None
        if len(self._by_weight[group]) > 2 * live + 64:
            self._compact(group)
        return True

    def _compact(self, group: Group) -> None:
        """Drop the stale entries of a group's heaps. O(entries)."""
        live = {e for e in self._by_weight[group]
                if self._group.get(e[2]) == group and self._weight[e[2]] == e[0] and self._last_use[e[2]] == e[1]}
        self._by_weight[group] = sorted(live)
        self._by_age[group] = sorted((e[1], e[2]) for e in live)

    def _schedule(self, group: Group, when: float) -> None:
        """Make sure ``group`` is looked at by ``when``. O(log groups)."""
        if when < self._move_at.get(group, math.inf):
            self._move_at[group] = when
            heapq.heappush(self._moves, (when, group))

    def age(self, now: float) -> tuple[int, ...] | None:
        """Move every checkpoint idle at ``now`` for longer than its bucket reaches
        (``last_use <= now − start of the next bucket``) to the bucket of its idle
        time; return how many moved per kind, or None if none did. Only the groups
        whose oldest checkpoint is due are looked at (this is the policy's hot path,
        hence the inlining). Runtime complexity: O(log groups) while none is due,
        plus O(log n) per checkpoint moved."""
        moves, move_at = self._moves, self._move_at
        due = now + 1e-9 * (1.0 + abs(now))  # (a margin for a clock in seconds)
        if not moves or moves[0][0] > due:
            return None
        group_of, last_use_of, weight_of = self._group, self._last_use, self._weight
        by_weight_of, by_age_of, live_of, starts = self._by_weight, self._by_age, self._live, self._starts
        least_of, idle_of, top = self._least, self._idle, self._top
        last_bucket, age_base = self.buckets - 1, self.age_base
        heappush, heappop, inf, log2 = heapq.heappush, heapq.heappop, math.inf, math.log2
        counts = [0] * self.kinds
        # times scheduled meanwhile are pushed after the loop: on a seconds clock one can
        # fall inside the rounding margin, and pushed at once it would be popped forever
        later: list[tuple[float, Group]] = []
        while moves and moves[0][0] <= due:
            when, group = heappop(moves)
            if move_at.get(group) != when:
                continue  # rescheduled earlier, or already handled
            del move_at[group]
            if group not in live_of:
                continue  # emptied since
            priority, kind, bucket_from = group
            start = starts[bucket_from + 1]
            cutoff, older, idle = now - start, bucket_from + 1, idle_of[kind]
            heap, moved = by_age_of[group], 0
            while True:
                last_use, key = heap[0]  # the oldest entry that is not stale
                if group_of.get(key) != group or last_use_of[key] != last_use:
                    heappop(heap)
                    continue
                if last_use > cutoff:  # (_schedule, inlined, into ``later``)
                    when = last_use + start
                    if when < move_at.get(group, inf):
                        move_at[group] = when
                        later.append((when, group))
                    break
                heappop(heap)  # (this entry: stale once moved)
                if not moved:
                    least = least_of[group]
                moved += 1
                if least is not None and least[2] == key:
                    least = least_of[group] = None
                b = int(log2(1 + (now - last_use) / age_base))  # (the age is > 0)
                if b > last_bucket:
                    b = last_bucket
                if b < older:
                    b = older
                target = (priority, kind, b)
                group_of[key] = target
                idle[bucket_from] -= 1
                idle[b] += 1
                if b > top[kind]:
                    top[kind] = b
                by_weight = by_weight_of.get(target)
                item = (weight_of[key], last_use, key)
                if by_weight is None:
                    by_weight = by_weight_of[target] = []
                    self._groups_at[priority] += 1
                    by_age_of[target], live_of[target] = [], 0
                    least_of[target] = item
                else:
                    target_least = least_of[target]
                    if target_least is not None and item < target_least:
                        least_of[target] = item
                heappush(by_weight, item)
                heappush(by_age_of[target], (last_use, key))
                live = live_of[target] = live_of[target] + 1
                if b < last_bucket:
                    when = last_use + starts[b + 1]
                    if when < move_at.get(target, inf):
                        move_at[target] = when
                        later.append((when, target))
                if len(by_weight) > 2 * live + 64:
                    self._compact(target)
                left = live_of[group] = live_of[group] - 1
                if not left:
                    del by_weight_of[group], by_age_of[group], live_of[group], least_of[group]
                    self._groups_at[priority] -= 1
                    break
                if len(by_weight_of[group]) > 2 * left + 64:
                    self._compact(group)
                    heap = by_age_of[group]
            counts[kind] += moved
        for move in later:
            heappush(moves, move)
        return tuple(counts) if any(counts) else None

    def densities(self, hits: Sequence[float], ends: Sequence[float], kind: int | None, top: int,
                  terms: Sequence[tuple[int, float, float, float]],
                  empty: Sequence[float]) -> tuple[list[float], float]:
        """LHD's hit density of every age bucket up to ``top``, from the hits and
        the ended idle spells counted per bucket, plus the checkpoints of ``kind``
        idle in each bucket now (a spell at least that long; ``kind=None``: none
        counted here); buckets above ``top`` keep ``empty``'s values. ``terms``
        gives, oldest bucket first, each bucket's ``(bucket, width, middle,
        prior hits)``. Returns the densities and the spells counted. For the
        formula, see :mod:`policies.prefix_chain`. Runtime complexity: O(buckets).

        >>> index = AgeBuckets(kinds=1, buckets=2, age_base=1.0)
        >>> terms = ((1, 2.0, 2.0, 0.0), (0, 1.0, 0.5, 0.0))
        >>> index.densities([1.5, 0.0], [1.0, 1.0], None, 1, terms, [9.0, 9.0])
        ([0.5, 0.0], 2.0)
        >>> index.densities([1.5, 0.0], [1.0, 1.0], None, 0, terms, [9.0, 9.0])  # bucket 1 left as given
        ([1.0, 9.0], 1.0)
        """
        idle = self._zeros if kind is None else self._idle[kind]
        out = list(empty)
        hit_sum = later_ends = later_time = 0.0
        for b, width, mid, prior in terms[self.buckets - 1 - top:]:  # oldest bucket first
            hit_sum += hits[b]
            # expected idle time still to come, summed over spells that reached bucket b:
            # those ending (or still idle) in a later bucket, those within this one
            # (half its width on average), and a prior of one spell lasting its whole width
            e = ends[b] + idle[b]
            out[b] = (hit_sum + prior) / ((later_time - mid * later_ends) + e * width / 2 + width)
            later_ends += e
            later_time += e * mid
        return out, later_ends

    def victim(self, table_of: Callable[[int], Sequence[float]]) -> str | None:
        """The linked key of least ``(table_of(kind)[bucket] · weight, last use, key)``
        among those of the lowest priority, or None if none is linked.
        ``table_of`` is called once for each kind met, and only for those.
        Runtime complexity: O(groups), plus O(log n) per stale head popped."""
        if not self._group:
            return None
        lowest = min(p for p, groups in self._groups_at.items() if groups)
        group_of, weight_of, last_use_of, by_weight_of = self._group, self._weight, self._last_use, self._by_weight
        least_of, heappop = self._least, heapq.heappop
        best_rank, best_use, best_key = math.inf, math.inf, None
        tables: dict[int, Sequence[float]] = {}
        for group, least in least_of.items():
            priority, kind, b = group
            if priority != lowest:
                continue
            if least is None:  # its least entry went stale: the least that is not
                heap = by_weight_of[group]
                while True:
                    weight, last_use, key = heap[0]
                    if group_of.get(key) == group and weight_of[key] == weight and last_use_of[key] == last_use:
                        break
                    heappop(heap)
                least_of[group] = heap[0]
            else:
                weight, last_use, key = least
            table = tables.get(kind)
            if table is None:
                table = tables[kind] = table_of(kind)
            rank = table[b] * weight
            if rank < best_rank or best_key is None or (rank == best_rank and (
                    last_use < best_use or (last_use == best_use and key < best_key))):
                best_rank, best_use, best_key = rank, last_use, key
        return best_key

    def check(self) -> None:
        """Raise AssertionError if an invariant is broken. O(n · groups)."""
        assert +self._groups_at == collections.Counter(group[0] for group in self._live)
        assert self._least.keys() == self._live.keys() == self._by_weight.keys() == self._by_age.keys()
        assert self._group.keys() == self._weight.keys() == self._last_use.keys()
        count = 0
        for group, live in self._live.items():
            members = {key for key, g in self._group.items() if g == group}
            assert live == len(members) > 0
            fresh = {e[2] for e in self._by_weight[group]
                     if self._weight.get(e[2]) == e[0] and self._last_use.get(e[2]) == e[1]} & members
            assert fresh == members == {e[1] for e in self._by_age[group] if self._last_use.get(e[1]) == e[0]} & members
            least = self._least[group]
            assert least is None or least == min(e for e in self._by_weight[group] if e[2] in fresh
                                                 and self._weight[e[2]] == e[0] and self._last_use[e[2]] == e[1])
            count += live
        assert count == len(self._group)
        for kind in range(self.kinds):
            for b in range(self.buckets):
                assert self._idle[kind][b] == sum(1 for g in self._group.values() if g[1:] == (kind, b))
                assert b <= self._top[kind] or not self._idle[kind][b]
