"""The eviction manager: byte accounting, the prefix chain, pins, and the policy.

It performs no I/O and reads no clock. The store drives it with a disk tier
underneath; the simulator drives the very same class with a backend that only
counts bytes, so a policy that wins in simulation is the code an engine runs.

>>> from policies import LRUPolicy
>>> m = EvictionManager(100, LRUPolicy(), block_tokens=4)
>>> m.evict_for(60, now=0.0)
[]
>>> m.insert(Entry("a", tokens=4, size=60), now=0.0)
>>> [e.key for e in m.evict_for(60, now=1.0)]
['a']
>>> m.used_bytes, m.reserved_bytes
(0, 60)
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Collection, Iterator

from policies.base import Policy

from .errors import CapacityError, PinQuotaError, PolicyError
from .keys import PrefixKeys
from .records import Entry

__all__ = ["Entry", "EvictionManager", "LAYOUTS"]

log = logging.getLogger(__name__)

LAYOUTS = ("snapshot", "chained")


class _ReadOnlyEntry:
    """Read-only proxy of an :class:`Entry` that shows a policy the documented
    fields of :class:`policies.base.EntryView` and nothing else (not the file
    name, not the store's bookkeeping)."""

    __slots__ = ("_entry",)
    FIELDS = frozenset({"key", "tokens", "size", "parent", "ancestors", "is_tail", "anchor", "priority",
                        "pinned", "inserted_at"})

    def __init__(self, entry: Entry) -> None:
        object.__setattr__(self, "_entry", entry)

    def __getattr__(self, name: str):  # (only names that are not fields get here: see below)
        raise AttributeError(f"a policy's view of a checkpoint has no {name!r}; it shows "
                             f"{', '.join(sorted(_ReadOnlyEntry.FIELDS))}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("entries seen by a policy are read-only")

    def __repr__(self) -> str:
        return f"ReadOnly({self._entry!r})"


def _field(name: str) -> property:
    """A read-only property of ``_ReadOnlyEntry`` that shows the entry's ``name``
    (a policy reads these on its hot path: a property costs a fraction of ``__getattr__``)."""
    return property(operator.attrgetter(f"_entry.{name}"), doc=f"the checkpoint's {name}")


for _name in _ReadOnlyEntry.FIELDS:
    setattr(_ReadOnlyEntry, _name, _field(_name))
del _name


class EvictionManager:
    """Keeps one tier within ``capacity_bytes`` by asking a policy for victims.

    Space is *reserved* before a payload is written (:meth:`evict_for`), and the
    reservation becomes an entry on :meth:`insert` (or is given back with
    :meth:`release`). ``used_bytes + reserved_bytes <= capacity_bytes`` holds
    after every call.

    :param capacity_bytes: the tier's budget.
    :param policy: a :class:`policies.Policy` instance; the manager attaches to it.
    :param layout: ``"snapshot"`` (any unpinned entry is eligible) or
        ``"chained"`` (only unpinned leaves are eligible).
    :param pin_quota_bytes: most bytes that pinned entries may hold
        (default: half the capacity).
    """

    def __init__(
        self,
        capacity_bytes: int,
        policy: Policy,
        *,
        layout: str = "snapshot",
        block_tokens: int = 4096,
        pin_quota_bytes: int | None = None,
    ) -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
            raise TypeError(f"capacity_bytes must be an int, not {type(capacity_bytes).__name__}")
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if pin_quota_bytes is None:
            pin_quota_bytes = capacity_bytes // 2
        if not 0 <= pin_quota_bytes <= capacity_bytes:
            raise ValueError(f"pin_quota_bytes must be in [0, capacity_bytes], got {pin_quota_bytes}")
        self.capacity_bytes = capacity_bytes
        self.layout = layout
        self.block_tokens = block_tokens
        self.pin_quota_bytes = pin_quota_bytes
        self.policy = policy
        self._entries: dict[str, Entry] = {}
        self._views: dict[str, _ReadOnlyEntry] = {}  # one read-only proxy per entry, made once
        self._children: dict[str, set[str]] = {}
        self._tail_children: dict[str, int] = {}
        self._shielded: set[str] = set()
        self._tails: dict[str, dict[str, int]] = {}  # anchor key -> {tail key: tokens}
        self._sessions: dict[str, set[str]] = {}  # key -> every session that wrote or used it
        self._session_keys: dict[str, dict[str, None]] = {}  # live session -> its keys, first noted first
        self._ended: dict[str, None] = {}  # keys of ended, unshared sessions: first victims, oldest first
        self._used = 0
        self._reserved = 0
        self._pinned_bytes = 0
        self._pinned: set[str] = set()
        self.evictions = 0
        self.evicted_bytes = 0
        policy.attach(self)

    # ----------------------------------------------------------- chain view
    @property
    def used_bytes(self) -> int:
        """Bytes held by stored entries."""
        return self._used

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved for writes in flight."""
        return self._reserved

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self._used - self._reserved

    @property
    def pinned_bytes(self) -> int:
        return self._pinned_bytes

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def entry(self, key: str) -> _ReadOnlyEntry:
        """Read-only view of a stored entry; ``KeyError`` if absent. O(1)."""
        return self._views[key]

    def get(self, key: str) -> Entry | None:
        """The live :class:`Entry` (for the store's own use), or ``None``."""
        return self._entries.get(key)

    def children(self, key: str) -> frozenset[str]:
        """Stored entries whose parent is ``key`` (a copy: O(children); see :meth:`child_count`)."""
        return frozenset(self._children.get(key, ()))

    def child_count(self, key: str) -> int:
        """How many stored entries have ``key`` as parent (tails included). O(1).

        >>> m = EvictionManager(100, __import__("policies").LRUPolicy(), block_tokens=4)
        >>> m.insert(Entry("a", tokens=4, size=10), now=0.0, reserved=0)
        >>> m.insert(Entry("b", tokens=8, size=10, parent="a", ancestors=("a",)), now=1.0, reserved=0)
        >>> m.child_count("a"), m.child_count("b")
        (1, 0)
        """
        return len(self._children.get(key, ()))

    def aligned_children(self, key: str) -> int:
        """How many stored entries that are not tails have ``key`` as parent. O(1)."""
        return len(self._children.get(key, ())) - self._tail_children.get(key, 0)

    def stored_ancestors(self, key: str) -> list[str]:
        """Stored strict ancestors of ``key``, shortest first."""
        return [a for a in self._entries[key].ancestors if a in self._entries]

    def nearest_stored_ancestor(self, key: str) -> str | None:
        for ancestor in reversed(self._entries[key].ancestors):
            if ancestor in self._entries:
                return ancestor
        return None

    def is_eligible(self, key: str) -> bool:
        entry = self._entries[key]
        if entry.pinned or key in self._shielded:
            return False
        return self.layout == "snapshot" or not self._children.get(key)

    # --------------------------------------------------------------- lookup
    def longest_match(self, prefix: PrefixKeys) -> tuple[int, str] | None:
        """Longest stored checkpoint that is a prefix of ``prefix``'s tokens.

        Walks the aligned keys from the deepest down; at each aligned length it
        first tries the tails anchored there. Runtime complexity: O(blocks),
        plus O(block_tokens) hashing at each anchor holding tails (every
        candidate's key in one pass).
        """
        return prefix.longest_held(self._tails.get, self._entries.__contains__)

    def tails_at(self, anchor: str) -> dict[str, int]:
        """Tails stored under the aligned key ``anchor``: ``{tail key: tokens}``."""
        return dict(self._tails.get(anchor, {}))

    # --------------------------------------------------------------- events
    def admit(self, candidate: Entry, now: float) -> bool:
        """Ask the policy whether ``candidate`` should be written at all."""
        if candidate.key in self._entries:
            return False
        try:
            return bool(self.policy.admit(_ReadOnlyEntry(candidate), now))
        except Exception as exc:
            raise PolicyError(f"policy {self._policy_name()} raised in admit(): {exc!r}") from exc

    def make_room(self, entry: Entry, now: float, *, protect: Collection[str] = ()) -> list[Entry] | None:
        """May ``entry`` be written, and what goes to make room? The one decision
        the store, every tier, the simulator's replay and the tests ask.

        Returns ``None`` when it is not written — already stored, the policy
        does not admit it, or it would fit only by evicting what ``protect``
        names (in ``chained``, its own ancestors: it would be an orphan) —
        and otherwise the entries evicted for it, with ``entry.size`` bytes now
        reserved for :meth:`insert`. Raises :class:`CapacityError` when it can
        never fit (larger than the tier, or everything left is pinned or in
        flight), and :class:`PolicyError` when the policy breaks its contract.

        >>> from policies import LRUPolicy
        >>> m = EvictionManager(100, LRUPolicy(), block_tokens=4)
        >>> m.make_room(Entry("a", tokens=4, size=60), now=0.0)
        []
        >>> m.insert(Entry("a", tokens=4, size=60), now=0.0)
        >>> [e.key for e in m.make_room(Entry("b", tokens=4, size=60), now=1.0)]
        ['a']

        Runtime complexity: O(victims * policy.victim).
        """
        if entry.key in self._entries:
            return None
        if entry.size > self.capacity_bytes:
            raise CapacityError(
                f"payload of {entry.size} bytes exceeds the tier's capacity_bytes={self.capacity_bytes}")
        if not self.admit(entry, now):
            return None
        if protect and entry.size > self.capacity_bytes - self._reserved - self._pinned_bytes \
                - self._held_bytes(protect):
            return None  # only the protected chain (or what pins hold) could make room
        return self.evict_for(entry.size, now, protect=protect)

    def _held_bytes(self, protect: Collection[str]) -> int:
        """Unpinned bytes no eviction can reach while ``protect`` is shielded: the
        shielded entries and, in ``chained``, the ancestors of pinned entries
        (leaf-first eviction never gets to them). So :meth:`make_room` knows up
        front whether room can be made, and never evicts half-way to fail."""
        held = {key for key in protect if key in self._entries}
        if self.layout == "chained":
            for key in self._pinned:
                held.update(a for a in self._entries[key].ancestors if a in self._entries)
        return sum(self._entries[key].size for key in held if not self._entries[key].pinned)

    def evict_for(self, nbytes: int, now: float, *, protect: Collection[str] = ()) -> list[Entry]:
        """Reserve ``nbytes``, evicting as needed; return the evicted entries.

        ``protect`` names keys that must survive this eviction — in the
        ``chained`` layout, the ancestors of the block about to be written.

        The caller deletes the victims' payloads. On failure nothing is
        reserved and the exception's ``evicted`` attribute lists the entries
        already removed (they are gone from the manager and must be deleted).

        Raises :class:`CapacityError` when ``nbytes`` can never fit (larger than
        the capacity, or only pinned or in-flight bytes are left), and
        :class:`PolicyError` when the policy breaks its contract.
        Runtime complexity: O(victims * policy.victim).
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes > self.capacity_bytes:
            raise CapacityError(
                f"payload of {nbytes} bytes exceeds the tier's capacity_bytes={self.capacity_bytes}"
            )
        if nbytes > self.capacity_bytes - self._pinned_bytes - self._reserved:
            raise CapacityError(
                f"cannot free {nbytes} bytes: {self._pinned_bytes} bytes are pinned and "
                f"{self._reserved} reserved of capacity_bytes={self.capacity_bytes}"
            )
        if not protect:
            return self._evict_for(nbytes, now)
        shielded = [k for k in protect if k in self._entries]
        for key in shielded:
            if self.is_eligible(key):
                self._call("on_eligible", key, False)
        self._shielded = set(shielded)  # is_eligible() is False for them until the end
        try:
            return self._evict_for(nbytes, now)
        finally:
            self._shielded = set()
            for key in shielded:  # eligible now, whatever happened meanwhile (a last child evicted)
                if key in self._entries and self.is_eligible(key):
                    self._call("on_eligible", key, True)

    def _evict_for(self, nbytes: int, now: float) -> list[Entry]:
        evicted: list[Entry] = []
        while self.free_bytes < nbytes:
            key = self._next_victim(now, evicted)
            if key is None:
                if any(self.is_eligible(k) for k in self._entries):
                    raise self._fail(PolicyError(
                        f"policy {self._policy_name()} named no victim while {nbytes - self.free_bytes} "
                        f"more bytes were needed and eligible entries remain"), evicted)
                raise self._fail(CapacityError(
                    f"cannot free {nbytes} bytes: {self._pinned_bytes} bytes are pinned and "
                    f"{self._reserved} reserved of capacity_bytes={self.capacity_bytes}"), evicted)
            self._evict(key, evicted, now)
        self._reserved += nbytes
        return evicted

    def evict_some(self, count: int, now: float) -> list[Entry]:
        """Evict up to ``count`` entries the policy names (fewer if it names
        none), e.g. to free room in an index rather than bytes. Same contract
        checks as :meth:`evict_for`."""
        evicted: list[Entry] = []
        for _ in range(count):
            key = self._next_victim(now, evicted)
            if key is None:
                break
            self._evict(key, evicted, now)
        return evicted

    def _next_victim(self, now: float, evicted: list[Entry]) -> str | None:
        """The oldest eligible checkpoint of an ended session, else the policy's
        victim (checked); ``None`` when it names none."""
        for key in self._ended:
            if self.is_eligible(key):
                return key
        try:
            key = self.policy.victim(now)
        except Exception as exc:
            raise self._fail(PolicyError(
                f"policy {self._policy_name()} raised in victim(): {exc!r}"), evicted) from exc
        if key is None:
            return None
        if key not in self._entries:
            raise self._fail(PolicyError(
                f"policy {self._policy_name()} named {key!r}, which is not stored"), evicted)
        if not self.is_eligible(key):
            raise self._fail(PolicyError(
                f"policy {self._policy_name()} named {key!r}, which is not eligible "
                f"(pinned, or has stored children in the chained layout)"), evicted)
        return key

    def _evict(self, key: str, evicted: list[Entry], now: float) -> None:
        try:  # (what _call does, inlined at the hooks every write or eviction calls)
            self.policy.on_evict(key, now)
        except Exception as exc:
            raise self._raised("on_evict", exc) from exc
        evicted.append(self.remove(key))
        self.evictions += 1
        self.evicted_bytes += evicted[-1].size

    @staticmethod
    def _fail(exc: Exception, evicted: list[Entry]) -> Exception:
        exc.evicted = evicted  # type: ignore[attr-defined]
        return exc

    def set_reserved(self, nbytes: int) -> None:
        """Set the total of reservations in flight (the store uses this to mirror
        reservations made by other processes sharing the tier)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        self._reserved = nbytes

    def release(self, nbytes: int) -> None:
        """Give back a reservation that will not become an entry."""
        if not 0 <= nbytes <= self._reserved:
            raise ValueError(f"cannot release {nbytes} bytes; {self._reserved} are reserved")
        self._reserved -= nbytes

    def insert(self, entry: Entry, now: float, *, reserved: int | None = None) -> None:
        """Add a stored entry, consuming ``reserved`` bytes of reservation
        (default: its size). Pass ``reserved=0`` to adopt an entry written by
        someone else (another process, or a rebuild from files)."""
        if entry.key in self._entries:
            raise ValueError(f"key {entry.key!r} is already stored")
        reserved = entry.size if reserved is None else reserved
        if reserved:
            self.release(reserved)
        entry.pinned = False
        entry.inserted_at = now
        self._entries[entry.key] = entry
        self._views[entry.key] = _ReadOnlyEntry(entry)
        self._used += entry.size
        if entry.parent is not None:
            siblings = self._children.setdefault(entry.parent, set())
            became_parent = not siblings
            siblings.add(entry.key)
            if entry.is_tail:
                self._tail_children[entry.parent] = self._tail_children.get(entry.parent, 0) + 1
        else:
            became_parent = False
        if entry.is_tail and entry.anchor is not None:
            self._tails.setdefault(entry.anchor, {})[entry.key] = entry.tokens
        policy = self.policy
        try:
            policy.on_insert(entry.key, now)
        except Exception as exc:
            raise self._raised("on_insert", exc) from exc
        if self.is_eligible(entry.key):  # in chained, children synced before it may exist
            try:
                policy.on_eligible(entry.key, True)
            except Exception as exc:
                raise self._raised("on_eligible", exc) from exc
        if became_parent and self.layout == "chained" and entry.parent in self._entries:
            if not self._entries[entry.parent].pinned:
                self._call("on_eligible", entry.parent, False)

    def remove(self, key: str) -> Entry:
        """Remove a stored entry (the caller deletes its payload)."""
        entry = self._entries[key]
        if self.is_eligible(key):
            try:
                self.policy.on_eligible(key, False)
            except Exception as exc:
                raise self._raised("on_eligible", exc) from exc
        if entry.pinned:
            self._pinned_bytes -= entry.size
            self._pinned.discard(key)
        del self._entries[key]
        del self._views[key]
        self._used -= entry.size
        if entry.parent is not None:
            siblings = self._children.get(entry.parent)
            if entry.is_tail and siblings is not None and key in siblings:
                left = self._tail_children[entry.parent] - 1
                if left:
                    self._tail_children[entry.parent] = left
                else:
                    del self._tail_children[entry.parent]
            if siblings is not None:
                siblings.discard(key)
                if not siblings:
                    del self._children[entry.parent]
                    parent = self._entries.get(entry.parent)
                    if parent is not None and self.layout == "chained" and self.is_eligible(parent.key):
                        self._call("on_eligible", parent.key, True)
        if entry.is_tail and entry.anchor is not None:
            tails = self._tails.get(entry.anchor)
            if tails is not None:
                tails.pop(key, None)
                if not tails:
                    del self._tails[entry.anchor]
        self._ended.pop(key, None)
        for session in self._sessions.pop(key, ()):
            keys = self._session_keys.get(session)
            if keys is not None:
                keys.pop(key, None)
        try:
            self.policy.on_remove(key)
        except Exception as exc:
            raise self._raised("on_remove", exc) from exc
        return entry

    def record_hit(self, key: str, now: float, *, session: str | None = None) -> None:
        """A lookup matched ``key``: tell the policy, and credit its stored ancestors.

        ``session`` (optional hint) marks ``key`` and those ancestors as used by it.
        """
        entries = self._entries
        entry = entries[key]
        try:
            self.policy.on_hit(key, now)
        except Exception as exc:
            raise self._raised("on_hit", exc) from exc
        try:
            on_prefix_hit = self.policy.on_prefix_hit
        except AttributeError as exc:
            raise PolicyError(f"policy {self._policy_name()} has no on_prefix_hit(): {exc!r}") from exc
        for ancestor in entry.ancestors:
            if ancestor in entries:
                try:  # (what _call does, inlined: a deep hit credits many ancestors)
                    on_prefix_hit(ancestor, now)
                except Exception as exc:
                    raise self._raised("on_prefix_hit", exc) from exc
                if session is not None:
                    self.note_session(ancestor, session)
        if session is not None:
            self.note_session(key, session)

    # ------------------------------------------------------- session hints
    def note_session(self, key: str, session: str) -> None:
        """Record that ``session`` wrote or used the stored ``key`` (a hint from
        an engine that knows its sessions). Runtime complexity: O(1)."""
        if key not in self._entries:
            raise KeyError(key)
        owners = self._sessions.setdefault(key, set())
        if session not in owners:
            owners.add(session)
            self._session_keys.setdefault(session, {})[key] = None
            self._ended.pop(key, None)  # used again: no longer an ended session's own

    def end_session(self, session: str, now: float) -> int:
        """``session`` is over: its checkpoints that no other session wrote or used
        become the first victims (oldest ended first), ahead of the policy's
        choice; the policy hears ``on_session_end`` for each. Returns how many.
        Runtime complexity: O(keys of the session).

        >>> from policies import LRUPolicy
        >>> m = EvictionManager(100, LRUPolicy(), block_tokens=4)
        >>> m.insert(Entry("a", tokens=4, size=40), now=0.0, reserved=0); m.note_session("a", "s1")
        >>> m.insert(Entry("b", tokens=4, size=40), now=1.0, reserved=0); m.note_session("b", "s2")
        >>> m.end_session("s2", now=2.0)
        1
        >>> [e.key for e in m.evict_for(60, now=3.0)]  # LRU alone would evict "a"
        ['b']
        """
        ended = 0
        for key in self._session_keys.pop(session, ()):  # in the order the session noted them
            if self._sessions.get(key) == {session}:
                self._ended[key] = None
                self._call("on_session_end", key, now)
                ended += 1
        return ended

    def restore_hit(self, key: str, now: float) -> None:
        """Tell the policy of a hit recorded before a reopen (no prefix hits)."""
        self._call("on_hit", key, now)

    def pin(self, key: str, *, force: bool = False) -> None:
        """Keep ``key`` out of eviction; raises :class:`PinQuotaError` past the
        quota (``force=True`` mirrors a pin already granted elsewhere)."""
        entry = self._entries[key]
        if entry.pinned:
            return
        if not force and self._pinned_bytes + entry.size > self.pin_quota_bytes:
            raise PinQuotaError(
                f"pinning {entry.size} bytes would exceed pin_quota_bytes={self.pin_quota_bytes} "
                f"({self._pinned_bytes} already pinned)"
            )
        was_eligible = self.is_eligible(key)
        entry.pinned = True
        self._pinned_bytes += entry.size
        self._pinned.add(key)
        if was_eligible:
            self._call("on_eligible", key, False)
        self._call("on_pin", key)

    def unpin(self, key: str) -> None:
        """Make ``key`` evictable again (no-op when not pinned)."""
        entry = self._entries[key]
        if not entry.pinned:
            return
        entry.pinned = False
        self._pinned_bytes -= entry.size
        self._pinned.discard(key)
        self._call("on_unpin", key)
        if self.is_eligible(key):
            self._call("on_eligible", key, True)

    # ------------------------------------------------------------- internal
    def _policy_name(self) -> str:
        return repr(getattr(self.policy, "name", "") or type(self.policy).__name__)

    def _call(self, hook: str, *args: object) -> None:
        try:
            getattr(self.policy, hook)(*args)
        except Exception as exc:
            raise self._raised(hook, exc) from exc

    def _raised(self, hook: str, exc: Exception) -> PolicyError:
        """The error for a policy whose ``hook`` raised ``exc`` (or does not exist)."""
        return PolicyError(f"policy {self._policy_name()} raised in {hook}(): {exc!r}")

    def _check(self) -> None:
        """Assert every internal invariant (for tests)."""
        assert self._used == sum(e.size for e in self._entries.values())
        assert 0 <= self._reserved and self._used + self._reserved <= self.capacity_bytes, (
            self._used, self._reserved, self.capacity_bytes)
        assert self._pinned_bytes == sum(e.size for e in self._entries.values() if e.pinned)
        assert self._pinned == {k for k, e in self._entries.items() if e.pinned}
        for parent, kids in self._children.items():
            assert kids and all(self._entries[k].parent == parent for k in kids)
            assert self._tail_children.get(parent, 0) == sum(self._entries[k].is_tail for k in kids)
        assert set(self._views) == set(self._entries)
        assert set(self._ended) <= set(self._entries) and set(self._sessions) <= set(self._entries)
        for session, keys in self._session_keys.items():
            assert all(session in self._sessions[k] for k in keys), session
        for entry in self._entries.values():
            if entry.parent is not None:
                assert entry.key in self._children[entry.parent]
            if entry.is_tail and entry.anchor is not None:
                assert self._tails[entry.anchor][entry.key] == entry.tokens
        check = getattr(self.policy, "_check", None)
        if check is not None:
            check()
