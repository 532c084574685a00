"""The LMDB index of a store: entries, parent -> children, pins, reservations.

Every record is JSON (never pickle). One environment per store directory,
shared by all :class:`Index` objects of a process, because LMDB forbids
opening the same environment twice in one process (its locks would break).
Between processes LMDB's own locks serialise writers; a ``generation``
counter, bumped by every write, tells a process when another one changed
the index so that it can re-synchronise its in-memory mirror.

>>> import tempfile
>>> idx = Index(tempfile.mkdtemp(), map_size=1 << 20)
>>> with idx.write() as txn:
...     idx.put_entry(txn, Entry(key="ab" * 20, file="f", tokens=4, size=10))
>>> with idx.read() as txn:
...     [r.tokens for r in idx.entries(txn)]
[4]
>>> idx.close()
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import lmdb

from .errors import IndexFullError, StoreUnavailableError
from .records import Entry

__all__ = ["Index"]

_COW_ALLOWANCE_PAGES = 128
_DBS = ("meta", "entries", "children", "pins", "reservations")

# LMDB: "do not open the same environment twice in one process", and do not
# use one a parent opened in a forked child. This registry, keyed by process
# and real path, is the one piece of module state the store keeps, and only
# to honour those rules: a child after fork() finds no entry of its own and
# opens the environment afresh.
_ENVS: dict[tuple[int, str], tuple[lmdb.Environment, int]] = {}
_ENVS_LOCK = threading.Lock()


class Index:
    """Typed access to the store's LMDB environment."""

    def __init__(self, root: str, *, map_size: int, readonly: bool = False) -> None:
        self.path = os.path.realpath(os.path.join(root, "index"))
        self.readonly = readonly
        self._slot = (os.getpid(), self.path)
        with _ENVS_LOCK:
            for inherited in [k for k in _ENVS if k[0] != self._slot[0]]:
                # inherited through fork(): close this process's copy of the mapping
                # (the parent's environment, locks and reader slots are its own)
                _ENVS.pop(inherited)[0].close()
            env, count = _ENVS.get(self._slot, (None, 0))
            if env is None:
                os.makedirs(self.path, mode=0o700, exist_ok=True)
                env = lmdb.open(
                    self.path, map_size=map_size, max_dbs=len(_DBS), subdir=True,
                    readonly=readonly, create=not readonly, mode=0o600, max_readers=126,
                    lock=True, sync=True, metasync=True, meminit=False,
                )
            _ENVS[self._slot] = (env, count + 1)
        self.env = env
        self._dbs = {}
        for name in _DBS:
            self._dbs[name] = env.open_db(name.encode(), dupsort=(name == "children"),
                                          create=not readonly)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._slot[0] != os.getpid():
            return  # opened by the parent before fork(): the parent closes it
        with _ENVS_LOCK:
            env, count = _ENVS[self._slot]
            if count <= 1:
                del _ENVS[self._slot]
                env.close()
            else:
                _ENVS[self._slot] = (env, count - 1)

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self._mapped_errors(), self.env.begin(write=False, buffers=False) as txn:
            yield txn

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction; it commits when the block exits normally.

        LMDB's errors never escape raw: a full map raises :class:`IndexFullError`,
        anything else an ``OSError`` (a :class:`StoreUnavailableError`) with
        its errno that names the index.
        """
        with self._mapped_errors(), self.env.begin(write=True) as txn:
            yield txn

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        if self._slot[0] != os.getpid():
            raise StoreUnavailableError(f"the index {self.path} was opened before fork(), in process "
                                        f"{self._slot[0]}; open the store again in this process")
        try:
            yield
        except lmdb.MapFullError:
            raise IndexFullError(f"the index {self.path} is full (its map holds "
                                 f"{self.env.info()['map_size']} bytes)") from None
        except lmdb.Error as exc:
            text = str(exc)
            code = next((e for e in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOMEM)
                         if os.strerror(e) in text), errno.EIO)
            raise StoreUnavailableError(code, f"{os.strerror(code)}: the index failed ({text})",
                                        self.path) from None

    def bump_generation(self, txn: lmdb.Transaction) -> int:
        """Mark the index as changed; return the new generation."""
        generation = self.generation(txn) + 1
        self._put_meta(txn, "generation", generation)
        return generation

    # ----------------------------------------------------------------- meta
    def _get_meta(self, txn: lmdb.Transaction, name: str, default=None):
        raw = txn.get(name.encode(), db=self._dbs["meta"])
        return default if raw is None else json.loads(raw)

    def _put_meta(self, txn: lmdb.Transaction, name: str, value) -> None:
        txn.put(name.encode(), json.dumps(value).encode(), db=self._dbs["meta"])

    def generation(self, txn: lmdb.Transaction) -> int:
        return self._get_meta(txn, "generation", 0)

    def capacity(self, txn: lmdb.Transaction) -> int | None:
        return self._get_meta(txn, "capacity_bytes")

    def set_capacity(self, txn: lmdb.Transaction, capacity: int) -> None:
        self._put_meta(txn, "capacity_bytes", capacity)

    def settings(self, txn: lmdb.Transaction) -> dict | None:
        """The settings the store's data was written with (``None`` if not recorded)."""
        return self._get_meta(txn, "settings")

    def set_settings(self, txn: lmdb.Transaction, settings: dict) -> None:
        self._put_meta(txn, "settings", settings)

    def counters(self, txn: lmdb.Transaction) -> dict[str, int]:
        return self._get_meta(txn, "counters", {})

    def add_counters(self, txn: lmdb.Transaction, deltas: dict[str, int]) -> None:
        counters = self.counters(txn)
        for name, delta in deltas.items():
            counters[name] = counters.get(name, 0) + delta
        self._put_meta(txn, "counters", counters)

    # -------------------------------------------------------------- entries
    def get_entry(self, txn: lmdb.Transaction, key: str) -> Entry | None:
        raw = txn.get(key.encode(), db=self._dbs["entries"])
        return None if raw is None else Entry.decode(raw)

    def put_entry(self, txn: lmdb.Transaction, record: Entry) -> None:
        txn.put(record.key.encode(), record.encode(), db=self._dbs["entries"])
        if record.parent is not None:
            txn.put(record.parent.encode(), record.key.encode(), db=self._dbs["children"], dupdata=True)

    def delete_entry(self, txn: lmdb.Transaction, key: str) -> Entry | None:
        record = self.get_entry(txn, key)
        if record is None:
            return None
        txn.delete(key.encode(), db=self._dbs["entries"])
        if record.parent is not None:
            txn.delete(record.parent.encode(), key.encode(), db=self._dbs["children"])
        txn.delete(key.encode(), db=self._dbs["pins"])
        return record

    def entries(self, txn: lmdb.Transaction) -> Iterator[Entry]:
        with txn.cursor(db=self._dbs["entries"]) as cursor:
            for _, raw in cursor:
                yield Entry.decode(raw)

    def children(self, txn: lmdb.Transaction, key: str) -> list[str]:
        with txn.cursor(db=self._dbs["children"]) as cursor:
            if not cursor.set_key(key.encode()):
                return []
            return [v.decode() for v in cursor.iternext_dup()]

    def entry_count(self, txn: lmdb.Transaction) -> int:
        return txn.stat(self._dbs["entries"])["entries"]

    def crowded(self, txn: lmdb.Transaction) -> bool:
        """True when the B-trees hold more than half of the map's pages that are
        left after a fixed allowance for copy-on-write and the free list
        (LMDB needs free pages even to delete, so it must never fill up)."""
        pages = 0
        for stat in [txn.stat()] + [txn.stat(db) for db in self._dbs.values()]:
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        map_pages = self.env.info()["map_size"] // self.env.stat()["psize"]
        return pages > (map_pages - _COW_ALLOWANCE_PAGES) // 2

    # ----------------------------------------------------------------- pins
    def pins(self, txn: lmdb.Transaction) -> set[str]:
        with txn.cursor(db=self._dbs["pins"]) as cursor:
            return {k.decode() for k, _ in cursor}

    def set_pin(self, txn: lmdb.Transaction, key: str, pinned: bool) -> None:
        if pinned:
            txn.put(key.encode(), b"", db=self._dbs["pins"])
        else:
            txn.delete(key.encode(), db=self._dbs["pins"])

    # --------------------------------------------------------- reservations
    def reservations(self, txn: lmdb.Transaction) -> dict[str, dict]:
        with txn.cursor(db=self._dbs["reservations"]) as cursor:
            return {k.decode(): json.loads(v) for k, v in cursor}

    def put_reservation(self, txn: lmdb.Transaction, rid: str, size: int, pid: int, *,
                        boot: str | None = None, start: int | None = None) -> None:
        """Reserve ``size`` bytes for a write by process ``pid`` (0: not a writer),
        identified also by its boot id and start time so it can be told dead."""
        record = {"size": size, "pid": pid}
        if boot is not None:
            record["boot"] = boot
        if start is not None:
            record["start"] = start
        txn.put(rid.encode(), json.dumps(record).encode(), db=self._dbs["reservations"])

    def delete_reservation(self, txn: lmdb.Transaction, rid: str) -> None:
        txn.delete(rid.encode(), db=self._dbs["reservations"])
