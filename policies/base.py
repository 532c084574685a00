"""The policy interface: what the eviction manager tells a policy, and asks it.

A policy is a small, pure object: no I/O, no clock, no threads. The eviction
manager (``kvstore.eviction.EvictionManager``) owns every byte of accounting
and the chain of prefixes; it *tells* the policy what happens and *asks* it
two questions:

========================  ==================================================
told                      when
========================  ==================================================
``on_insert(key, now)``   a checkpoint was stored
``on_hit(key, now)``      a lookup matched this checkpoint (the longest one)
``on_prefix_hit(k, now)`` ... and this stored ancestor of it, once per lookup
``on_evict(key, now)``    it is being evicted (``on_remove`` follows); a
                          removal without it is a deletion (moved, bad file)
``on_remove(key)``        a checkpoint left the tier (evicted or deleted)
``on_eligible(key, ok)``  it became (in)eligible as a victim: pins, and in the
                          ``chained`` layout, gaining or losing stored children
``on_pin / on_unpin``     the engine pinned or unpinned it
``on_session_end(k, now)`` the only session that used it ended (a hint; the
                          manager then evicts it before asking ``victim``)
========================  ==================================================

========================  ==================================================
asked                     answer
========================  ==================================================
``admit(candidate, now)`` may this new checkpoint be written at all?
``victim(now)``           the next key to evict, among *eligible* keys only,
                          or ``None`` when there is none
========================  ==================================================

``victim`` is asked once per eviction; the manager removes the key (and calls
``on_remove``) before asking again, so a policy sees the chain change under it
(in ``chained``, a parent becomes a leaf once its last child goes).

Every policy sees the chain through a read-only :class:`ChainView` bound by
:meth:`Policy.attach` before the first event: parent, stored children (and how many
are aligned), nearest stored ancestor, depth in tokens, size, priority, pin state.

Example: a complete, if naive, policy that evicts the largest file first.

>>> class LargestFirst(Policy):
...     name = "largest-first"
...     def __init__(self):
...         self._eligible = set()
...     def on_eligible(self, key, eligible):
...         (self._eligible.add if eligible else self._eligible.discard)(key)
...     def on_remove(self, key):
...         self._eligible.discard(key)
...     def victim(self, now):
...         return max(self._eligible, key=lambda k: self.view.entry(k).size, default=None)
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = ["EntryView", "ChainView", "Policy", "ScoredPolicy"]


@runtime_checkable
class EntryView(Protocol):
    """Read-only facts about one checkpoint (stored, or a candidate for admission)."""

    key: str
    tokens: int  #: prefix length in tokens (its depth in the chain)
    size: int  #: bytes it occupies on the tier, header included
    parent: str | None  #: key of the next shorter aligned prefix (stored or not)
    ancestors: tuple[str, ...]  #: keys of all shorter aligned prefixes, shortest first
    is_tail: bool  #: True for a checkpoint at the exact end of a prompt, off the block grid
    anchor: str | None  #: a tail's aligned key it hangs from (None for aligned checkpoints)
    priority: int  #: the engine's rank: a strict tier, higher kept longer; 0 by default
    pinned: bool
    inserted_at: float


class ChainView(Protocol):
    """Read-only view of the tier's chain of checkpoints that a policy may consult."""

    layout: str  #: ``"snapshot"`` or ``"chained"``
    block_tokens: int
    capacity_bytes: int

    @property
    def used_bytes(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def entry(self, key: str) -> EntryView: ...
    def children(self, key: str) -> Collection[str]: ...
    def child_count(self, key: str) -> int: ...
    def aligned_children(self, key: str) -> int: ...
    def nearest_stored_ancestor(self, key: str) -> str | None: ...
    def stored_ancestors(self, key: str) -> list[str]: ...
    def is_eligible(self, key: str) -> bool: ...


class Policy:
    """Base class of every eviction policy; override the hooks you need.

    Class attributes ``name`` (registry name) and ``description`` (one line)
    document it. Constructor keyword arguments configure it. Time arrives as
    ``now`` (seconds, any epoch, never decreasing) — a policy never reads a clock.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: True for offline references (such as Belady) that need the future and
    #: so cannot run inside an engine.
    offline: ClassVar[bool] = False

    view: ChainView

    def attach(self, view: ChainView) -> None:
        """Bind the read-only chain view; called once, before any event."""
        self.view = view

    def on_insert(self, key: str, now: float) -> None:
        """A checkpoint was stored (it is not yet eligible: ``on_eligible`` follows)."""

    def on_hit(self, key: str, now: float) -> None:
        """A lookup matched ``key`` as the longest stored prefix."""

    def on_prefix_hit(self, key: str, now: float) -> None:
        """``key`` is a stored ancestor of a checkpoint that was just hit."""

    def on_evict(self, key: str, now: float) -> None:
        """``key`` is being evicted, as this policy's victim or as an ended
        session's (``on_remove`` follows). A removal not preceded by this is a
        deletion: the checkpoint moved to another tier, or its file went bad."""

    def on_remove(self, key: str) -> None:
        """``key`` left the tier; forget it."""

    def on_eligible(self, key: str, eligible: bool) -> None:
        """``key`` became eligible (``True``) or ineligible (``False``) as a victim."""

    def on_pin(self, key: str) -> None:
        """The engine pinned ``key`` (``on_eligible(key, False)`` is also sent)."""

    def on_unpin(self, key: str) -> None:
        """The engine unpinned ``key``."""

    def on_session_end(self, key: str, now: float) -> None:
        """The one session that wrote or used ``key`` has ended (an engine's hint).
        The manager evicts such checkpoints first, before asking :meth:`victim`."""

    def admit(self, candidate: EntryView, now: float) -> bool:
        """Whether to write ``candidate`` at all. The default admits everything."""
        return True

    def victim(self, now: float) -> str | None:
        """The next key to evict among eligible keys, or ``None`` if none is left."""
        raise NotImplementedError(f"{type(self).__name__} must implement victim(now)")

    def _check(self) -> None:
        """Assert internal invariants (used by tests); the default checks nothing."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class ScoredPolicy(Policy):
    """A policy that ranks eligible entries by a sortable score, lowest evicted first.

    Subclasses implement :meth:`score` and call :meth:`_rescore` from the
    hooks that change it. A score that reads the chain (stored children, the
    nearest stored ancestor) sets ``chain_dependent = True``: the base class
    then rescores a checkpoint's stored parent and children whenever it is
    inserted or removed, so no cached score goes stale (``_check`` compares
    every cached score with a fresh one). The engine's ``priority`` is a
    strict tier above the score: a checkpoint is evicted only when no
    eligible one of lower priority is left.

    Eligible entries sit in a binary heap of ``((priority, score), seq, key)``
    with lazy deletion: a rescore pushes the new tuple and leaves the old one
    to be dropped when it reaches the top (``seq`` tells them apart; equal
    scores go in the order they were computed). Runtime complexity: O(log n)
    per rescore, amortised O(log n) per victim.

    >>> class Oldest(ScoredPolicy):
    ...     name = "oldest"
    ...     def score(self, key, now):
    ...         return self.view.entry(key).inserted_at
    """

    #: True when :meth:`score` reads the chain: neighbours are rescored as it changes
    chain_dependent: ClassVar[bool] = False

    def __init__(self) -> None:
        self._heap: list[tuple[Any, int, str]] = []  # ((priority, score), seq, key); stale ones too
        self._items: dict[str, tuple[Any, int, str]] = {}  # each key's current heap item (the object)
        self._scored_at: dict[str, float] = {}  # the ``now`` each cached score was computed at
        self._parent_of: dict[str, str | None] = {}  # chain_dependent: the parent each key was stored under
        self._eligible: set[str] = set()
        self._seq = 0

    def score(self, key: str, now: float) -> Any:
        """Sortable rank of ``key`` at ``now``: the lowest is evicted first."""
        raise NotImplementedError

    def _push(self, item: tuple[Any, int, str]) -> None:
        heap = self._heap
        heapq.heappush(heap, item)
        if len(heap) > 3 * len(self._eligible) + 64:  # mostly stale: keep only the current entries
            items = self._items
            self._heap = [items[key] for key in self._eligible]
            heapq.heapify(self._heap)

    def _head(self) -> tuple[Any, int, str] | None:
        """The eligible entry with the lowest ``((priority, score), seq)``, or ``None``.
        Amortised O(log n)."""
        heap, items, eligible = self._heap, self._items, self._eligible
        while heap:
            head = heap[0]
            key = head[2]
            if key in eligible and items[key] is head:
                return head
            heapq.heappop(heap)
        return None

    def _rescore(self, key: str, now: float) -> None:
        self._seq += 1
        score = (self.view.entry(key).priority, self.score(key, now))
        item = self._items[key] = (score, self._seq, key)
        self._scored_at[key] = now
        if key in self._eligible:
            self._push(item)

    def _rescore_neighbours(self, key: str, parent: str | None) -> None:
        """The chain changed at ``key``: rescore its stored parent and children
        (each at the time its score was last computed)."""
        for other in sorted({parent, *self.view.children(key)} - {None, key}):
            if other in self._items:
                self._rescore(other, self._scored_at[other])

    def on_insert(self, key: str, now: float) -> None:
        self._rescore(key, now)
        if self.chain_dependent:
            parent = self._parent_of[key] = self.view.entry(key).parent
            self._rescore_neighbours(key, parent)

    def on_hit(self, key: str, now: float) -> None:
        self._rescore(key, now)

    def on_eligible(self, key: str, eligible: bool) -> None:
        if eligible == (key in self._eligible):
            return
        if eligible:
            self._eligible.add(key)
            self._push(self._items[key])
        else:
            self._eligible.discard(key)  # its heap entry is stale from now on

    def on_remove(self, key: str) -> None:
        if key in self._eligible:
            self.on_eligible(key, False)
        self._items.pop(key, None)
        self._scored_at.pop(key, None)
        parent = self._parent_of.pop(key, None)
        if self.chain_dependent:  # its parent and children may still be stored: the chain changed there
            self._rescore_neighbours(key, parent)

    def victim(self, now: float) -> str | None:
        head = self._head()
        return None if head is None else head[2]

    def _check(self) -> None:
        current = {item[2] for item in self._heap if item[2] in self._eligible and self._items[item[2]] is item}
        assert current == self._eligible, (len(current), len(self._eligible))
        assert self._eligible <= set(self._items) == set(self._scored_at)
        for key, (cached, _, _) in self._items.items():  # no cached score went stale
            fresh = (self.view.entry(key).priority, self.score(key, self._scored_at[key]))
            assert cached == fresh, f"cached score of {key!r} is {cached}, a fresh one {fresh}"
