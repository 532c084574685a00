"""``CheckpointStore``: the facade a serving engine embeds.

It checks arguments, builds the stack of tiers (``kvstore.tiering``) — an
optional RAM tier, the queue of background writes, the disk tier, an optional
cold tier and any tiers the caller adds — and answers the public API over it.
Everything that touches files lives in the tiers.

>>> import tempfile
>>> tokens = list(range(10_000))
>>> with CheckpointStore(tempfile.mkdtemp(), capacity_bytes=64 << 20,
...                      block_tokens=4096, namespace="demo") as store:
...     store.put(tokens[:8192], b"kv state of 8192 tokens")
...     store.lookup(tokens).tokens
...     store.load_longest(tokens)
True
8192
(8192, b'kv state of 8192 tokens')
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from policies.base import Policy
from policies.registry import resolve

from .arguments import check_arguments, check_session, check_tier_arguments
from .directory import SETTINGS_FILE
from .errors import KVStoreError
from .fileformat import MAX_HEADER_BYTES, Header, payload_descriptor
from .keys import Namespace, PrefixKeys, TokensLike, check_block_tokens
from .layout import layout_for
from .tiering import TierStack
from .tiers import DiskTier, MemoryTier, SharedTier, Tier, WriteBehind
from .tiers.shared import check_shared_arguments

__all__ = ["CheckpointStore", "Match", "DEFAULT_POLICY"]

log = logging.getLogger(__name__)

DEFAULT_POLICY = "prefix-chain"


@dataclass(frozen=True, slots=True)
class Match:
    """A stored checkpoint that is a prefix of the looked-up prompt."""

    tokens: int  #: how many leading tokens it covers
    key: str  #: its key (hex SHA1)
    tier: str = "disk"  #: where it lives: "ram", "pending" (queued write), "disk", "cold", "shared" or an added tier's name
    is_tail: bool = False  #: True when it ends off the block grid
    chain: tuple[str, ...] = ()  #: chained layout: keys of its blocks, first to last


class CheckpointStore:
    """A crash-safe, capacity-bounded store of KV-state checkpoints keyed by prefix.

    :param path: the store directory; created (one level) if missing.
    :param capacity_bytes: budget of everything the store writes (payload files
        with headers, files being written, quarantined files, and the index's
        fixed slice ``index_bytes``). Required for a new store; ``None`` reuses
        the stored value.
    :param block_tokens: distance between aligned checkpoints (default 4096 for a
        new store). Fixed at creation.
    :param namespace: model / weights / KV dtype / engine layout. Keys are salted
        with it. Required for a new store; fixed at creation.
    :param policy: a registered policy name (see ``policies.available()``) or a
        policy instance.
    :param layout: ``"snapshot"`` (default) or ``"chained"``. Fixed at creation.
    :param index_bytes: the slice of ``capacity_bytes`` given to the LMDB index
        (default: 1/64 of the capacity, between 1 MiB and 1 GiB). Fixed at creation.
    :param pin_quota_bytes: most bytes pins may hold (default: half the payload budget).
    :param readonly: open for inspection: no writes, no repair.
    :param clock: seconds since an epoch; time passed to the policy.
    :param ram_bytes: budget of a RAM tier in this process (default 0: none).
        Checkpoints just written or just loaded are served from memory, as
        read-only copies; its own ``ram_policy`` (default ``"lru"``) evicts.
    :param cold_path: directory of a cold tier (another disk, a network mount):
        a store of its own, zstd-compressed, with ``cold_capacity_bytes``
        (required when it is new) and its own ``cold_policy`` (default: the
        same policy name as ``policy``). Checkpoints evicted from disk are
        demoted there; a hit there is promoted back to disk.
    :param compression_level: zstd level of the cold tier (default 1: KV tensors
        gain next to nothing from higher levels; negative is faster, up to 22 smaller).
    :param max_pending_writes: most ``put(..., durable=False)`` writes waiting
        for the background writer; past it the oldest waiting one is dropped.
    :param tiers: more holding tiers (:class:`kvstore.tiers.Tier`), slowest last,
        below the built-in ones: what the tier above evicts goes there, a hit
        there is promoted to disk. The store closes them when it closes.
    :param trust_path: open a store directory that is a symlink, owned by
        another user or writable by group/others (refused by default: whoever
        can write there can plant links that redirect the store's writes).
    :param shared_url: a Redis Cluster node or a Redis server
        (``redis://[user:password@]host:port``, ``rediss://`` for TLS) holding
        a tier shared by every engine of this namespace
        (:class:`~kvstore.tiers.SharedTier`; ``pip install 'kvstore[shared]'``).
        Durable puts are published to it in the background; a lookup that the
        local tiers cannot answer in full asks it, and a hit there is copied to
        disk. Snapshot layout only.
    :param shared_capacity_bytes: the fleet's budget of payload bytes in the
        shared tier (required with ``shared_url``).
    :param shared_timeout: longest wait of a shared lookup, in seconds (default
        0.2); past it, or on any fault, the lookup misses and the shared tier is
        skipped for a second. The shared tier never raises into the engine.
    :param max_pending_publishes: most checkpoints waiting to be published;
        past it the oldest is dropped (counted in ``stats()["tiers"]["shared"]``).

    Raises ``ValueError``/``TypeError`` naming a bad argument,
    :class:`~kvstore.errors.ConfigMismatchError` when an existing store was
    created with other settings, and :class:`~kvstore.errors.StoreUnavailableError`
    when the directory cannot be used.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        capacity_bytes: int | None = None,
        *,
        block_tokens: int | None = None,
        namespace: str | None = None,
        policy: str | Policy = DEFAULT_POLICY,
        layout: str | None = None,
        index_bytes: int | None = None,
        pin_quota_bytes: int | None = None,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        ram_bytes: int = 0,
        ram_policy: str | Policy = "lru",
        cold_path: str | os.PathLike[str] | None = None,
        cold_capacity_bytes: int | None = None,
        cold_policy: str | Policy | None = None,
        compression_level: int | None = None,
        max_pending_writes: int = 16,
        tiers: Sequence[Tier] = (),
        trust_path: bool = False,
        shared_url: str | None = None,
        shared_capacity_bytes: int | None = None,
        shared_timeout: float = 0.2,
        max_pending_publishes: int = 16,
    ) -> None:
        check_arguments(capacity_bytes=capacity_bytes, index_bytes=index_bytes, layout=layout,
                         pin_quota_bytes=pin_quota_bytes, clock=clock, trust_path=trust_path, tiers=tiers)
        check_tier_arguments(ram_bytes, cold_path, cold_capacity_bytes, compression_level, max_pending_writes)
        if block_tokens is not None:
            block_tokens = check_block_tokens(block_tokens)
        if namespace is not None:
            Namespace(namespace)  # validates
        if shared_url is None and shared_capacity_bytes is not None:
            raise ValueError("shared_capacity_bytes configures the shared tier; pass shared_url too")
        if shared_url is not None:
            if shared_capacity_bytes is None:
                raise ValueError("shared_capacity_bytes is required with shared_url")
            if layout == "chained":
                raise ValueError("shared_url works with the snapshot layout only, not layout='chained'")
            check_shared_arguments(shared_url, shared_capacity_bytes, shared_timeout, max_pending_publishes)
        self._clock = clock
        self._closed = True
        self.readonly = bool(readonly)
        self.path = os.path.abspath(os.fspath(path))
        ram_policy = resolve(ram_policy) if ram_bytes else None
        self._disk = DiskTier(self.path, capacity_bytes, namespace=namespace, block_tokens=block_tokens,
                              layout=layout, index_bytes=index_bytes, policy=policy,
                              pin_quota_bytes=pin_quota_bytes, readonly=self.readonly, clock=self._now,
                              trust_path=trust_path)
        holding: list[Tier] = [self._disk]
        try:
            self.namespace, self.block_tokens = self._disk.namespace, self._disk.block_tokens
            self.layout, self.index_bytes = self._disk.layout, self._disk.index_bytes
            self._layout = layout_for(self.layout)
            if cold_path is not None:
                holding.append(self._open_cold(cold_path, cold_capacity_bytes, cold_policy, policy,
                                               compression_level, trust_path))
            holding.extend(tiers)
        except BaseException:
            for tier in holding:
                tier.close()
            raise
        ram = MemoryTier(ram_bytes, ram_policy, block_tokens=self.block_tokens) if ram_policy else None
        pending = WriteBehind(self._disk, max_pending=max_pending_writes, block_tokens=self.block_tokens,
                              clock=self._now, after_write=self._note_session)
        shared = None
        if shared_url is not None:
            try:
                if self._layout.chained:
                    raise ValueError(f"shared_url works with the snapshot layout only; {self.path} is chained")
                shared = SharedTier(shared_url, shared_capacity_bytes, namespace=self.namespace,
                                    block_tokens=self.block_tokens, timeout=shared_timeout,
                                    max_pending=max_pending_publishes)
            except BaseException:
                for tier in holding:
                    tier.close()
                raise
        self._stack = TierStack(holding, self._layout, clock=self._now, ram=ram, pending=pending,
                                shared=shared, count=self._disk.count)
        try:
            self._disk.finish_opening()
        except BaseException:
            self._stack.close()
            raise
        self._closed = False

    # ================================================================ basics
    @property
    def capacity_bytes(self) -> int:
        return self._disk.capacity_bytes

    def _now(self) -> float:
        """The injected clock's time, checked: seconds as a finite number."""
        now = self._clock()
        if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
            raise TypeError(f"clock must return seconds as a finite number, got {now!r}")
        return float(now)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("operation on a closed CheckpointStore")

    def _prefix_keys(self, tokens: TokensLike) -> PrefixKeys:
        return PrefixKeys(self.namespace, tokens, self.block_tokens)

    def _open_cold(self, path: str | os.PathLike[str], capacity_bytes: int | None, policy: str | Policy | None,
                   hot_policy: str | Policy, level: int | None, trust_path: bool) -> DiskTier:
        path = os.path.abspath(os.fspath(path))
        real, mine = os.path.realpath(path), os.path.realpath(self.path)
        if real == mine or _inside(real, mine) or _inside(mine, real):
            raise ValueError(f"cold_path={path!r} must be a directory outside the store {self.path} "
                             f"(and not contain it): a tier inside another would delete its data")
        if capacity_bytes is None and not os.path.exists(os.path.join(path, SETTINGS_FILE)):
            raise ValueError(f"cold_capacity_bytes is required to create the cold tier {path}")
        if policy is None:
            policy = hot_policy if isinstance(hot_policy, str) else DEFAULT_POLICY
        cold = DiskTier(path, capacity_bytes, compression_level=1 if level is None else level,
                        namespace=self.namespace.name, block_tokens=self.block_tokens, layout=self.layout,
                        policy=policy, readonly=self.readonly, clock=self._now, trust_path=trust_path,
                        name="cold")
        cold.finish_opening()
        return cold

    # =============================================================== lookups
    def lookup(self, tokens: TokensLike, *, session: str | None = None) -> Match | None:
        """The longest stored checkpoint that is a prefix of ``tokens``, or ``None``.

        Considers every aligned prefix and the tails anchored on them, in every
        tier (a tie goes to the fastest tier); in the ``chained`` layout only
        prefixes whose every block is stored somewhere. Counts a hit on the
        match (in each tier holding it) and a prefix hit on its stored ancestors;
        ``session`` (a hint, see :meth:`end_session`) marks them used by it.
        Runtime complexity: O(len(tokens)) hashing + O(blocks * tiers) probes.
        """
        self._check_open()
        prefix = self._prefix_keys(tokens)
        found = self._stack.lookup(prefix, self._now(), check_session(session))
        self._disk.count("hits" if found else "misses")
        if found is None:
            return None
        n_tokens, key, chain, tier = found
        return Match(tokens=n_tokens, key=key, tier=tier.name, is_tail=n_tokens % self.block_tokens != 0,
                     chain=chain)

    def contains(self, tokens: TokensLike) -> bool:
        """Whether exactly the prefix ``tokens`` is stored in some tier (a tail
        or an aligned checkpoint). Counts no hit. Runtime complexity: O(len(tokens))."""
        self._check_open()
        key = self._prefix_keys(tokens).key(len(tokens))
        self._stack.refresh()
        return self._stack.present(key)

    def load(self, match: Match) -> Any:
        """The payload of ``match``: bytes, or a numpy array as it was stored.

        In the ``chained`` layout, the list of its blocks' payloads, first to
        last. Arrays served by the RAM tier are read-only. A checkpoint found
        on disk is copied into the RAM tier; one found in a lower tier is
        promoted to disk (and leaves that tier).

        Returns ``None`` when the checkpoint (or one of its blocks) vanished
        (evicted meanwhile) or fails verification (it is then quarantined and
        dropped): never wrong bytes. Runtime complexity: O(payload bytes).
        """
        self._check_open()
        if not isinstance(match, Match):
            raise TypeError(f"match must be a Match returned by lookup(), not {type(match).__name__}")
        parts = []
        for key in match.chain or (match.key,):
            payload = self._stack.read(key)
            if payload is None:
                return None
            parts.append(payload)
        return self._layout.assemble(parts)

    def load_longest(self, tokens: TokensLike, *, session: str | None = None) -> tuple[int, Any]:
        """``(n_tokens, payload)`` of the longest loadable prefix; ``(0, None)`` on a miss.

        Falls back to shorter prefixes when the longest one cannot be read.
        ``session`` is a hint, as in :meth:`lookup`.
        """
        self._check_open()
        for _ in range(1 + len(tokens) // self.block_tokens + 1):
            match = self.lookup(tokens, session=session)
            if match is None:
                return 0, None
            payload = self.load(match)
            if payload is not None:
                return match.tokens, payload
        return 0, None

    # ================================================================ writes
    def put(self, tokens: TokensLike, payload: Any, *, tail: bool = False, priority: int = 0,
            durable: bool = True, session: str | None = None) -> bool:
        """Store the KV state ``payload`` of the prefix ``tokens``.

        ``len(tokens)`` must be a multiple of ``block_tokens`` unless
        ``tail=True`` (a checkpoint at the exact end of a prompt). Returns
        ``True`` when written, ``False`` when that prefix is already stored or
        the policy declined it. Evicts what the policy names to make room.
        With ``durable=False`` it returns at once and a background thread
        writes it (served from memory meanwhile; a crash loses it).
        ``session`` names the engine's session that wrote it, a hint: once
        :meth:`end_session` says it is over, its checkpoints that no other
        session used are the first to go.

        Raises :class:`~kvstore.errors.CapacityError` when the payload can never
        fit, and the ``OSError`` of a failed write (nothing is left behind).
        Runtime complexity: O(len(tokens) + payload bytes + victims * log n).
        """
        self._check_open()
        if self.readonly:
            raise KVStoreError(f"store {self.path} is open read-only")
        if not isinstance(tail, bool):
            raise TypeError(f"tail must be a bool, not {type(tail).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {type(priority).__name__}")
        if not -(2**31) <= priority < 2**31:
            raise ValueError(f"priority must fit in 32 bits, got {priority}")
        session = check_session(session)
        prefix = self._prefix_keys(tokens)
        n_tokens = len(prefix)
        if n_tokens == 0:
            raise ValueError("tokens must not be empty")
        if n_tokens % self.block_tokens and not tail:
            raise ValueError(
                f"len(tokens)={n_tokens} is not a multiple of block_tokens={self.block_tokens}; "
                f"pass tail=True to store a checkpoint at the exact end of a prompt")
        view, header = self._header(prefix, payload, priority)
        self._disk.check_fits(header)
        self._layout.check_put(prefix, n_tokens, self._stack.present)
        if not durable:
            return self._stack.queue(header, payload, session=session)
        written = self._disk.write(header, view, now=header.inserted_at, session=session)  # described once
        if written:
            self._stack.hold(header, payload, promotion=False)
            self._stack.publish(header, payload)
        return written

    def _header(self, prefix: PrefixKeys, payload: Any, priority: int) -> tuple[memoryview, Header]:
        """The payload's contiguous bytes and the header of its checkpoint."""
        view, dtype, shape = payload_descriptor(payload)
        n_tokens = len(prefix)
        is_tail = n_tokens % self.block_tokens != 0
        header = Header(
            namespace_hash=self.namespace.digest8, key=prefix.key(n_tokens), tokens=n_tokens,
            payload_len=view.nbytes, checksum=0, parent=prefix.parent_key(n_tokens),
            anchor=prefix.key(prefix.anchor(n_tokens)) if is_tail else None,
            ancestors=prefix.ancestor_keys(n_tokens), is_tail=is_tail, priority=priority,
            inserted_at=self._now(), dtype=dtype, shape=shape, chained=self._layout.chained,
        )
        if header.header_len > MAX_HEADER_BYTES:
            raise ValueError(
                f"tokens: a prefix of {n_tokens} tokens spans {n_tokens // self.block_tokens} blocks, "
                f"whose keys need a {header.header_len}-byte header; a file header holds at most "
                f"{MAX_HEADER_BYTES} bytes (about {MAX_HEADER_BYTES // 20} blocks): use a larger block_tokens")
        return view, header

    def _note_session(self, key: str, session: str | None) -> None:
        if session is not None:
            self._disk.note_session(key, session)

    def end_session(self, session: str) -> int:
        """Tell the store that the engine's ``session`` is over (a hint).

        Its checkpoints on disk that no other session wrote or used (through
        ``put(..., session=)``, ``lookup``/``load_longest(..., session=)``)
        become the first victims, ahead of the policy's choice; shared ones (a
        system prompt) stay with the policy. Hints live in this process.
        Returns how many checkpoints it released. Runtime complexity: O(its keys).
        """
        self._check_open()
        session = check_session(session)
        if session is None:
            raise TypeError("session must be a str, not None")
        return self._disk.end_session(session, self._now())

    # ================================================================== pins
    def pin(self, tokens: TokensLike) -> Match:
        """Keep the longest prefix of ``tokens`` stored on disk out of eviction.

        Pins hold on the disk tier (a RAM or cold copy is not pinned).

        Raises ``ValueError`` when no prefix of ``tokens`` is stored and
        :class:`~kvstore.errors.PinQuotaError` past ``pin_quota_bytes``.
        """
        self._check_open()
        n_tokens, key = self._disk.pin(self._prefix_keys(tokens))
        return Match(tokens=n_tokens, key=key, tier=self._disk.name, is_tail=n_tokens % self.block_tokens != 0)

    def unpin(self, tokens: TokensLike) -> None:
        """Release every pin on a stored prefix of ``tokens``."""
        self._check_open()
        self._disk.unpin(self._prefix_keys(tokens))

    def checkpoints(self) -> list[dict[str, Any]]:
        """What the disk tier holds, shortest prefix first: ``key``, ``tokens``,
        ``bytes``, ``tail``, ``pinned``, ``hits``, ``inserted_at``, ``last_use``.
        O(n log n)."""
        self._check_open()
        return [{"key": e.key, "tokens": e.tokens, "bytes": e.size, "tail": e.is_tail, "pinned": e.pinned,
                 "hits": e.hits, "inserted_at": e.inserted_at, "last_use": e.last_use}
                for e in self._disk.checkpoints()]

    def evict_to(self, target_bytes: int) -> int:
        """Evict what the policy names until the disk tier's checkpoints take at
        most ``target_bytes`` (pins hold; victims go to a cold tier if there is
        one). Returns how many were evicted."""
        self._check_open()
        if self.readonly:
            raise KVStoreError(f"store {self.path} is open read-only")
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int) or target_bytes < 0:
            raise ValueError(f"target_bytes must be an int >= 0, got {target_bytes!r}")
        return self._disk.evict_to(target_bytes)

    # ========================================================= stats, verify
    def stats(self) -> dict[str, Any]:
        """Counts, bytes per tier, hits, misses, evictions.

        Counters are persisted, so another process (``kvstore stats``) sees
        them too, up to the hits of this process not yet flushed.
        """
        self._check_open()
        tiers = self._stack.stats()
        disk, counters = tiers[self._disk.name], self._disk.counters()
        return {
            "path": self.path, "namespace": self.namespace.name, "block_tokens": self.block_tokens,
            "layout": self.layout, "policy": getattr(self._disk.manager.policy, "name", "") or
            type(self._disk.manager.policy).__name__,
            "capacity_bytes": self.capacity_bytes, "index_bytes": self.index_bytes,
            "entries": disk["entries"], "bytes": disk["bytes"] + self.index_bytes,
            **{name: counters.get(name, 0) for name in ("hits", "misses", "puts", "declined", "evictions",
                                                         "index_room_evictions", "quarantined")},
            "tiers": tiers,
        }

    def verify(self, *, repair: bool = False) -> dict[str, list[str]]:
        """Check every file of the disk tier in full (header, length, checksum).

        Returns ``{"ok": [...], "bad": [...], "missing": [...]}`` of keys. With
        ``repair=True`` bad files are quarantined and dropped, missing ones
        dropped. Runtime complexity: O(total bytes stored).
        """
        self._check_open()
        return self._disk.verify(repair=repair)

    # ================================================================= close
    def flush(self) -> None:
        """Wait for every ``put(..., durable=False)`` to be written, then persist
        pending hit statistics."""
        self._check_open()
        self._stack.flush()

    def close(self) -> None:
        """Wait for pending writes, flush statistics, release every tier. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stack.close()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._disk)} entries"
        return f"<CheckpointStore {self.path!r} {state}>"

    def _check(self) -> None:
        """Assert every holding tier's invariants (for tests)."""
        for tier in self._stack.holding:
            check = getattr(tier, "_check", None)
            if check is not None:
                check()

    # the tiers, for tests and benchmarks
    @property
    def _manager(self):
        return self._disk.manager

    @property
    def _files(self):
        return self._disk._files

    @property
    def _index(self):
        return self._disk._index

    @property
    def _cold(self) -> DiskTier | None:
        return next((t for t in self._stack.holding[1:] if isinstance(t, DiskTier)), None)

    @property
    def _ram(self) -> MemoryTier | None:
        return self._stack.ram

    @property
    def _pending(self) -> WriteBehind:
        return self._stack.pending


def _inside(path: str, folder: str) -> bool:
    """Whether the real path ``path`` lies inside the real path ``folder``."""
    return os.path.commonpath([path, folder]) == folder and path != folder


