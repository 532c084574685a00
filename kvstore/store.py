"""``CheckpointStore``: the facade a serving engine embeds.

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

import errno
import fcntl
import json
import logging
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import lmdb

from policies.base import Policy
from policies.registry import resolve

from .diskfiles import DiskFiles, stored_size_bound
from .errors import (CapacityError, ConfigMismatchError, CorruptFileError, IndexFullError, KVStoreError,
                     StoreUnavailableError)
from .eviction import LAYOUTS, Entry, EvictionManager
from .fileformat import MAX_HEADER_BYTES, Header, payload_descriptor
from .index import EntryRecord, Index
from .keys import Namespace, PrefixKeys, TokensLike, check_block_tokens
from .memtier import MemoryTier, frozen_copy
from .writer import BackgroundWriter

__all__ = ["CheckpointStore", "Match", "DEFAULT_POLICY"]

log = logging.getLogger(__name__)

DEFAULT_POLICY = "prefix-chain"
SETTINGS_FILE = "settings.json"
LOCK_FILE = "store.lock"
_SETTINGS_VERSION = 1
_MIN_INDEX_BYTES = 1 << 20
_MAX_INDEX_BYTES = 1 << 30
_MIN_PAYLOAD_BYTES = 64 << 10
_LOCK_FILES_ALLOWANCE = 64 << 10  # lock.mdb, store.lock and settings.json
_QUARANTINE_RID = "quarantine"
_MAP_FULL_RETRIES = 64
_UNBOUNDED = 1 << 62


@dataclass(frozen=True, slots=True)
class Match:
    """A stored checkpoint that is a prefix of the looked-up prompt."""

    tokens: int  #: how many leading tokens it covers
    key: str  #: its key (hex SHA1)
    tier: str = "disk"  #: where it lives: "ram", "pending" (queued write), "disk" or "cold"
    is_tail: bool = False  #: True when it ends off the block grid
    chain: tuple[str, ...] = ()  #: chained layout: keys of its blocks, first to last


def _boot_id() -> str | None:
    """This machine's boot id (Linux), or ``None`` where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            return fh.read().strip().decode()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":  # a zombie: dead, only not yet reaped
        return -1
    return int(fields[19])


def _writer_alive(reservation: dict[str, Any], boot: str | None) -> bool:
    """Whether the process that made ``reservation`` may still be writing."""
    pid = reservation.get("pid") or 0
    if pid <= 0:
        return True  # not a writer's reservation
    if reservation.get("boot") and boot and reservation["boot"] != boot:
        return False  # made before a reboot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = reservation.get("start")
    now = _start_time(pid)
    return not (now == -1 or (start is not None and now is not None and now != start))


def _inside(path: str, folder: str) -> bool:
    """Whether the real path ``path`` lies inside the real path ``folder``."""
    return os.path.commonpath([path, folder]) == folder and path != folder


def _check_session(session: object) -> str | None:
    if session is not None and not isinstance(session, str):
        raise TypeError(f"session must be a str or None, not {type(session).__name__}")
    return session


def _default_index_bytes(capacity: int) -> int:
    return min(max(capacity // 64, _MIN_INDEX_BYTES), _MAX_INDEX_BYTES)


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
    :param trust_path: open a store directory that is a symlink, owned by
        another user or writable by group/others (refused by default: whoever
        can write there can plant links that redirect the store's writes).

    Raises ``ValueError``/``TypeError`` naming a bad argument,
    :class:`~kvstore.errors.ConfigMismatchError` when an existing store was
    created with other settings, and :class:`~kvstore.errors.StoreUnavailableError`
    when the directory cannot be used.
    """

    _compression_level: int | None = None  # set by the cold tier

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
        trust_path: bool = False,
    ) -> None:
        _check_tier_arguments(ram_bytes, cold_path, cold_capacity_bytes, compression_level,
                              max_pending_writes)
        if capacity_bytes is not None:
            if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
                raise TypeError(f"capacity_bytes must be an int, not {type(capacity_bytes).__name__}")
            if capacity_bytes <= 0:
                raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        if block_tokens is not None:
            block_tokens = check_block_tokens(block_tokens)
        if namespace is not None:
            Namespace(namespace)  # validates
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if index_bytes is not None and (not isinstance(index_bytes, int) or index_bytes < _MIN_INDEX_BYTES):
            raise ValueError(f"index_bytes must be an int >= {_MIN_INDEX_BYTES}, got {index_bytes!r}")
        if pin_quota_bytes is not None and (isinstance(pin_quota_bytes, bool)
                                            or not isinstance(pin_quota_bytes, int) or pin_quota_bytes < 0):
            raise TypeError(f"pin_quota_bytes must be an int >= 0 or None, got {pin_quota_bytes!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, not {type(clock).__name__}")
        if not isinstance(trust_path, bool):
            raise TypeError(f"trust_path must be a bool, not {type(trust_path).__name__}")
        self._trust_path = trust_path
        self._policy = resolve(policy)
        self._clock = clock
        self._lock = threading.RLock()  # the index, the manager, the cold tier
        self._memory = threading.RLock()  # the RAM tier and pending writes; taken after _lock
        self.readonly = bool(readonly)
        self.path = os.path.abspath(os.fspath(path))
        self._closed = True
        self._lock_fd = -1
        self._pending_hits: dict[str, tuple[int, float]] = {}
        self._session_hints: dict[str, str] = {}  # key being written -> the session that put it
        self._pending_counters: dict[str, int] = {}
        self._generation: int | None = None
        ram_policy_instance = resolve(ram_policy) if ram_bytes else None
        self._ram: MemoryTier | None = None
        self._cold: CheckpointStore | None = None
        self._writer: BackgroundWriter[str] | None = None
        self._max_pending_writes = max_pending_writes
        self._session = {"ram_demotions": 0, "dropped_writes": 0, "write_errors": 0}
        self._open_directory()
        try:
            exclusive = self._acquire_lock()
            settings = self._load_or_create_settings(
                exclusive, capacity_bytes=capacity_bytes, block_tokens=block_tokens,
                namespace=namespace, layout=layout, index_bytes=index_bytes)
            self.namespace = Namespace(settings["namespace"])
            self.block_tokens: int = settings["block_tokens"]
            self.layout: str = settings["layout"]
            self.index_bytes: int = settings["index_bytes"]
            self._files = DiskFiles(self.path, create=not self.readonly)
            self._index = self._open_index()
            self._bind_settings(settings)
        except BaseException:
            self._release_lock()
            raise
        self._closed = False
        try:
            with self._index.read() as txn:
                stored_capacity = self._index.capacity(txn)
            if stored_capacity is None:  # a new or rebuilt index
                stored_capacity = settings.get("capacity_bytes")
            self._settings = settings
            capacity = self._settle_capacity(exclusive, capacity_bytes, stored_capacity)
            self.capacity_bytes = capacity
            self._manager = EvictionManager(
                capacity - self.index_bytes, self._policy, layout=self.layout,
                block_tokens=self.block_tokens,
                pin_quota_bytes=pin_quota_bytes if pin_quota_bytes is not None
                else (capacity - self.index_bytes) // 2,
            )
            self._pending = MemoryTier(_UNBOUNDED, resolve("fifo"), block_tokens=self.block_tokens)
            if ram_policy_instance is not None:
                self._ram = MemoryTier(ram_bytes, ram_policy_instance, block_tokens=self.block_tokens)
            if cold_path is not None:
                self._cold = self._open_cold(cold_path, cold_capacity_bytes, cold_policy, policy,
                                             compression_level)
            if exclusive and not self.readonly:
                self._reconcile()
            self._sync(force=True)
            if exclusive and not self.readonly:
                self._enforce_capacity()
        except BaseException:
            self.close()
            raise
        if exclusive:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def _now(self) -> float:
        """The injected clock's time, checked: seconds as a finite number."""
        now = self._clock()
        if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
            raise TypeError(f"clock must return seconds as a finite number, got {now!r}")
        return float(now)

    # ================================================================ opening
    def _open_directory(self) -> None:
        """Create the store directory if missing, then refuse what another user
        could have prepared: a symlinked store path or component, a directory
        owned by someone else or writable by group/others (unless ``trust_path``)."""
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if self.readonly:
                raise StoreUnavailableError(f"store directory {path} does not exist") from None
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                raise StoreUnavailableError(
                    f"cannot create store directory {path}: parent {parent} does not exist") from None
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreUnavailableError(f"cannot create store directory {path}: {exc.strerror}") from None
            st = os.lstat(path)
        trust = self._trust_path
        if stat.S_ISLNK(st.st_mode):
            if not trust:
                raise StoreUnavailableError(
                    f"store path {path} is a symlink; refusing to follow it (pass trust_path=True "
                    f"if it is yours)")
            st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreUnavailableError(f"store path {path} exists and is not a directory")
        if not trust and not self.readonly:
            euid = os.geteuid()
            if st.st_uid != euid:
                raise StoreUnavailableError(
                    f"store directory {path} is owned by uid {st.st_uid}, not by this process "
                    f"(uid {euid}); its owner could plant files and links in it (pass trust_path=True "
                    f"if that is intended)")
            if st.st_mode & 0o022:
                raise StoreUnavailableError(
                    f"store directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                    f"anyone could plant files and links in it: chmod go-w it, or pass trust_path=True")
        for name in (LOCK_FILE, SETTINGS_FILE, "index", "data", "tmp", "quarantine"):
            component = os.path.join(path, name)
            try:
                if stat.S_ISLNK(os.lstat(component).st_mode):
                    raise StoreUnavailableError(f"{component} is a symlink; refusing to follow it")
            except FileNotFoundError:
                pass

    def _acquire_lock(self) -> bool:
        """Take the store lock; return True when no other process has it open.

        Every open store holds a shared ``flock``; the opener that gets it
        exclusively is alone and may reconcile files and index.
        """
        lock_path = os.path.join(self.path, LOCK_FILE)
        flags = os.O_RDONLY if self.readonly else os.O_RDWR | os.O_CREAT
        try:
            self._lock_fd = os.open(lock_path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise StoreUnavailableError(f"{self.path} is not a kvstore directory (no {LOCK_FILE})") from None
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreUnavailableError(
                    f"store directory {self.path} is not writable ({exc.strerror}); "
                    f"open it with readonly=True to inspect it") from None
            raise StoreUnavailableError(f"cannot open {lock_path}: {exc.strerror}") from None
        if self.readonly:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            return False
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # waits for a reconciling opener
            return False

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = -1

    def _load_or_create_settings(self, exclusive: bool, **given: Any) -> dict[str, Any]:
        path = os.path.join(self.path, SETTINGS_FILE)
        try:
            with open(path, "rb") as fh:
                settings = json.loads(fh.read())
        except FileNotFoundError:
            settings = None
        except (OSError, ValueError) as exc:
            raise StoreUnavailableError(f"cannot read {path}: {exc}") from None
        if settings is None:
            if self.readonly or not exclusive:
                raise StoreUnavailableError(f"{self.path} is not an initialised kvstore directory")
            if given["namespace"] is None:
                raise ValueError("namespace is required to create a store")
            if given["capacity_bytes"] is None:
                raise ValueError("capacity_bytes is required to create a store")
            index_bytes = given["index_bytes"] or _default_index_bytes(given["capacity_bytes"])
            _check_capacity(given["capacity_bytes"], index_bytes)
            settings = {
                "format": _SETTINGS_VERSION,
                "namespace": given["namespace"],
                "block_tokens": given["block_tokens"] or 4096,
                "layout": given["layout"] or "snapshot",
                "index_bytes": index_bytes,
                "capacity_bytes": given["capacity_bytes"],
            }
            _write_json_atomically(path, settings)
            log.info("created store %s (%s)", self.path, settings)
            return settings
        if not isinstance(settings, dict) or settings.get("format") != _SETTINGS_VERSION:
            found = settings.get("format") if isinstance(settings, dict) else settings
            raise ConfigMismatchError(f"{path}: unsupported settings format {found!r}")
        _check_settings(settings, path)
        for name in ("namespace", "block_tokens", "layout", "index_bytes"):
            if given[name] is not None and given[name] != settings[name]:
                raise ConfigMismatchError(
                    f"store {self.path} was created with {name}={settings[name]!r}, "
                    f"not {given[name]!r}; open it with the same {name} or use another directory")
        return settings

    def _open_index(self) -> Index:
        map_size = self.index_bytes - _LOCK_FILES_ALLOWANCE
        try:
            return Index(self.path, map_size=map_size, readonly=self.readonly)
        except lmdb.Error as exc:
            raise StoreUnavailableError(
                f"cannot open the index of {self.path}: {exc}; "
                f"`kvstore verify {self.path} --repair` rebuilds it from the payload files") from None

    def _bind_settings(self, settings: dict[str, Any]) -> None:
        """The index keeps its own copy of the settings the data depends on, so
        an edited ``settings.json`` is caught instead of reinterpreting the files."""
        bound = {name: settings[name] for name in ("namespace", "block_tokens", "layout", "index_bytes")}
        with self._index.read() as txn:
            recorded = self._index.settings(txn)
        if recorded is None:
            if not self.readonly:  # a new store, or one from before the index kept them
                with self._index.write() as txn:
                    self._index.set_settings(txn, bound)
            return
        for name, value in bound.items():
            if recorded.get(name) != value:
                raise ConfigMismatchError(
                    f"{os.path.join(self.path, SETTINGS_FILE)} says {name}={value!r} but the store's "
                    f"data was written with {name}={recorded.get(name)!r}; settings.json was edited: "
                    f"restore {name}={recorded.get(name)!r}")

    def _settle_capacity(self, exclusive: bool, given: int | None, stored: int | None) -> int:
        if given is None:
            if stored is None:
                raise ValueError("capacity_bytes is required to create a store")
            return stored
        _check_capacity(given, self.index_bytes)
        if stored is not None and given != stored:
            if self.readonly or not exclusive:
                raise ConfigMismatchError(
                    f"store {self.path} is open elsewhere with capacity_bytes={stored}; "
                    f"pass capacity_bytes=None or {stored}")
            log.info("store %s: capacity_bytes %d -> %d", self.path, stored, given)
            with self._index.read() as txn:  # check before anything is written
                pins = self._index.pins(txn)
                pinned = sum(r.size for r in self._index.entries(txn) if r.key in pins)
            if given - self.index_bytes < pinned:
                raise CapacityError(
                    f"capacity_bytes={given} leaves {given - self.index_bytes} bytes for checkpoints, "
                    f"less than the {pinned} bytes pinned in {self.path}; unpin first or pass "
                    f"capacity_bytes >= {pinned + self.index_bytes}")
        if not self.readonly:
            with self._index.write() as txn:
                if self._index.capacity(txn) != given:
                    self._index.set_capacity(txn, given)
                    self._index.bump_generation(txn)
            if self._settings.get("capacity_bytes") != given:
                self._settings["capacity_bytes"] = given
                _write_json_atomically(os.path.join(self.path, SETTINGS_FILE), self._settings)
        return given

    # ========================================================= reconciliation
    def _reconcile(self) -> None:
        """Bring index and files into agreement; only when no other process is open.

        Removes temp files and stale reservations; drops index entries whose
        file vanished or has the wrong size; adopts complete, valid files the
        index lacks (a crash between rename and commit); quarantines the rest.
        """
        files = self._files
        removed = files.remove_temp_files()
        if removed:
            log.info("removed %d temp files left by interrupted writes", removed)
        for stray in files.stray_paths():
            log.warning("removing stray path %s from the data directory", stray)
            files.remove_stray(stray)
        on_disk = set(files.names())
        with self._index.write() as txn:
            for rid in self._index.reservations(txn):
                self._index.delete_reservation(txn, rid)
            known: set[str] = set()
            for record in list(self._index.entries(txn)):
                try:
                    size = files.stat(record.file).st_size
                except (FileNotFoundError, CorruptFileError):
                    log.warning("index entry %s lost its file; dropping it", record.key)
                    self._index.delete_entry(txn, record.key)
                    continue
                if size != record.size or record.file not in on_disk:
                    log.warning("file of %s has %d bytes, index says %d; quarantining", record.key,
                                size, record.size)
                    files.quarantine(record.file)
                    self._index.delete_entry(txn, record.key)
                    continue
                known.add(record.file)
            for name in sorted(on_disk - known):
                self._adopt_or_quarantine(txn, name)
            quarantined = files.quarantined_bytes()
            if quarantined:
                self._index.put_reservation(txn, _QUARANTINE_RID, quarantined, 0)
            self._index.bump_generation(txn)

    def _adopt_or_quarantine(self, txn: lmdb.Transaction, name: str) -> None:
        files = self._files
        try:
            header = files.verify(name)
            if header.namespace_hash != self.namespace.digest8:
                raise CorruptFileError("belongs to another namespace")
            if not name.startswith(header.key):
                raise CorruptFileError("file name disagrees with its header")
            misfit = header.fits(block_tokens=self.block_tokens, chained=self.layout == "chained")
            if misfit is not None:
                raise CorruptFileError(misfit)
        except (CorruptFileError, OSError) as exc:
            log.warning("quarantining unreadable file %s: %s", name, exc)
            files.quarantine(name)
            return
        if self._index.get_entry(txn, header.key) is not None:
            log.info("removing duplicate file %s of an indexed key", name)
            files.delete(name)
            return
        log.info("adopting %s (written before a crash, not yet indexed)", name)
        self._index.put_entry(txn, _record_from_header(header, name))

    def _enforce_capacity(self) -> None:
        """Evict down to the capacity (after a reopen with a smaller one)."""
        if self._manager.free_bytes >= 0:
            return
        with self._write() as txn:
            self._evict_into(txn, 0)

    # ========================================================= synchronising
    def _sync(self, force: bool = False) -> None:
        with self._index.read() as txn:
            self._sync_in(txn, force)

    def _sync_in(self, txn: lmdb.Transaction, force: bool = False) -> None:
        """Mirror the index into the eviction manager if anyone changed it."""
        generation = self._index.generation(txn)
        if not force and generation == self._generation:
            return
        manager = self._manager
        records = {r.key: r for r in self._index.entries(txn)}
        for key in list(manager):
            record = records.get(key)
            if record is None or manager.get(key).extra.get("file") != record.file:
                manager.remove(key)
        fresh = sorted((r for k, r in records.items() if k not in manager), key=lambda r: r.inserted_at)
        for record in fresh:
            manager.insert(_entry_from_record(record), record.inserted_at, reserved=0)
        for record in sorted((r for r in fresh if r.hits), key=lambda r: r.last_use):
            manager.restore_hit(record.key, record.last_use)
        pins = self._index.pins(txn)
        for key in list(manager):
            entry = manager.get(key)
            if entry.pinned and key not in pins:
                manager.unpin(key)
        for key in pins:
            entry = manager.get(key)
            if entry is not None and not entry.pinned:
                manager.pin(key, force=True)
        manager.set_reserved(sum(r["size"] for r in self._index.reservations(txn).values()))
        capacity = self._index.capacity(txn)
        if capacity is not None and capacity != self.capacity_bytes:
            self.capacity_bytes = capacity
            manager.capacity_bytes = capacity - self.index_bytes
        self._generation = generation

    @contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction: syncs the mirror first, flushes pending stats,
        and on commit records the generation it wrote (so this process's own
        changes never trigger a resync). On abort the mirror is resynced."""
        pending = dict(self._pending_hits), dict(self._pending_counters)
        try:
            with self._index.write() as txn:
                self._sync_in(txn)
                self._flush_pending(txn)
                yield txn
                generation = self._index.bump_generation(txn)
        except BaseException:
            self._generation = None
            # the flush rolled back with the transaction, and so did whatever the
            # body counted: restore the pending statistics exactly as they were
            self._pending_hits, self._pending_counters = pending
            raise
        self._generation = generation

    def _flush_pending(self, txn: lmdb.Transaction) -> None:
        for key, (hits, last_use) in self._pending_hits.items():
            record = self._index.get_entry(txn, key)
            if record is not None:
                record.hits += hits
                record.last_use = max(record.last_use, last_use)
                self._index.put_entry(txn, record)
        self._pending_hits.clear()
        if self._pending_counters:
            self._index.add_counters(txn, self._pending_counters)
            self._pending_counters = {}

    def _count(self, name: str, delta: int = 1) -> None:
        self._pending_counters[name] = self._pending_counters.get(name, 0) + delta

    # ============================================================== lookups
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("operation on a closed CheckpointStore")

    def _prefix_keys(self, tokens: TokensLike) -> PrefixKeys:
        return PrefixKeys(self.namespace, tokens, self.block_tokens)

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
        with self._lock, self._memory:
            self._sync()
            if self._cold is not None:
                with self._cold._lock:
                    self._cold._sync()
            found = self._longest_match(prefix)
            tier = None if found is None else self._tier_of(found[1])
            self._count_lookup(tier)
            if found is None:
                return None
            n_tokens, key, chain = found
            self._record_hit(key, self._now(), _check_session(session))
            return Match(tokens=n_tokens, key=key, tier=tier,
                         is_tail=n_tokens % self.block_tokens != 0, chain=chain)

    def contains(self, tokens: TokensLike) -> bool:
        """Whether exactly the prefix ``tokens`` is stored in some tier (a tail
        or an aligned checkpoint). Counts no hit. Runtime complexity: O(len(tokens))."""
        self._check_open()
        key = self._prefix_keys(tokens).key(len(tokens))
        with self._lock, self._memory:
            self._sync()
            return self._present(key)

    def load(self, match: Match) -> Any:
        """The payload of ``match``: bytes, or a numpy array as it was stored.

        In the ``chained`` layout, the list of its blocks' payloads, first to
        last. Arrays served by the RAM tier are read-only. A checkpoint found
        on disk is copied into the RAM tier; one found in the cold tier is
        promoted to disk (and leaves the cold tier).

        Returns ``None`` when the checkpoint (or one of its blocks) vanished
        (evicted meanwhile) or fails verification (it is then quarantined and
        dropped): never wrong bytes. Runtime complexity: O(payload bytes).
        """
        self._check_open()
        if not isinstance(match, Match):
            raise TypeError(f"match must be a Match returned by lookup(), not {type(match).__name__}")
        keys = match.chain or (match.key,)
        parts = []
        for key in keys:
            payload = self._load_key(key)
            if payload is None:
                return None
            parts.append(payload)
        return parts if self.layout == "chained" else parts[-1]

    # ------------------------------------------------------------- tiering
    def _tier_indexes(self) -> list[tuple[str, Any]]:
        """``(tier name, its index)`` of every tier present, fastest first."""
        indexes: list[tuple[str, Any]] = []
        if self._ram is not None:
            indexes.append(("ram", self._ram))
        if len(self._pending):
            indexes.append(("pending", self._pending))
        indexes.append(("disk", self._manager))
        if self._cold is not None:
            indexes.append(("cold", self._cold._manager))
        return indexes

    def _present(self, key: str) -> bool:
        return any(key in index for _, index in self._tier_indexes())

    def _tier_of(self, key: str) -> str | None:
        return next((name for name, index in self._tier_indexes() if key in index), None)

    def _longest_match(self, prefix: PrefixKeys) -> tuple[int, str, tuple[str, ...]] | None:
        indexes = [index for _, index in self._tier_indexes()]
        if self.layout == "snapshot":
            best = None
            for index in indexes:
                found = index.longest_match(prefix)
                if found is not None and (best is None or found[0] > best[0]):
                    best = found
            return None if best is None else (best[0], best[1], ())
        # chained: the longest run of blocks, each stored in some tier, then its tails
        chain: list[str] = []
        depth = 0
        for n in range(self.block_tokens, prefix.anchor(len(prefix)) + 1, self.block_tokens):
            key = prefix.key(n)
            if not any(key in index for index in indexes):
                break
            chain.append(key)
            depth = n
        tail = None
        anchor = prefix.key(depth)
        for index in indexes:
            for tail_key, tokens in index.tails_at(anchor).items():
                if (depth < tokens <= len(prefix) and (tail is None or tokens > tail[0])
                        and prefix.key(tokens) == tail_key):
                    tail = (tokens, tail_key)
        if tail is not None:
            return tail[0], tail[1], (*chain, tail[1])
        return (depth, chain[-1], tuple(chain)) if chain else None

    def _count_lookup(self, served: str | None) -> None:
        """A hit for the tier that served, a miss for every faster tier it passed."""
        self._count("hits" if served else "misses")
        for name, _ in self._tier_indexes():
            outcome = "hits" if name == served else "misses"
            if name == "ram":
                self._ram.counters[outcome] += 1
            elif name == "disk":
                self._count(f"disk_{outcome}")
            elif name == "cold":
                with self._cold._lock:
                    self._cold._count(outcome)
            if name == served:
                return

    def _record_hit(self, key: str, now: float, session: str | None = None) -> None:
        if self._ram is not None:
            self._ram.record_hit(key, now)
        for store in (self, self._cold):
            if store is None:
                continue
            with store._lock:
                if key in store._manager:
                    store._manager.record_hit(key, now, session=session)
                    hits, _ = store._pending_hits.get(key, (0, now))
                    store._pending_hits[key] = (hits + 1, now)

    def _load_key(self, key: str) -> Any:
        with self._memory:
            for tier in (self._ram, self._pending):
                if tier is not None and key in tier:
                    return tier.payload(key)
        found = self._read_file(key)
        if found is None and self._cold is not None:
            found = self._cold._read_file(key)
            if found is not None:
                self._promote_from_cold(*found)
        if found is None:
            return None
        header, payload = found
        self._hold_in_ram(header, payload, promotion=True)
        return payload

    def _read_file(self, key: str) -> tuple[Header, Any] | None:
        """``(header, payload)`` of ``key`` in this store's directory, verified, or ``None``."""
        with self._lock:
            entry = self._manager.get(key)
            if entry is None:
                self._sync()
                entry = self._manager.get(key)
                if entry is None:
                    return None
            name = entry.extra["file"]
        try:
            header, payload = self._files.read(name, key=key, namespace_hash=self.namespace.digest8)
            misfit = header.fits(block_tokens=self.block_tokens, chained=self.layout == "chained")
            if misfit is not None:
                raise CorruptFileError(f"{name}: {misfit}")
            return header, payload
        except FileNotFoundError:
            log.info("checkpoint %s vanished before it could be read", key)
            self._drop(key, name, quarantine=False)
        except CorruptFileError as exc:
            log.warning("checkpoint %s failed verification: %s", key, exc)
            self._drop(key, name, quarantine=True)
        except OSError as exc:
            log.warning("cannot read checkpoint %s: %s", key, exc)
        return None

    def _hold_in_ram(self, header: Header, payload: Any, *, promotion: bool) -> None:
        if self._ram is None:
            return
        with self._memory:
            if header.key in self._ram:
                return
            evicted = self._ram.add(header, frozen_copy(payload), now=self._now())
            if promotion and header.key in self._ram:
                self._ram.counters["promotions"] += 1
            self._session["ram_demotions"] += sum(1 for old in evicted if self._present(old.key))

    def _promote_from_cold(self, header: Header, payload: Any) -> None:
        """Move a checkpoint found in the cold tier back to disk."""
        plain = replace(header, payload_len=header.data_len, raw_len=None, checksum=0)
        try:
            view, _, _ = payload_descriptor(payload)
            stored = self._store_file(plain, view, durable=True)
        except (OSError, KVStoreError) as exc:
            log.warning("could not promote %s from the cold tier: %s", header.key, exc)
            return
        with self._lock:
            if stored:
                self._count("promotions")
            if header.key in self._manager:
                self._cold._remove(header.key)

    def _remove(self, key: str) -> None:
        """Delete ``key``'s entry and file (it moved to another tier)."""
        with self._lock, self._write() as txn:
            record = self._index.delete_entry(txn, key)
            if record is None:
                return
            if key in self._manager:
                self._manager.remove(key)
            self._files.delete(record.file)

    def _demote(self, record: EntryRecord) -> None:
        """Copy an evicted checkpoint into the cold tier (before its file is deleted)."""
        try:
            header, payload = self._files.read(record.file, key=record.key,
                                               namespace_hash=self.namespace.digest8)
            view, _, _ = payload_descriptor(payload)
            if self._cold._store_file(header, view, durable=True):
                self._count("demotions")
        except (OSError, KVStoreError) as exc:
            log.warning("could not demote %s to the cold tier %s: %s", record.key, self._cold.path, exc)

    def _queue_write(self, header: Header, payload: Any) -> bool:
        """``put(..., durable=False)``: hold the payload in memory and queue its write.

        Takes only the memory lock, so it never waits for the writer's index commit."""
        with self._memory:
            if self._present(header.key):
                return False
            frozen, now = frozen_copy(payload), self._now()
            self._pending.add(header, frozen, now=now)
            if self._writer is None:
                self._writer = BackgroundWriter(self._write_pending, max_pending=self._max_pending_writes,
                                                on_error=self._write_failed,
                                                name=f"kvstore-writer {self.path}")
            dropped = self._writer.submit(header.key)
            if dropped is not None:
                self._pending.discard(dropped)
                self._session["dropped_writes"] += 1
                log.info("write queue full (max_pending_writes=%d): dropped the oldest pending "
                         "checkpoint %s", self._max_pending_writes, dropped)
        self._hold_in_ram(header, frozen, promotion=False)
        return True

    def _write_pending(self, key: str) -> None:
        with self._memory:
            header, payload = self._pending.header(key), self._pending.payload(key)
        if header is None:
            return
        try:
            view, _, _ = payload_descriptor(payload)
            self._store_file(header, view, durable=True)
        finally:
            with self._memory:
                self._pending.discard(key)

    def _write_failed(self, key: str, exc: BaseException) -> None:
        with self._memory:
            self._session["write_errors"] += 1

    def _open_cold(self, path: str | os.PathLike[str], capacity_bytes: int | None,
                   policy: str | Policy | None, hot_policy: str | Policy,
                   level: int | None) -> "CheckpointStore":
        path = os.path.abspath(os.fspath(path))
        real, mine = os.path.realpath(path), os.path.realpath(self.path)
        if real == mine or _inside(real, mine) or _inside(mine, real):
            raise ValueError(f"cold_path={path!r} must be a directory outside the store {self.path} "
                             f"(and not contain it): a tier inside another would delete its data")
        if capacity_bytes is None and not os.path.exists(os.path.join(path, SETTINGS_FILE)):
            raise ValueError(f"cold_capacity_bytes is required to create the cold tier {path}")
        if policy is None:
            policy = hot_policy if isinstance(hot_policy, str) else DEFAULT_POLICY
        return _ColdTier(path, capacity_bytes, compression_level=1 if level is None else level,
                         namespace=self.namespace.name, block_tokens=self.block_tokens,
                         layout=self.layout, policy=policy, readonly=self.readonly, clock=self._clock,
                         trust_path=self._trust_path)

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

    def _drop(self, key: str, name: str, *, quarantine: bool) -> None:
        """Remove an entry whose file vanished or is bad."""
        if self.readonly:
            return
        with self._lock, self._write() as txn:
            record = self._index.get_entry(txn, key)
            if record is None or record.file != name:
                return
            self._index.delete_entry(txn, key)
            if self._manager.get(key) is not None:
                self._manager.remove(key)
            if quarantine:
                self._files.quarantine(name)
                held = self._index.reservations(txn).get(_QUARANTINE_RID, {"size": 0})["size"]
                self._index.put_reservation(txn, _QUARANTINE_RID, held + record.size, 0)
                self._count("quarantined")

    # ================================================================ writes
    def put(
        self,
        tokens: TokensLike,
        payload: Any,
        *,
        tail: bool = False,
        priority: int = 0,
        durable: bool = True,
        session: str | None = None,
    ) -> bool:
        """Store the KV state ``payload`` of the prefix ``tokens``.

        ``len(tokens)`` must be a multiple of ``block_tokens`` unless
        ``tail=True`` (a checkpoint at the exact end of a prompt). Returns
        ``True`` when written, ``False`` when that prefix is already stored or
        the policy declined it. Evicts what the policy names to make room.

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
        session = _check_session(session)
        prefix = self._prefix_keys(tokens)
        n_tokens = len(prefix)
        if n_tokens == 0:
            raise ValueError("tokens must not be empty")
        aligned = n_tokens % self.block_tokens == 0
        if not aligned and not tail:
            raise ValueError(
                f"len(tokens)={n_tokens} is not a multiple of block_tokens={self.block_tokens}; "
                f"pass tail=True to store a checkpoint at the exact end of a prompt")
        is_tail = not aligned
        view, dtype, shape = payload_descriptor(payload)
        key = prefix.key(n_tokens)
        now = self._now()
        anchor_len = prefix.anchor(n_tokens)
        header = Header(
            namespace_hash=self.namespace.digest8, key=key, tokens=n_tokens,
            payload_len=view.nbytes, checksum=0, parent=prefix.parent_key(n_tokens),
            anchor=prefix.key(anchor_len) if is_tail else None,
            ancestors=prefix.ancestor_keys(n_tokens), is_tail=is_tail, priority=priority,
            inserted_at=now, dtype=dtype, shape=shape, chained=self.layout == "chained",
        )
        if header.header_len > MAX_HEADER_BYTES:
            raise ValueError(
                f"tokens: a prefix of {n_tokens} tokens spans {n_tokens // self.block_tokens} blocks, "
                f"whose keys need a {header.header_len}-byte header; a file header holds at most "
                f"{MAX_HEADER_BYTES} bytes (about {MAX_HEADER_BYTES // 20} blocks): use a larger block_tokens")
        self._check_fits(header)
        if self.layout == "chained" and header.parent is not None and not self._present(header.parent):
            raise ValueError(
                f"chained layout: the block before tokens[:{n_tokens}] is not stored; "
                f"put the blocks of a prompt in order")
        if session is not None:
            with self._lock:
                self._session_hints[key] = session
        if not durable:
            return self._queue_write(header, payload)
        written = self._store_file(header, view, durable=True)
        if session is not None:
            with self._lock:
                self._session_hints.pop(key, None)
                if key in self._manager:  # stored now, or already: either way it is the session's
                    self._manager.note_session(key, session)
        if written:
            self._hold_in_ram(header, payload, promotion=False)
        return written

    def _check_fits(self, header: Header) -> None:
        """Raise :class:`CapacityError` when ``header``'s file could never fit this store."""
        size = stored_size_bound(header, compressed=self._compression_level is not None)
        if size > self._manager.capacity_bytes:
            raise CapacityError(
                f"payload of {header.payload_len} bytes ({size} with its header) exceeds the "
                f"store's payload budget of {self._manager.capacity_bytes} bytes "
                f"(capacity_bytes={self.capacity_bytes} minus index_bytes={self.index_bytes})")

    def _store_file(self, header: Header, view: memoryview, *, durable: bool) -> bool:
        """Reserve room (evicting), write the file, commit its index entry.

        ``header.payload_len`` is the uncompressed length; a cold tier compresses.
        Returns ``False`` when the key is already stored or the policy declines it.
        """
        self._check_fits(header)
        key, now = header.key, self._now()
        compressed = self._compression_level is not None
        size = stored_size_bound(header, compressed=compressed)
        candidate = _entry_from_header(header, "")
        rid = f"{os.getpid()}-{secrets.token_hex(6)}"
        protect = header.ancestors if self.layout == "chained" else ()

        candidate.size = size  # what is reserved: a compressed file's bound

        def reserve() -> bool:
            with self._write() as txn:
                if key in self._manager:
                    return False
                self._free_reserved_room(txn, size)
                victims = self._manager.make_room(candidate, now, protect=protect)
                if victims is None:
                    self._count("declined")
                    return False
                self._retire_victims(txn, victims)
                self._index.put_reservation(txn, rid, size, os.getpid(), boot=_boot_id(),
                                            start=_start_time(os.getpid()))
                return True

        with self._lock:
            if not self._retrying_map_full(reserve):
                return False
        try:
            name, written = self._files.write(header, view, durable=durable, tag=rid,
                                              compression_level=self._compression_level)
        except BaseException:
            self._cancel_reservation(rid, size)
            raise
        assert written <= size, (written, size)
        record = _record_from_header(header, name)
        record.size = written  # compressed files are smaller than the bound reserved

        def commit() -> bool:
            with self._write() as txn:
                self._index.delete_reservation(txn, rid)
                if key in self._manager:  # another process stored it meanwhile;
                    self._files.delete(name)  # delete before the commit frees its bytes
                    self._manager.release(size)
                    return False
                self._index.put_entry(txn, record)
                self._count("puts")
                if compressed:
                    self._count("raw_bytes_in", header.payload_len)
                    self._count("stored_bytes_in", written)
                self._manager.insert(_entry_from_record(record), now, reserved=size)
                session = self._session_hints.pop(key, None) if self._session_hints else None
                if session is not None:
                    self._manager.note_session(key, session)
                return True

        try:
            with self._lock:
                return self._retrying_map_full(commit)
        except BaseException:
            self._cancel_reservation(rid, size, name)
            raise

    def _retrying_map_full(self, body: Callable[[], Any]) -> Any:
        """Run ``body`` (one write transaction); when the LMDB map is full,
        evict some checkpoints to free index pages and try again."""
        for _ in range(_MAP_FULL_RETRIES):
            try:
                return body()
            except IndexFullError:
                self._make_index_room()
        raise IndexFullError(f"the index of {self.path} is full (index_bytes={self.index_bytes}) "
                             f"and eviction did not free enough of it")

    def _cancel_reservation(self, rid: str, size: int, name: str | None = None) -> None:
        """Undo a reservation whose write failed, deleting a file already written."""
        with self._lock, self._write() as txn:
            if name is not None:
                self._files.delete(name)
            if rid in self._index.reservations(txn):
                self._index.delete_reservation(txn, rid)
                self._manager.set_reserved(max(0, self._manager.reserved_bytes - size))

    def _reclaim_dead_reservations(self, txn: lmdb.Transaction) -> int:
        """Give back the room reserved by writers that died mid-write (killed
        while other processes kept the store open); return the bytes freed.

        A reservation names its process by pid, boot id and start time, so a
        reused pid or a reboot is never mistaken for the writer. Runs inside
        the index's write transaction: no other writer can race it.
        """
        boot = _boot_id()
        freed = 0
        for rid, reservation in self._index.reservations(txn).items():
            if rid == _QUARANTINE_RID or _writer_alive(reservation, boot):
                continue
            log.warning("reclaiming %d bytes reserved by process %s, which died mid-write",
                        reservation["size"], reservation.get("pid"))
            self._index.delete_reservation(txn, rid)
            self._files.remove_temp(rid)
            freed += reservation["size"]
        if freed:
            self._manager.set_reserved(max(0, self._manager.reserved_bytes - freed))
            self._count("reclaimed_reservations")
        return freed

    def _evict_into(self, txn: lmdb.Transaction, nbytes: int) -> list[EntryRecord]:
        """Reserve ``nbytes`` in the manager (no admission: used to shrink the
        store to its capacity), deleting victims from the index in ``txn``."""
        self._free_reserved_room(txn, nbytes)
        return self._retire_victims(txn, self._manager.evict_for(nbytes, self._now()))

    def _free_reserved_room(self, txn: lmdb.Transaction, nbytes: int) -> None:
        """Before evicting checkpoints for ``nbytes``, take back room nobody uses:
        reservations of writers that died, then quarantined files."""
        manager = self._manager
        if manager.free_bytes < nbytes:
            self._reclaim_dead_reservations(txn)
        held = self._index.reservations(txn).get(_QUARANTINE_RID)
        if held and manager.free_bytes < nbytes:
            freed = self._files.purge_quarantine()
            log.info("purged %d quarantined bytes to make room", freed)
            self._index.delete_reservation(txn, _QUARANTINE_RID)
            manager.release(min(held["size"], manager.reserved_bytes))

    def _retire_victims(self, txn: lmdb.Transaction, evicted: list[Entry]) -> list[EntryRecord]:
        """Delete the manager's victims from the index in ``txn`` and their files
        (demoting them to the cold tier, if any)."""
        # On failure the manager has removed some victims in memory only: the
        # transaction aborts, the index keeps them, and the resync restores them.
        manager = self._manager
        # Keep the index's pages well below its map: LMDB needs free pages even
        # to delete, so a completely full map could not be repaired. Two victims
        # per new entry shrink it steadily; evicting until the page count drops
        # would purge far more, as LMDB merges half-empty pages only lazily.
        if self._index.crowded(txn):
            for_room = manager.evict_some(2, self._now())
            evicted = evicted + for_room
            self._count("index_room_evictions", len(for_room))
        records = []
        for entry in evicted:
            record = self._index.delete_entry(txn, entry.key)
            if record is not None:
                records.append(record)
        if evicted:
            self._count("evictions", len(evicted))
        # Unlink while still holding the index's writer lock: no other process
        # can reserve the freed bytes before they are really free. Should the
        # transaction abort after this, those entries load as misses.
        self._retire_files(records)
        return records

    def _make_index_room(self) -> None:
        """Evict about 1/16 of the checkpoints (at least one) to free index pages."""
        with self._write() as txn:
            records = []
            for entry in self._manager.evict_some(max(1, len(self._manager) // 16), self._now()):
                record = self._index.delete_entry(txn, entry.key)
                if record is not None:
                    records.append(record)
            if not records:
                raise IndexFullError(f"the index of {self.path} is full (index_bytes={self.index_bytes}) "
                                     f"and nothing can be evicted (everything left is pinned)")
            self._count("evictions", len(records))
            self._retire_files(records)

    def _retire_files(self, records: list[EntryRecord]) -> None:
        """Delete evicted checkpoints' files, demoting each to the cold tier first."""
        for record in records:
            if self._cold is not None:
                self._demote(record)
            self._files.delete(record.file)

    # ================================================================== pins
    def end_session(self, session: str) -> int:
        """Tell the store that the engine's ``session`` is over (a hint).

        Its checkpoints on disk that no other session wrote or used (through
        ``put(..., session=)``, ``lookup``/``load_longest(..., session=)``)
        become the first victims, ahead of the policy's choice; shared ones (a
        system prompt) stay with the policy. Hints live in this process.
        Returns how many checkpoints it released. Runtime complexity: O(its keys).
        """
        self._check_open()
        session = _check_session(session)
        if session is None:
            raise TypeError("session must be a str, not None")
        with self._lock:
            self._sync()
            for key in [k for k, s in self._session_hints.items() if s == session]:
                del self._session_hints[key]
            return self._manager.end_session(session, self._now())

    def pin(self, tokens: TokensLike) -> Match:
        """Keep the longest prefix of ``tokens`` stored on disk out of eviction.

        Pins hold on the disk tier (a RAM or cold copy is not pinned).

        Raises ``ValueError`` when no prefix of ``tokens`` is stored and
        :class:`~kvstore.errors.PinQuotaError` past ``pin_quota_bytes``.
        """
        self._check_open()
        prefix = self._prefix_keys(tokens)

        def pin_in_index() -> Match:
            with self._write() as txn:
                found = self._manager.longest_match(prefix)
                if found is None:
                    raise ValueError("no prefix of tokens is stored; put it before pinning it")
                n_tokens, key = found
                self._manager.pin(key)
                self._index.set_pin(txn, key, True)
                return Match(tokens=n_tokens, key=key, tier="disk", is_tail=self._manager.get(key).is_tail)

        with self._lock:  # a full index evicts unpinned checkpoints for room, like a put
            return self._retrying_map_full(pin_in_index)

    def unpin(self, tokens: TokensLike) -> None:
        """Release every pin on a stored prefix of ``tokens``."""
        self._check_open()
        prefix = self._prefix_keys(tokens)
        with self._lock, self._write() as txn:
            for n in [*prefix.aligned_lengths, len(prefix)]:
                key = prefix.key(n)
                if self._manager.get(key) is not None and self._manager.get(key).pinned:
                    self._manager.unpin(key)
                    self._index.set_pin(txn, key, False)

    # ================================================================= stats
    def stats(self) -> dict[str, Any]:
        """Counts, bytes per tier, hits, misses, evictions.

        Counters are persisted, so another process (``kvstore stats``) sees
        them too, up to the hits of this process not yet flushed.
        """
        self._check_open()
        with self._lock, self._memory:
            self._sync()
            with self._index.read() as txn:
                counters = self._index.counters(txn)
            for name, delta in self._pending_counters.items():
                counters[name] = counters.get(name, 0) + delta
            manager = self._manager
            disk = {
                "entries": len(manager),
                "bytes": manager.used_bytes,
                "reserved_bytes": manager.reserved_bytes,
                "pinned_bytes": manager.pinned_bytes,
                "capacity_bytes": manager.capacity_bytes,
                "tail_entries": sum(1 for k in manager if manager.get(k).is_tail),
                "hits": counters.get("disk_hits", 0),
                "misses": counters.get("disk_misses", 0),
                "promotions": counters.get("promotions", 0),
                "demotions": counters.get("demotions", 0),
                "evictions": counters.get("evictions", 0),
                "compression_ratio": _ratio(counters),
            }
            if self.layout == "chained":
                disk["snapshot_equivalent_bytes"] = self._snapshot_equivalent_bytes()
            tiers = {"disk": disk}
            if self._ram is not None:
                tiers = {"ram": {**self._ram.stats(),
                                 "demotions": self._session["ram_demotions"]}, **tiers}
            tiers["pending"] = {"entries": len(self._pending), "bytes": self._pending.used_bytes,
                                "dropped_writes": self._session["dropped_writes"],
                                "write_errors": self._session["write_errors"]}
            if self._cold is not None:
                cold = self._cold.stats()
                tiers["cold"] = {
                    "path": cold["path"], "entries": cold["entries"],
                    "bytes": cold["tiers"]["disk"]["bytes"],
                    "capacity_bytes": cold["tiers"]["disk"]["capacity_bytes"],
                    "hits": cold["hits"], "misses": cold["misses"],
                    "promotions": disk["promotions"], "demotions": 0,
                    "evictions": cold["evictions"],
                    "compression_ratio": cold["tiers"]["disk"]["compression_ratio"],
                }
            return {
                "path": self.path,
                "namespace": self.namespace.name,
                "block_tokens": self.block_tokens,
                "layout": self.layout,
                "policy": getattr(self._policy, "name", type(self._policy).__name__),
                "capacity_bytes": self.capacity_bytes,
                "index_bytes": self.index_bytes,
                "entries": len(manager),
                "bytes": manager.used_bytes + self.index_bytes,
                "hits": counters.get("hits", 0),
                "misses": counters.get("misses", 0),
                "puts": counters.get("puts", 0),
                "declined": counters.get("declined", 0),
                "evictions": counters.get("evictions", 0),
                "index_room_evictions": counters.get("index_room_evictions", 0),
                "quarantined": counters.get("quarantined", 0),
                "tiers": tiers,
            }

    def _snapshot_equivalent_bytes(self) -> int:
        """What the stored blocks would take as snapshots: each one's whole chain."""
        manager, whole = self._manager, {}

        def chain_bytes(key: str) -> int:
            if key not in whole:
                entry = manager.get(key)
                parent = entry.parent if entry.parent in manager else None
                whole[key] = entry.size + (chain_bytes(parent) if parent else 0)
            return whole[key]

        for key in sorted(manager, key=lambda k: manager.get(k).tokens):  # parents first: no deep recursion
            chain_bytes(key)
        return sum(whole.values())

    # ================================================================ verify
    def verify(self, *, repair: bool = False) -> dict[str, list[str]]:
        """Check every indexed file in full (header, length, checksum).

        Returns ``{"ok": [...], "bad": [...], "missing": [...]}`` of keys. With
        ``repair=True`` bad files are quarantined and dropped, missing ones
        dropped. Runtime complexity: O(total bytes stored).
        """
        self._check_open()
        if repair and self.readonly:
            raise KVStoreError("repair needs a writable store (readonly=False)")
        report: dict[str, list[str]] = {"ok": [], "bad": [], "missing": []}
        with self._lock:
            self._sync()
            entries = [(k, self._manager.get(k).extra["file"]) for k in self._manager]
        for key, name in entries:
            try:
                header = self._files.verify(name)
                if header.key != key or header.namespace_hash != self.namespace.digest8:
                    raise CorruptFileError("header disagrees with the index")
                report["ok"].append(key)
            except FileNotFoundError:
                report["missing"].append(key)
                if repair:
                    self._drop(key, name, quarantine=False)
            except (CorruptFileError, OSError):
                report["bad"].append(key)
                if repair:
                    self._drop(key, name, quarantine=True)
        return report

    # ================================================================= close
    def flush(self) -> None:
        """Wait for every ``put(..., durable=False)`` to be written, then persist
        pending hit statistics."""
        self._check_open()
        if self._writer is not None:
            self._writer.drain()
        if self._cold is not None:
            self._cold.flush()
        if self.readonly or not (self._pending_hits or self._pending_counters):
            return
        with self._lock, self._write():
            pass

    def close(self) -> None:
        """Wait for pending writes, flush statistics, release the index and the lock.
        Idempotent."""
        if self._closed and self._lock_fd < 0:
            return
        try:
            if getattr(self, "_writer", None) is not None and not self._closed:
                self._writer.close()
            if not self._closed and not self.readonly and (self._pending_hits or self._pending_counters):
                try:
                    with self._lock, self._write():
                        pass
                except (lmdb.Error, KVStoreError) as exc:
                    log.warning("could not persist statistics on close: %s", exc)
        finally:
            self._closed = True
            if getattr(self, "_cold", None) is not None:
                self._cold.close()
            index = getattr(self, "_index", None)
            if index is not None:
                index.close()
            files = getattr(self, "_files", None)
            if files is not None:
                files.close()
            self._release_lock()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock_fd", -1) >= 0:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._manager)} entries"
        return f"<CheckpointStore {self.path!r} {state}>"

    def _check(self) -> None:
        """Assert that the in-memory mirror agrees with the index (for tests)."""
        with self._lock:
            self._sync(force=True)
            self._manager._check()
            with self._index.read() as txn:
                records = {r.key: r for r in self._index.entries(txn)}
            assert set(records) == set(self._manager), "index and manager disagree"
            total = sum(r.size for r in records.values())
            assert total + self.index_bytes <= self.capacity_bytes, (total, self.capacity_bytes)


class _ColdTier(CheckpointStore):
    """The cold tier: a store of its own (``kvstore stats`` works on it) whose
    files are zstd-compressed at ``compression_level``."""

    def __init__(self, path: str, capacity_bytes: int | None, *, compression_level: int,
                 **kwargs: Any) -> None:
        self._compression_level = compression_level
        super().__init__(path, capacity_bytes, **kwargs)


def _ratio(counters: dict[str, int]) -> float:
    """Uncompressed over stored bytes of everything written compressed (1.0 if none)."""
    stored = counters.get("stored_bytes_in", 0)
    return round(counters.get("raw_bytes_in", 0) / stored, 3) if stored else 1.0


def _check_tier_arguments(ram_bytes: object, cold_path: object, cold_capacity_bytes: object,
                          compression_level: object, max_pending_writes: object) -> None:
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(ram_bytes) or ram_bytes < 0:
        raise ValueError(f"ram_bytes must be an int >= 0, got {ram_bytes!r}")
    if cold_path is None:
        for name, value in (("cold_capacity_bytes", cold_capacity_bytes),
                            ("compression_level", compression_level)):
            if value is not None:
                raise ValueError(f"{name} configures the cold tier; pass cold_path too")
    if cold_capacity_bytes is not None and (not is_int(cold_capacity_bytes) or cold_capacity_bytes <= 0):
        raise ValueError(f"cold_capacity_bytes must be an int > 0, got {cold_capacity_bytes!r}")
    if compression_level is not None and (not is_int(compression_level)
                                          or not -7 <= compression_level <= 22):
        raise ValueError(f"compression_level must be an int from -7 to 22, got {compression_level!r}")
    if not is_int(max_pending_writes) or max_pending_writes < 1:
        raise ValueError(f"max_pending_writes must be an int >= 1, got {max_pending_writes!r}")


def _check_settings(settings: dict[str, Any], path: str) -> None:
    """Every value a decision depends on, checked: a clear error naming the field."""
    def bad(field: str, what: str) -> ConfigMismatchError:
        return ConfigMismatchError(f"{path}: {field} must be {what}, got {settings.get(field)!r}; "
                                   f"restore the file or recreate the store")

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    namespace = settings.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise bad("namespace", "a non-empty string")
    try:
        Namespace(namespace)
    except ValueError:
        raise bad("namespace", "valid UTF-8 text") from None
    block = settings.get("block_tokens")
    if not is_int(block) or not 1 <= block < 2**31:
        raise bad("block_tokens", "an int from 1 to 2**31 - 1")
    if settings.get("layout") not in LAYOUTS:
        raise bad("layout", f"one of {LAYOUTS}")
    index_bytes = settings.get("index_bytes")
    if not is_int(index_bytes) or not _MIN_INDEX_BYTES <= index_bytes <= 1 << 40:
        raise bad("index_bytes", f"an int from {_MIN_INDEX_BYTES} to 2**40")
    capacity = settings.get("capacity_bytes")
    if capacity is not None and (not is_int(capacity) or capacity <= index_bytes):
        raise bad("capacity_bytes", "an int larger than index_bytes")


def _check_capacity(capacity: int, index_bytes: int) -> None:
    if capacity - index_bytes < _MIN_PAYLOAD_BYTES:
        raise ValueError(
            f"capacity_bytes={capacity} is too small: the index takes index_bytes={index_bytes}; "
            f"use at least {index_bytes + _MIN_PAYLOAD_BYTES}")


def _write_json_atomically(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", opener=_private_opener) as fh:
        json.dump(value, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


def _record_from_header(header: Header, name: str) -> EntryRecord:
    return EntryRecord(
        key=header.key, file=name, tokens=header.tokens, size=header.file_size,
        parent=header.parent, anchor=header.anchor, ancestors="".join(header.ancestors),
        is_tail=header.is_tail, priority=header.priority, inserted_at=header.inserted_at,
        last_use=header.inserted_at,
    )


def _entry_from_header(header: Header, name: str) -> Entry:
    return _entry_from_record(_record_from_header(header, name))


def _entry_from_record(record: EntryRecord) -> Entry:
    return Entry(
        key=record.key, tokens=record.tokens, size=record.size, parent=record.parent,
        ancestors=record.ancestor_keys(), is_tail=record.is_tail, anchor=record.anchor,
        priority=record.priority, inserted_at=record.inserted_at, extra={"file": record.file},
    )
