"""``DiskTier``: checkpoint files in a store directory, an LMDB index, and the
eviction manager that keeps them within a byte budget.

This is a holding :class:`~kvstore.tiers.Tier`: the disk tier of a
:class:`~kvstore.CheckpointStore`, and, with a ``compression_level``, its
cold tier (zstd frames on another disk). Each is a store directory of its
own (``kvstore stats|verify PATH`` work on either).

- Writes: reserve room (``EvictionManager.make_room``) and commit the
  reservation, write the file (temp file, fsync, rename, fsync dir), then
  commit its index entry. Victims are deleted under the index's writer lock,
  each offered first to the tier ``below`` (demotion) when there is one.
- Several processes: LMDB serialises writers; a generation counter tells each
  process when to resync its in-memory mirror of the index; reservations name
  their writer, and room held by one that died is reclaimed.
- Opening alone (the exclusive lock): reconcile files and index — drop temp
  files, adopt complete files a crash left unindexed, quarantine the rest.

>>> import tempfile
>>> from kvstore.fileformat import Header
>>> from kvstore.keys import Namespace
>>> tier = DiskTier(tempfile.mkdtemp() + "/s", capacity_bytes=8 << 20, namespace="demo", block_tokens=4)
>>> head = Header(namespace_hash=Namespace("demo").digest8, key="ab" * 20, tokens=4, payload_len=5, checksum=0)
>>> tier.write(head, b"hello", now=0.0), "ab" * 20 in tier
(True, True)
>>> tier.read("ab" * 20)[1]
b'hello'
>>> tier.close()
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import lmdb

from policies.base import Policy
from policies.registry import resolve

from ..diskfiles import DiskFiles, stored_size_bound
from ..directory import SETTINGS_FILE, StoreDirectory, check_capacity
from ..errors import (CapacityError, ConfigMismatchError, CorruptFileError, IndexFullError, KVStoreError,
                      StoreUnavailableError)
from ..eviction import Entry, EvictionManager
from ..fileformat import Header, payload_descriptor
from ..index import Index
from ..keys import Namespace, PrefixKeys
from ..liveness import boot_id, owner, writer_alive
from ..records import entry_from_header
from .base import Tier

__all__ = ["DiskTier"]

log = logging.getLogger(__name__)

_LOCK_FILES_ALLOWANCE = 64 << 10  # lock.mdb, store.lock and settings.json
_QUARANTINE_RID = "quarantine"
_MAP_FULL_RETRIES = 64


class DiskTier:
    """A store directory as a tier: files, index, eviction manager and policy.

    :param path: the store directory (created if missing).
    :param capacity_bytes: budget of everything written here, index slice
        included; ``None`` reuses the stored value.
    :param namespace, block_tokens, layout, index_bytes: fixed at creation
        (``None``: as created; required for a new store: ``namespace``,
        ``capacity_bytes``).
    :param policy: a policy name or instance (this tier's own).
    :param pin_quota_bytes: most bytes pins may hold (default: half the payload budget).
    :param readonly: inspect only.
    :param clock: seconds, checked; the time given to the policy.
    :param compression_level: store payloads as zstd frames at this level (a cold tier).
    :param trust_path: accept a directory another user could write to.
    :param name: its name in the stack (``"disk"``, ``"cold"``).
    """

    caches = False

    def __init__(self, path: str, capacity_bytes: int | None = None, *, namespace: str | None = None,
                 block_tokens: int | None = None, layout: str | None = None, index_bytes: int | None = None,
                 policy: str | Policy = "prefix-chain", pin_quota_bytes: int | None = None,
                 readonly: bool = False, clock: Callable[[], float] = time.time,
                 compression_level: int | None = None, trust_path: bool = False, name: str = "disk") -> None:
        self.name = name
        self.below: Tier | None = None
        self.path = os.path.abspath(os.fspath(path))
        self.readonly = bool(readonly)
        self.compression_level = compression_level
        self._clock = clock
        self._policy = resolve(policy)
        self._lock = threading.RLock()  # the index, the manager, the files
        self._pending_hits: dict[str, tuple[int, float]] = {}
        self._pending_counters: dict[str, int] = {}
        self._generation: int | None = None
        self._closed = True
        self._directory = StoreDirectory(self.path, readonly=self.readonly, trust_path=trust_path)
        try:
            exclusive = self._directory.exclusive
            settings = self._directory.settings(
                capacity_bytes=capacity_bytes, block_tokens=block_tokens, namespace=namespace,
                layout=layout, index_bytes=index_bytes)
            self.namespace = Namespace(settings["namespace"])
            self.block_tokens: int = settings["block_tokens"]
            self.layout: str = settings["layout"]
            self.index_bytes: int = settings["index_bytes"]
            self._settings = settings
            self._files = DiskFiles(self.path, create=not self.readonly)
            self._index = self._open_index()
        except BaseException:
            if getattr(self, "_files", None) is not None:
                self._files.close()
            self._directory.close()
            raise
        self._closed = False
        try:
            self._bind_settings(settings)
            with self._index.read() as txn:
                stored_capacity = self._index.capacity(txn)
            if stored_capacity is None:  # a new or rebuilt index
                stored_capacity = settings.get("capacity_bytes")
            capacity = self._settle_capacity(exclusive, capacity_bytes, stored_capacity)
            self.capacity_bytes = capacity
            self._manager = EvictionManager(
                capacity - self.index_bytes, self._policy, layout=self.layout,
                block_tokens=self.block_tokens,
                pin_quota_bytes=pin_quota_bytes if pin_quota_bytes is not None
                else (capacity - self.index_bytes) // 2,
            )
            if exclusive and not self.readonly:
                self._reconcile()
            self._sync(force=True)
        except BaseException:
            self.close()
            raise

    def finish_opening(self) -> None:
        """Evict down to the capacity (after a reopen with a smaller one; victims
        go to ``below``, so call this once the stack is linked), then let other
        processes open the store too."""
        try:
            if self._directory.exclusive and not self.readonly:
                self._enforce_capacity()
        except BaseException:
            self.close()
            raise
        self._directory.share_lock()

    def _now(self) -> float:
        return self._clock()

    def _open_index(self) -> Index:
        map_size = self.index_bytes - _LOCK_FILES_ALLOWANCE
        try:
            return Index(self.path, map_size=map_size, readonly=self.readonly)
        except lmdb.Error as exc:
            raise StoreUnavailableError(
                f"cannot open the index of {self.path}: {exc}; "
                f"`kvstore verify {self.path} --repair` rebuilds it from the payload files") from None

    # ================================================================ the tier
    def __contains__(self, key: object) -> bool:
        return key in self._manager

    def __len__(self) -> int:
        return len(self._manager)

    @property
    def manager(self) -> EvictionManager:
        """The eviction manager (its entries mirror the index)."""
        return self._manager

    def longest_match(self, prefix: PrefixKeys) -> tuple[int, str] | None:
        return self._manager.longest_match(prefix)

    def tails_at(self, anchor: str) -> dict[str, int]:
        return self._manager.tails_at(anchor)

    def refresh(self) -> None:
        """Mirror what other processes changed in the index. O(1) when nothing changed."""
        with self._lock:
            self._sync()

    def read(self, key: str) -> tuple[Header, Any] | None:
        """``(header, payload)`` of ``key``, verified; ``None`` when it is gone or bad
        (a bad file is quarantined and its entry dropped). O(payload bytes)."""
        return self._read_file(key)

    def write(self, header: Header, payload: Any, *, now: float | None = None,
              session: str | None = None) -> bool:
        """Store ``payload`` under ``header``: ``True`` when written, ``False`` when
        already stored or declined (the policy, or in ``chained`` a block that
        would fit only by evicting its own ancestors). Raises
        :class:`CapacityError` when it can never fit and the ``OSError`` of a
        failed write (nothing is left behind).
        Runtime complexity: O(payload bytes + victims * log n)."""
        if header.compressed:  # a compressed file moving between tiers: store what it holds
            header = replace(header, payload_len=header.data_len, raw_len=None, checksum=0)
        view, _, _ = payload_descriptor(payload)
        written = self._store_file(header, view, durable=True)
        if session is not None:
            self.note_session(header.key, session)
        return written

    def remove(self, key: str) -> None:
        """Delete ``key``'s entry and file (it moved to another tier)."""
        self._remove(key)

    def record_hit(self, key: str, now: float, session: str | None = None) -> None:
        with self._lock:
            if key in self._manager:
                self._manager.record_hit(key, now, session=session)
                hits, _ = self._pending_hits.get(key, (0, now))
                self._pending_hits[key] = (hits + 1, now)

    def count_lookup(self, hit: bool) -> None:
        with self._lock:
            self._count("disk_hits" if hit else "disk_misses")

    def count(self, name: str, delta: int = 1) -> None:
        """Add to a persisted counter (flushed with the next write)."""
        with self._lock:
            self._count(name, delta)

    def counters(self) -> dict[str, int]:
        """Persisted counters, plus this process's not yet flushed."""
        with self._lock, self._index.read() as txn:
            counters = self._index.counters(txn)
        for name, delta in self._pending_counters.items():
            counters[name] = counters.get(name, 0) + delta
        return counters

    def note_session(self, key: str, session: str) -> None:
        """Record that ``session`` wrote or used ``key`` (a hint; in this process)."""
        with self._lock:
            if key in self._manager:
                self._manager.note_session(key, session)

    def end_session(self, session: str, now: float) -> int:
        with self._lock:
            self._sync()
            return self._manager.end_session(session, now)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._sync()
            counters = self.counters()
            manager = self._manager
            stats = {
                "path": self.path,
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
                "puts": counters.get("puts", 0),
                "declined": counters.get("declined", 0),
                "compression_ratio": _ratio(counters),
            }
            if self.layout == "chained":
                stats["snapshot_equivalent_bytes"] = self._snapshot_equivalent_bytes()
            return stats

    def flush(self) -> None:
        """Persist pending hit statistics (writes are durable when they return)."""
        if self.readonly or not (self._pending_hits or self._pending_counters):
            return
        with self._lock, self._write():
            pass

    def close(self) -> None:
        """Persist statistics, release the index, the files and the lock. Idempotent."""
        if self._closed and self._directory.closed:
            return
        try:
            if not self._closed and not self.readonly and (self._pending_hits or self._pending_counters):
                try:
                    with self._lock, self._write():
                        pass
                except (lmdb.Error, KVStoreError, OSError) as exc:
                    log.warning("could not persist statistics on close: %s", exc)
        finally:
            self._closed = True
            index = getattr(self, "_index", None)
            if index is not None:
                index.close()
            files = getattr(self, "_files", None)
            if files is not None:
                files.close()
            self._directory.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._manager)} entries"
        return f"<DiskTier {self.name} {self.path!r} {state}>"

    def check_fits(self, header: Header) -> None:
        """Raise :class:`CapacityError` when ``header``'s file could never fit this tier."""
        self._check_fits(header)

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
        check_capacity(given, self.index_bytes)
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
                self._directory.write_settings(self._settings)
        return given

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
        self._index.put_entry(txn, entry_from_header(header, name))

    def _enforce_capacity(self) -> None:
        """Evict down to the capacity (after a reopen with a smaller one)."""
        if self._manager.free_bytes >= 0:
            return
        with self._write() as txn:
            self._evict_into(txn, 0)

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
            if record is None or manager.get(key).file != record.file:
                manager.remove(key)
        fresh = sorted((r for k, r in records.items() if k not in manager), key=lambda r: r.inserted_at)
        for record in fresh:
            manager.insert(record, record.inserted_at, reserved=0)
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

    def _read_file(self, key: str) -> tuple[Header, Any] | None:
        """``(header, payload)`` of ``key`` in this store's directory, verified, or ``None``."""
        with self._lock:
            entry = self._manager.get(key)
            if entry is None:
                self._sync()
                entry = self._manager.get(key)
                if entry is None:
                    return None
            name = entry.file
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

    def _remove(self, key: str) -> None:
        """Delete ``key``'s entry and file (it moved to another tier)."""
        with self._lock, self._write() as txn:
            record = self._index.delete_entry(txn, key)
            if record is None:
                return
            if key in self._manager:
                self._manager.remove(key)
            self._files.delete(record.file)

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

    def _check_fits(self, header: Header) -> None:
        """Raise :class:`CapacityError` when ``header``'s file could never fit this store."""
        size = stored_size_bound(header, compressed=self.compression_level is not None)
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
        compressed = self.compression_level is not None
        size = stored_size_bound(header, compressed=compressed)
        candidate = entry_from_header(header, "")
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
                self._index.put_reservation(txn, rid, size, **owner(os.getpid()))
                return True

        with self._lock:
            if not self._retrying_map_full(reserve):
                return False
        try:
            name, written = self._files.write(header, view, durable=durable, tag=rid,
                                              compression_level=self.compression_level)
        except BaseException:
            self._cancel_reservation(rid, size)
            raise
        assert written <= size, (written, size)
        record = entry_from_header(header, name)
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
                self._manager.insert(record, now, reserved=size)
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
        boot = boot_id()
        freed = 0
        for rid, reservation in self._index.reservations(txn).items():
            if rid == _QUARANTINE_RID or writer_alive(reservation, boot):
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

    def _evict_into(self, txn: lmdb.Transaction, nbytes: int) -> list[Entry]:
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

    def _retire_victims(self, txn: lmdb.Transaction, evicted: list[Entry]) -> list[Entry]:
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

    def _retire_files(self, records: list[Entry]) -> None:
        """Delete evicted checkpoints' files, demoting each to the cold tier first."""
        for record in records:
            if self.below is not None:
                self._demote(record)
            self._files.delete(record.file)

    def _demote(self, record: Entry) -> None:
        """Offer an evicted checkpoint to the tier below (before its file is deleted)."""
        try:
            header, payload = self._files.read(record.file, key=record.key,
                                               namespace_hash=self.namespace.digest8)
            if self.below.write(header, payload, now=self._now()):
                self._count("demotions")
        except (OSError, KVStoreError) as exc:
            log.warning("could not demote %s to the %s tier: %s", record.key, self.below.name, exc)

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

    def verify(self, *, repair: bool = False) -> dict[str, list[str]]:
        """Check every indexed file in full (header, length, checksum).

        Returns ``{"ok": [...], "bad": [...], "missing": [...]}`` of keys. With
        ``repair=True`` bad files are quarantined and dropped, missing ones
        dropped. Runtime complexity: O(total bytes stored).
        """
        if repair and self.readonly:
            raise KVStoreError("repair needs a writable store (readonly=False)")
        report: dict[str, list[str]] = {"ok": [], "bad": [], "missing": []}
        with self._lock:
            self._sync()
            entries = [(k, self._manager.get(k).file) for k in self._manager]
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

    def checkpoints(self) -> list[Entry]:
        """Every stored checkpoint, shortest first, with its persisted hits and last
        use (this process's not yet flushed ones added) and its pin. O(n log n)."""
        with self._lock:
            self._sync()
            with self._index.read() as txn:
                records = list(self._index.entries(txn))
                pins = self._index.pins(txn)
            for record in records:
                hits, last = self._pending_hits.get(record.key, (0, record.last_use))
                record.hits += hits
                record.last_use = max(record.last_use, last)
                record.pinned = record.key in pins
            return sorted(records, key=lambda r: (r.tokens, r.key))

    def evict_to(self, target_bytes: int) -> int:
        """Evict what the policy names until the checkpoints take at most
        ``target_bytes`` (pinned ones stay); return how many went."""
        with self._lock, self._write() as txn:
            manager, victims = self._manager, []
            while manager.used_bytes > target_bytes:
                chosen = manager.evict_some(1, self._now())
                if not chosen:
                    break
                victims += chosen
            self._retire_victims(txn, victims)
            return len(victims)

    def pin(self, prefix: PrefixKeys) -> tuple[int, str]:
        """Keep the longest stored prefix of ``prefix`` out of eviction; return
        ``(tokens, key)``. A full index evicts unpinned checkpoints for room,
        like a write. Raises ``ValueError`` when no prefix is stored and
        :class:`~kvstore.errors.PinQuotaError` past the quota."""
        def pin_in_index() -> tuple[int, str]:
            with self._write() as txn:
                found = self._manager.longest_match(prefix)
                if found is None:
                    raise ValueError("no prefix of tokens is stored; put it before pinning it")
                self._manager.pin(found[1])
                self._index.set_pin(txn, found[1], True)
                return found

        with self._lock:
            return self._retrying_map_full(pin_in_index)

    def unpin(self, prefix: PrefixKeys) -> None:
        """Release every pin on a stored prefix of ``prefix``."""
        with self._lock, self._write() as txn:
            for n in [*prefix.aligned_lengths, len(prefix)]:
                key = prefix.key(n)
                if self._manager.get(key) is not None and self._manager.get(key).pinned:
                    self._manager.unpin(key)
                    self._index.set_pin(txn, key, False)


def _ratio(counters: dict[str, int]) -> float:
    """Uncompressed over stored bytes of everything written compressed (1.0 if none)."""
    stored = counters.get("stored_bytes_in", 0)
    return round(counters.get("raw_bytes_in", 0) / stored, 3) if stored else 1.0

