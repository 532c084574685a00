"""A fleet in the simulator: several engines, each with its own disk, and
optionally one shared tier they all publish to and look up in.

Each request goes to one engine: the one its ``engine`` tag names (tags are
numbered in order of first appearance, modulo the fleet's size), else (route
``"session"``) the one its session hashes to (CRC-32 of the session id, so
every run routes the same way), or (route ``"request"``: no affinity) the one
the session and the request's place in it hash to. That engine runs the loop of :mod:`simulator.replay` against its
own eviction manager and policy; with a shared tier it also:

- asks the shared tier when its own disk matches less than the whole prompt,
  and takes the shared match when it is longer; the load costs
  ``Profile.shared_load_seconds`` and the checkpoint is copied to its disk;
- publishes every checkpoint its disk stored.

:class:`SharedModel` makes the shared tier's decisions with the rule its Lua
scripts apply in Redis (:mod:`kvstore.tiers.shared_index`): leaf-first LRU
over the 128 least recently used checkpoints, one-block prefixes last, a
budget of payload bytes. ``tests/test_fleet.py`` holds the two to the same
victims on a real Redis.

>>> from simulator.costmodel import PROFILES
>>> from simulator.replay import ReplayConfig, replay
>>> from simulator.trace import Request
>>> reqs = [Request(s, float(t), (("sys", 9000), (s, 50 * t))) for t in range(1, 4) for s in "abcd"]
>>> config = ReplayConfig(capacity_bytes=10**12, policy="lru", profile=PROFILES["ds4"])
>>> alone = replay(reqs, config, backend=fleet(engines=4))
>>> shared = replay(reqs, config, backend=fleet(engines=4, shared_bytes=10**12))
>>> alone.loaded_tokens < shared.loaded_tokens
True
"""

from __future__ import annotations

import collections
import functools
import itertools
import zlib
from collections.abc import Callable
from typing import Any

from kvstore.eviction import Entry
from kvstore.tiers.shared_index import SCAN_VICTIMS
from policies.base import Policy
from policies.registry import is_offline, resolve

from .keyed import RequestInfo
from .replay import ManagerBackend, ReplayConfig, _write_checkpoints, load_bytes, store_checkpoint

__all__ = ["SharedModel", "FleetBackend", "Router", "fleet"]


class Router:
    """Which of ``engines`` engines serves a request (see the module's docstring).

    >>> router = Router(3, "request")
    >>> [router.engine(RequestInfo("s", float(t), False)) for t in range(4)] != [0, 0, 0, 0]
    True
    """

    def __init__(self, engines: int, route: str = "session") -> None:
        if isinstance(engines, bool) or not isinstance(engines, int) or engines < 1:
            raise ValueError(f"engines must be an int >= 1, got {engines!r}")
        if route not in ("session", "request"):
            raise ValueError(f"route must be 'session' or 'request', got {route!r}")
        self.engines, self.route = engines, route
        self._tags: dict[str, int] = {}
        self._turns: collections.Counter[str] = collections.Counter()

    def engine(self, info: RequestInfo) -> int:
        """The engine of the next request ``info``. O(1)."""
        if info.engine is not None:
            return self._tags.setdefault(info.engine, len(self._tags)) % self.engines
        if self.route == "session":
            return zlib.crc32(info.session.encode()) % self.engines
        turn = self._turns[info.session]
        self._turns[info.session] += 1
        return zlib.crc32(f"{info.session}#{turn}".encode()) % self.engines


class SharedModel:
    """The fleet's shared tier as the simulator keeps it: what the Redis scripts
    would hold, decided by the same rule, without bytes.

    >>> model = SharedModel(100, protect_tokens=4)
    >>> model.publish("a", tokens=4, size=60, parent=None, anchor=None)
    True
    >>> model.publish("b", tokens=8, size=60, parent="a", anchor=None)  # "a" is a leaf until "b" is in
    True
    >>> sorted(model.entries), model.evictions
    (['b'], 1)
    """

    def __init__(self, capacity_bytes: int, *, protect_tokens: int, scan: int = SCAN_VICTIMS) -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise ValueError(f"shared capacity must be an int > 0, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self.protect_tokens = protect_tokens
        self.scan = scan
        #: key -> (tokens, size, parent, anchor)
        self.entries: dict[Any, tuple[int, int, Any, Any]] = {}
        self._lru: collections.OrderedDict[Any, None] = collections.OrderedDict()  # least recently used first
        self._children: collections.Counter[Any] = collections.Counter()
        self._tails: dict[Any, dict[Any, int]] = {}
        self.used_bytes = 0
        self.evictions = 0
        self.hits = 0

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def longest_match(self, prefix: Any) -> tuple[int, Any] | None:
        """As :meth:`kvstore.tiers.SharedTier.longest_match`. O(blocks)."""
        return prefix.longest_held(self._tails.get, self.entries.__contains__)

    def touch(self, key: Any) -> None:
        """A lookup matched ``key``: it becomes the most recently used. O(1)."""
        if key in self._lru:
            self._lru.move_to_end(key)
            self.hits += 1

    def publish(self, key: Any, *, tokens: int, size: int, parent: Any, anchor: Any) -> bool:
        """Hold ``key`` (evicting for it); ``False`` when held already or larger
        than the whole tier. O(victims * scan)."""
        if key in self.entries or size > self.capacity_bytes:
            return False
        while self.used_bytes + size > self.capacity_bytes:
            self._unlink(self._victim())
        self.entries[key] = (tokens, size, parent, anchor)
        self._lru[key] = None
        if parent is not None:
            self._children[parent] += 1
        if anchor is not None:
            self._tails.setdefault(anchor, {})[key] = tokens
        self.used_bytes += size
        return True

    def _victim(self) -> Any:
        leaf = None
        for key in itertools.islice(self._lru, self.scan):
            if not self._children.get(key):
                if self.entries[key][0] > self.protect_tokens:
                    return key
                if leaf is None:
                    leaf = key
        return leaf if leaf is not None else next(iter(self._lru))

    def _unlink(self, key: Any) -> None:
        tokens, size, parent, anchor = self.entries.pop(key)
        del self._lru[key]
        if parent is not None:
            self._children[parent] -= 1
            if self._children[parent] <= 0:
                del self._children[parent]
        if anchor is not None:
            tails = self._tails[anchor]
            del tails[key]
            if not tails:
                del self._tails[anchor]
        self.used_bytes -= size
        self.evictions += 1


class FleetBackend:
    """``engines`` engines, each an eviction manager with its own policy
    instance over ``config.capacity_bytes``, and an optional shared tier of
    ``shared_bytes``. ``report`` (a dict) receives the fleet's figures on close."""

    def __init__(self, config: ReplayConfig, policy: Policy, *, engines: int, shared_bytes: int | None = None,
                 report: dict | None = None, route: str = "session") -> None:
        self.router = Router(engines, route)
        if isinstance(config.policy, str) and is_offline(config.policy):
            raise ValueError(f"policy {config.policy!r} is an offline reference; a fleet replays online "
                             f"policies only")
        if config.layout != "snapshot":
            raise ValueError("a fleet with a shared tier models the snapshot layout only")
        self.config = config
        options = dict(config.policy_options)
        self.engines = [ManagerBackend(config, policy)] + [
            ManagerBackend(config, resolve(config.policy, **options)) for _ in range(engines - 1)]
        self.shared = (SharedModel(shared_bytes, protect_tokens=config.block_tokens)
                       if shared_bytes else None)
        self._report = report
        self._current = self.engines[0]
        self.source: str | None = None  #: where the last lookup's match came from
        self.shared_hits = 0
        self.shared_tokens = 0
        self.served = [0] * engines

    @property
    def evictions(self) -> int:
        return sum(engine.evictions for engine in self.engines)

    def begin(self, info: RequestInfo) -> None:
        """Route the next request to its engine."""
        index = self.router.engine(info)
        self._current = self.engines[index]
        self.served[index] += 1

    def lookup(self, prefix: Any, now: float, session: str | None) -> int:
        manager = self._current.manager
        local = manager.longest_match(prefix)
        have = 0 if local is None else local[0]
        if self.shared is not None and have < len(prefix):
            remote = self.shared.longest_match(prefix)
            if remote is not None and remote[0] > have:
                self.shared.touch(remote[1])
                store_checkpoint(manager, self.config, prefix, remote[0], now)  # copied to its disk
                self.source = "shared"
                self.shared_hits += 1
                self.shared_tokens += remote[0]
                return remote[0]
        if local is None:
            self.source = None
            return 0
        manager.record_hit(local[1], now, session=session)
        self.source = "disk"
        return have

    def load_seconds(self, loaded: int) -> float:
        """Seconds to load the last lookup's match from where it was found."""
        profile = self.config.profile
        if self.source == "shared":
            return profile.shared_load_seconds(self.config.payload_bytes(loaded))
        return profile.load_seconds(load_bytes(self.config, loaded))

    def write(self, prefix: Any, loaded: int, now: float, session: str | None) -> int:
        publish = self._publish if self.shared is not None else None
        return _write_checkpoints(self._current.manager, self.config, prefix, loaded, now, session,
                                  on_insert=publish)

    def _publish(self, entry: Entry) -> None:
        self.shared.publish(entry.key, tokens=entry.tokens, size=self.config.payload_bytes(entry.tokens),
                            parent=entry.parent, anchor=entry.anchor)

    def end_session(self, session: str, now: float) -> None:
        self._current.manager.end_session(session, now)

    def close(self) -> None:
        if self._report is None:
            return
        self._report.update(engines=len(self.engines), requests_per_engine=list(self.served),
                            shared_hits=self.shared_hits, shared_loaded_tokens=self.shared_tokens)
        if self.shared is not None:
            self._report.update(shared_capacity_bytes=self.shared.capacity_bytes,
                                shared_bytes=self.shared.used_bytes, shared_entries=len(self.shared.entries),
                                shared_evictions=self.shared.evictions)


def fleet(*, engines: int, shared_bytes: int | None = None, report: dict | None = None, route: str = "session"
          ) -> Callable[[ReplayConfig, Policy], FleetBackend]:
    """A ``backend=`` for :func:`simulator.replay.replay`: a fleet of ``engines``
    (each with ``config.capacity_bytes``) and a shared tier of ``shared_bytes`` (``None``: none)."""
    return functools.partial(FleetBackend, engines=engines, shared_bytes=shared_bytes, report=report, route=route)
