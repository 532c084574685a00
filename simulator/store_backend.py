"""Replay through a real :class:`kvstore.CheckpointStore`: payload files of the
profile's sizes on disk, the trace's time as the store's clock.

This is the check that the simulator makes the store's decisions: the same
trace replayed with :class:`~simulator.replay.ManagerBackend` (bytes counted)
and with :class:`StoreBackend` (bytes written) loads the same tokens, request
by request (``tests/test_store_backend.py``). It writes every checkpoint's
bytes, so it runs at disk speed: use a small profile or a scaled trace.

>>> import tempfile
>>> from simulator.costmodel import Profile
>>> from simulator.replay import ReplayConfig, replay
>>> from simulator.trace import Request
>>> tiny = Profile("tiny", "", prefill_tps=100.0, context_halving=1e9, decode_tps=10.0,
...                disk_read_bps=1e9, kv_bytes_per_token=8.0, fixed_bytes=64, load_latency_s=0.0)
>>> config = ReplayConfig(capacity_bytes=2 << 20, policy="lru", profile=tiny, block_tokens=16)
>>> reqs = [Request("s", 0.0, (("sys", 40),)), Request("s", 1.0, (("sys", 40), ("u", 9)))]
>>> replay(reqs, config, backend=StoreBackend.at(tempfile.mkdtemp())).loaded_tokens
40
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kvstore.errors import CapacityError
from kvstore.keys import PrefixKeys
from kvstore.store import CheckpointStore
from policies.base import Policy

from .replay import ReplayConfig

__all__ = ["StoreBackend", "StoreFleetBackend"]


class StoreBackend:
    """A replay backend that is a real store in ``path`` (created empty).

    Runtime complexity per request: the store's lookup, plus one ``put`` of
    the profile's payload size per checkpoint written.
    """

    def __init__(self, path: str, config: ReplayConfig, policy: Policy, **store_options) -> None:
        if os.path.exists(path) and os.listdir(path):
            raise ValueError(f"store_dir {path} is not empty: the replay needs a fresh store")
        self.config = config
        self._now = 0.0
        self.store = CheckpointStore(
            path, capacity_bytes=config.capacity_bytes, block_tokens=config.block_tokens,
            namespace=config.namespace, policy=policy, layout=config.layout,
            index_bytes=config.index_bytes, clock=lambda: self._now, **store_options)

    @classmethod
    def at(cls, path: str) -> Callable[[ReplayConfig, Policy], "StoreBackend"]:
        """The ``backend=`` argument of :func:`simulator.replay.replay` for a store in ``path``."""
        def factory(config: ReplayConfig, policy: Policy) -> "StoreBackend":
            return cls(path, config, policy)
        factory.needs_tokens = True  # it puts real bytes, so the replay must hash real tokens
        return factory

    @property
    def evictions(self) -> int:
        """Evictions the policy chose (those for index room are counted apart)."""
        stats = self.store.stats()
        return stats["evictions"] - stats.get("index_room_evictions", 0)

    @property
    def index_room_evictions(self) -> int:
        """Checkpoints the store evicted to keep its index from filling: a decision the
        simulator does not model (none while the index has room, as with real sizes)."""
        return self.store.stats().get("index_room_evictions", 0)

    def lookup(self, prefix: PrefixKeys, now: float, session: str | None) -> int:
        self._now = now
        match = self.store.lookup(prefix.tokens, session=session)
        return 0 if match is None else match.tokens

    def write(self, prefix: PrefixKeys, loaded: int, now: float, session: str | None) -> int:
        """Put every checkpoint the engine writes past ``loaded``, as the
        simulated engine does: skip what is stored, stop a chained prompt at
        the first block that cannot be stored."""
        self._now = now
        config, store, tokens = self.config, self.store, prefix.tokens
        chained = config.layout == "chained"
        written = 0
        for n in config.checkpoint_lengths(len(prefix), after=loaded):
            if store.contains(tokens[:n]):
                continue
            parent = prefix.anchor(n) if n % config.block_tokens else n - config.block_tokens
            if chained and parent and not store.contains(tokens[:parent]):
                break  # a block whose ancestors are gone could never be loaded
            payload = bytes(config.payload_bytes(n))
            try:
                stored = store.put(tokens[:n], payload, tail=n % config.block_tokens != 0, session=session)
            except CapacityError:  # can never fit: the simulated engine skips it too
                stored = False
            if stored:
                written += config.entry_bytes(n)
            elif chained:
                break  # declined: no block past this one could be loaded either
        return written

    def end_session(self, session: str, now: float) -> None:
        self._now = now
        self.store.end_session(session)

    def close(self) -> None:
        self.store.close()


class StoreFleetBackend:
    """A fleet of real stores sharing one real shared tier (Redis): the check
    that :class:`simulator.fleet.FleetBackend` makes the fleet's decisions.

    Engine ``i`` is a :class:`StoreBackend` in ``paths[i]`` whose store also
    has ``shared_url``; a request is routed as the simulator routes it, a
    shared match is loaded (copied to that engine's disk), and after each
    request every publish is waited for, so the shared tier sees the writes in
    the order the simulator does.
    """

    def __init__(self, paths: list[str], url: str, shared_bytes: int, config: ReplayConfig, policy: Policy,
                 *, route: str = "session") -> None:
        from policies.registry import resolve

        from .fleet import Router

        self.config = config
        self.router = Router(len(paths), route)
        self.engines = [StoreBackend(path, config, policy if i == 0 else resolve(config.policy),
                                     shared_url=url, shared_capacity_bytes=shared_bytes, shared_timeout=5.0)
                        for i, path in enumerate(paths)]
        self._current = self.engines[0]
        self.source: str | None = None

    @classmethod
    def at(cls, paths: list[str], url: str, shared_bytes: int, *, route: str = "session"
           ) -> Callable[[ReplayConfig, Policy], "StoreFleetBackend"]:
        def factory(config: ReplayConfig, policy: Policy) -> "StoreFleetBackend":
            return cls(paths, url, shared_bytes, config, policy, route=route)
        factory.needs_tokens = True
        return factory

    @property
    def evictions(self) -> int:
        return sum(engine.evictions for engine in self.engines)

    def begin(self, info) -> None:
        self._current = self.engines[self.router.engine(info)]

    def lookup(self, prefix: PrefixKeys, now: float, session: str | None) -> int:
        engine = self._current
        engine._now = now
        match = engine.store.lookup(prefix.tokens, session=session)
        if match is None:
            self.source = None
            return 0
        self.source = "shared" if match.tier == "shared" else "disk"
        if match.tier == "shared":
            engine.store.load(match)  # the engine loads it: copied to its disk
        return match.tokens

    def write(self, prefix: PrefixKeys, loaded: int, now: float, session: str | None) -> int:
        written = self._current.write(prefix, loaded, now, session)
        self._current.store.flush()  # publishes in the simulator's order
        return written

    def end_session(self, session: str, now: float) -> None:
        self._current.end_session(session, now)

    def close(self) -> None:
        for engine in self.engines:
            engine.close()
