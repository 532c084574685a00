"""Replay a trace through the store's own eviction manager and a policy.

The backend only counts bytes: a checkpoint's size comes from the cost model,
and nothing is written. Everything else — keys (``kvstore.keys``), longest
prefix lookup with tails, eviction, pins, the policy objects — is the code the
store runs in an engine.

Per request, in arrival order, the simulated engine:

1. looks up the longest stored prefix (a hit on it, prefix hits on its
   stored ancestors) and loads it: ``load_seconds(bytes)``;
2. prefills the rest: ``prefill_seconds(loaded, prompt)``; TTFT is the sum;
3. writes a checkpoint at every aligned length past what it loaded, and (with
   ``write_tail``) one at the exact end of the prompt, asking the policy to
   admit each and evicting to make room.

Requests tagged ``{"warmup": true}`` fill the store but are left out of the
metrics. Runtime complexity: O(prompt tokens) hashing and O(blocks) index
probes per request, O(log n) per eviction for the built-in policies.

>>> from simulator.trace import Request
>>> from simulator.costmodel import PROFILES
>>> reqs = [Request("s", 0.0, (("sys", 9000),)), Request("s", 1.0, (("sys", 9000), ("u", 100)))]
>>> m = replay(reqs, ReplayConfig(capacity_bytes=10**12, policy="lru", profile=PROFILES["ds4"]))
>>> m.loaded_tokens, m.prefill_tokens
(9000, 9100)
"""

from __future__ import annotations

from array import array
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol
from dataclasses import asdict, dataclass, field

import numpy as np

from kvstore.accounting import file_bytes, payload_budget
from kvstore.errors import CapacityError
from kvstore.eviction import Entry, EvictionManager
from kvstore.keys import Namespace, PrefixKeys
from policies.base import Policy
from policies.registry import is_offline, resolve

from .costmodel import Profile
from .blend import BlendTracker, reusable_tokens
from .keyed import KeyedTrace, RequestInfo
from .tokens import TokenMaterializer
from .trace import Request

__all__ = ["ReplayConfig", "Metrics", "RequestResult", "replay", "METRIC_KEYS", "Backend", "ManagerBackend",
           "load_bytes", "store_checkpoint"]

METRIC_KEYS = (
    "requests", "prompt_tokens", "loaded_tokens", "prefill_tokens", "reprefill_seconds",
    "token_hit_rate", "ttft_p50", "ttft_p99", "full_misses", "bytes_written", "evictions",
    "blend_potential_tokens",
)


@dataclass
class ReplayConfig:
    """How to replay: budget, policy, cost profile, layout, checkpoint grid."""

    capacity_bytes: int
    policy: str | Policy
    profile: Profile
    layout: str = "snapshot"
    block_tokens: int = 4096
    write_tail: bool = True
    namespace: str = "kvsim"
    policy_options: dict = field(default_factory=dict)
    #: pass the trace's sessions to the store as hints: every write and hit
    #: names its session, and a session ends after its last request
    session_hints: bool = False
    #: the store's index slice of ``capacity_bytes`` (None: the store's default,
    #: 1/64 of it between 1 MiB and 1 GiB; 0 models no index at all)
    index_bytes: int | None = None
    #: entry_bytes() per length, computed once (cleared when any field is set)
    _sizes: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name != "_sizes":  # (what a size depends on may have changed)
            object.__setattr__(self, "_sizes", {})

    def __post_init__(self) -> None:
        if isinstance(self.capacity_bytes, bool) or not isinstance(self.capacity_bytes, int) \
                or self.capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be an int > 0, got {self.capacity_bytes!r}")
        if self.layout not in ("snapshot", "chained"):
            raise ValueError(f"layout must be 'snapshot' or 'chained', got {self.layout!r}")

    def checkpoint_lengths(self, total: int, after: int = 0) -> list[int]:
        """Lengths of the checkpoints an engine writes for a prompt of ``total``
        tokens once it has ``after`` of them: every block boundary past ``after``
        and, with ``write_tail``, the exact end of the prompt.

        >>> from simulator.costmodel import PROFILES
        >>> ReplayConfig(1, "lru", PROFILES["ds4"], block_tokens=4).checkpoint_lengths(10, after=4)
        [8, 10]
        """
        block = self.block_tokens
        lengths = list(range((after // block + 1) * block, total + 1, block))
        if self.write_tail and total % block and total > after:
            lengths.append(total)
        return lengths

    def payload_bytes(self, tokens: int) -> int:
        """Bytes of the engine's state for the checkpoint ``[0, tokens)`` (snapshot),
        or for its own block (chained: from the previous block boundary, or from
        its anchor for a tail), as the profile says."""
        if self.layout == "snapshot":
            return self.profile.checkpoint_bytes(tokens)
        block = self.block_tokens
        return self.profile.block_bytes(tokens % block or block)

    def entry_bytes(self, tokens: int) -> int:
        """Bytes the checkpoint's file takes in the store: its payload plus the
        file header, exactly as the store counts it (``kvstore.accounting``).
        A replay asks this for every checkpoint it writes or loads, so each
        length's answer is kept. Runtime complexity: O(1).

        >>> from simulator.costmodel import PROFILES
        >>> config = ReplayConfig(capacity_bytes=2**30, policy="lru", profile=PROFILES["ds4"])
        >>> config.entry_bytes(8192) == config.entry_bytes(8192) > config.entry_bytes(4096)
        True
        """
        size = self._sizes.get(tokens)
        if size is None:
            size = self._sizes[tokens] = file_bytes(payload_len=self.payload_bytes(tokens), tokens=tokens,
                                                    block_tokens=self.block_tokens)
        return size

    def budget(self) -> int:
        """Bytes the store gives checkpoint files: ``capacity_bytes`` less the index slice."""
        if self.index_bytes == 0:
            return self.capacity_bytes
        return payload_budget(self.capacity_bytes, self.index_bytes)


@dataclass
class RequestResult:
    """What one request cost."""

    session: str
    t: float
    prompt_tokens: int
    loaded_tokens: int
    prefill_tokens: int
    ttft: float
    tier: str | None

    def to_json(self) -> dict:
        """The line ``kvsim simulate --requests`` writes for this request."""
        return {"session": self.session, "t": self.t, "prompt_tokens": self.prompt_tokens,
                "loaded_tokens": self.loaded_tokens, "prefill_tokens": self.prefill_tokens,
                "ttft": round(self.ttft, 4), "tier": self.tier}


@dataclass
class Metrics:
    """Totals of a replay (warm-up requests excluded)."""

    requests: int = 0
    prompt_tokens: int = 0
    loaded_tokens: int = 0
    prefill_tokens: int = 0
    reprefill_seconds: float = 0.0
    token_hit_rate: float = 0.0
    ttft_p50: float = 0.0
    ttft_p99: float = 0.0
    full_misses: int = 0
    bytes_written: int = 0
    evictions: int = 0
    blend_potential_tokens: int = 0
    #: a real store's evictions to keep its index from filling (``StoreBackend`` only;
    #: the simulator does not model them, so a non-zero count means the two may differ)
    index_room_evictions: int = 0
    ttfts: array = field(default_factory=lambda: array("d"), repr=False)

    def add(self, *, prompt: int, loaded: int, prefill_seconds: float, ttft: float, written: int,
            blend_tokens: int) -> None:
        """Count one (non-warm-up) request. O(1)."""
        self.requests += 1
        self.prompt_tokens += prompt
        self.loaded_tokens += loaded
        self.prefill_tokens += prompt - loaded
        self.reprefill_seconds += prefill_seconds
        self.full_misses += loaded == 0
        self.bytes_written += written
        self.ttfts.append(ttft)
        self.blend_potential_tokens += blend_tokens

    def finish(self) -> "Metrics":
        self.token_hit_rate = self.loaded_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        if self.ttfts:
            arr = np.frombuffer(self.ttfts, dtype=np.float64)
            self.ttft_p50 = float(np.percentile(arr, 50))
            self.ttft_p99 = float(np.percentile(arr, 99))
        return self

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc.pop("ttfts")
        doc.pop("index_room_evictions")
        return doc


class Backend(Protocol):
    """Where a replay keeps its checkpoints: the engine loop asks it two things."""

    def lookup(self, prefix: PrefixKeys, now: float, session: str | None) -> int:
        """Tokens of the longest stored prefix (recording the hit), 0 on a miss."""

    def write(self, prefix: PrefixKeys, loaded: int, now: float, session: str | None) -> int:
        """Write the checkpoints past ``loaded`` the engine writes; return the bytes written."""

    def end_session(self, session: str, now: float) -> None: ...

    def close(self) -> None: ...

    @property
    def evictions(self) -> int: ...


class ManagerBackend:
    """The store's eviction manager and policy over a backend that only counts
    bytes: what ``kvsim`` replays by default."""

    def __init__(self, config: ReplayConfig, policy: Policy) -> None:
        self.config = config
        self.manager = EvictionManager(config.budget(), policy, layout=config.layout,
                                       block_tokens=config.block_tokens, pin_quota_bytes=0)

    @property
    def evictions(self) -> int:
        return self.manager.evictions

    def lookup(self, prefix: PrefixKeys, now: float, session: str | None) -> int:
        found = self.manager.longest_match(prefix)
        if found is None:
            return 0
        self.manager.record_hit(found[1], now, session=session)
        return found[0]

    def write(self, prefix: PrefixKeys, loaded: int, now: float, session: str | None) -> int:
        return _write_checkpoints(self.manager, self.config, prefix, loaded, now, session)

    def end_session(self, session: str, now: float) -> None:
        self.manager.end_session(session, now)

    def close(self) -> None:
        """Nothing to release: the manager lives in memory."""


def load_bytes(config: ReplayConfig, loaded: int) -> int:
    """Bytes read to load the stored prefix of ``loaded`` tokens: its file, or
    in ``chained`` the files of all its blocks."""
    if not loaded:
        return 0
    if config.layout == "snapshot":
        return config.entry_bytes(loaded)
    block = config.block_tokens
    blocks = list(range(block, loaded // block * block + 1, block))
    if loaded % block:
        blocks.append(loaded)
    return sum(config.entry_bytes(n) for n in blocks)


def replay(
    requests: Iterable[Request] | None,
    config: ReplayConfig,
    *,
    on_request: Callable[[RequestResult], None] | None = None,
    progress: Callable[[int], None] | None = None,
    next_use: Callable[[object, float], float] | None = None,
    backend: Callable[[ReplayConfig, Policy], Backend] = ManagerBackend,
    keys: KeyedTrace | None = None,
) -> Metrics:
    """Replay ``requests`` under ``config``; return the metrics.

    ``on_request`` receives every (non-warm-up) request's result; ``progress``
    is called with the number of requests done every 1,000 requests;
    ``next_use`` is the oracle an offline policy (``belady``) needs;
    ``backend(config, policy)`` makes where checkpoints go (default: the
    eviction manager alone; :class:`simulator.store_backend.StoreBackend`
    replays through a real store). ``keys`` (a :class:`KeyedTrace` of the
    same trace) replays on integer ids computed once, and ``requests`` may
    then be ``None``; without it every prompt is materialised and hashed
    as it streams by (a backend that stores real bytes needs that).
    """
    options = dict(config.policy_options)
    if isinstance(config.policy, str) and is_offline(config.policy):
        if next_use is None:
            raise ValueError(f"policy {config.policy!r} needs the future: use simulator.sweep.run(), "
                             "which builds the oracle from the trace")
        options["next_use"] = next_use
    if keys is not None:
        keys.check_matches(block_tokens=config.block_tokens, namespace=config.namespace,
                           write_tail=config.write_tail)
        if getattr(backend, "needs_tokens", False):
            raise ValueError("this backend stores real bytes and needs the tokens: replay without keys=")
        steps = _keyed_steps(keys)
        last_of_session = keys.last_request_of_sessions() if config.session_hints else {}
    else:
        if requests is None:
            raise ValueError("replay needs requests, or keys= computed from them")
        if config.session_hints:  # an engine hears when a session ends; the trace knows it up front
            requests = list(requests)
        last_of_session = {r.session: i for i, r in enumerate(requests)} if config.session_hints else {}
        steps = _hashed_steps(requests, config)
    store = backend(config, resolve(config.policy, **options))
    begin = getattr(store, "begin", None)  # a fleet routes the request to one of its engines
    load_cost = getattr(store, "load_seconds", None)  # a fleet loads from its disk or the shared tier
    profile = config.profile
    metrics = Metrics()
    done = 0
    for i, (info, prefix, blend) in enumerate(steps):
        now = info.t
        session = info.session if config.session_hints else None
        total = len(prefix)
        if begin is not None:
            begin(info)
        loaded = store.lookup(prefix, now, session)
        prefill_s = profile.prefill_seconds(loaded, total)
        written = store.write(prefix, loaded, now, session)
        if session is not None and last_of_session[session] == i:
            store.end_session(session, now)
        if not info.warmup:
            if not loaded:
                load_s = 0.0
            elif load_cost is not None:
                load_s = load_cost(loaded)
            else:
                load_s = profile.load_seconds(load_bytes(config, loaded))
            ttft = load_s + prefill_s
            metrics.add(prompt=total, loaded=loaded, prefill_seconds=prefill_s, ttft=ttft, written=written,
                        blend_tokens=blend(loaded))
            if on_request is not None:
                on_request(RequestResult(info.session, info.t, total, loaded, total - loaded,
                                         ttft, getattr(store, "source", "disk") if loaded else None))
        done += 1
        if progress is not None and done % 1000 == 0:
            progress(done)
    metrics.evictions = store.evictions
    metrics.index_room_evictions = getattr(store, "index_room_evictions", 0)
    store.close()
    if progress is not None:
        progress(done)
    return metrics.finish()


def _keyed_steps(keys: KeyedTrace) -> Iterator[tuple[RequestInfo, object, Callable[[int], int]]]:
    """Each request's info, integer-id keys and blend counter, from keys computed once."""
    for i, (info, prefix) in enumerate(keys.rows()):
        yield info, prefix, functools.partial(keys.blend_tokens, i)


def _hashed_steps(requests: Iterable[Request], config: ReplayConfig
                  ) -> Iterator[tuple[RequestInfo, PrefixKeys, Callable[[int], int]]]:
    """Each request's info, keys hashed from its materialised tokens, and blend counter."""
    namespace = Namespace(config.namespace)
    tokens_of = TokenMaterializer()
    tracker = BlendTracker()
    for request in requests:
        prefix = PrefixKeys(namespace, tokens_of.tokens(request.prompt), config.block_tokens)
        candidates = tracker.candidates(request.prompt)
        engine = request.tags.get("engine")
        yield (RequestInfo(request.session, request.t, bool(request.tags.get("warmup")),
                           None if engine is None else str(engine)), prefix,
               functools.partial(reusable_tokens, candidates))


def _write_checkpoints(manager: EvictionManager, config: ReplayConfig, prefix: PrefixKeys,
                       loaded: int, now: float, session: str | None = None,
                       on_insert: Callable[[Entry], None] | None = None) -> int:
    """The engine writes checkpoints past what it loaded; returns bytes written.
    ``on_insert`` sees each checkpoint stored (a fleet publishes it)."""
    written = 0
    for n in config.checkpoint_lengths(len(prefix), after=loaded):
        if prefix.key(n) in manager:
            continue
        if config.layout == "chained":
            parent = prefix.parent_key(n)
            if parent is not None and parent not in manager:
                break  # a block whose ancestors are gone could never be loaded
        entry = store_checkpoint(manager, config, prefix, n, now, session)
        if entry is None:
            if config.layout == "chained":
                break  # no block past this one could be loaded either
            continue
        if on_insert is not None:
            on_insert(entry)
        written += entry.size
    return written


def store_checkpoint(manager: EvictionManager, config: ReplayConfig, prefix: PrefixKeys, n: int, now: float,
                     session: str | None = None) -> Entry | None:
    """Store the checkpoint ``prefix[:n]`` as the store does (admission, eviction
    to make room); the entry, or ``None`` when it was declined."""
    is_tail = n % config.block_tokens != 0
    entry = Entry(prefix.key(n), tokens=n, size=config.entry_bytes(n), parent=prefix.parent_key(n),
                  ancestors=prefix.ancestor_keys(n), is_tail=is_tail,
                  anchor=prefix.key(prefix.anchor(n)) if is_tail else None)
    try:  # in chained, the new block's ancestors must outlive the eviction it causes
        room = manager.make_room(entry, now, protect=entry.ancestors if config.layout == "chained" else ())
    except CapacityError:
        room = None
    if room is None:
        return None
    manager.insert(entry, now)
    if session is not None:
        manager.note_session(entry.key, session)
    return entry


def working_set_bytes(requests: Iterable[Request], config: ReplayConfig) -> int:
    """Bytes of every distinct checkpoint the trace would write with unlimited
    space: the denominator of capacities given as a percentage. (With keys
    already computed, :meth:`KeyedTrace.working_set_bytes` answers at once.)"""
    keys = KeyedTrace.build(requests, block_tokens=config.block_tokens, namespace=config.namespace,
                            write_tail=config.write_tail)
    return keys.working_set_bytes(config.entry_bytes)
