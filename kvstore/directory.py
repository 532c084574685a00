"""A store directory: where it is, who may use it, its lock and its settings.

Opening one refuses what another local user could have prepared (a symlinked
path or component, a directory owned by someone else or writable by others),
takes the store lock (shared by every process that has it open; whoever gets
it exclusively is alone and may reconcile), and reads or creates
``settings.json``, validating every field a decision depends on.

>>> import tempfile
>>> d = StoreDirectory(tempfile.mkdtemp() + "/s", readonly=False, trust_path=False)
>>> d.settings(namespace="demo", capacity_bytes=8 << 20, block_tokens=16, layout=None,
...            index_bytes=None)["index_bytes"]
1048576
>>> d.close()
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
from typing import Any

from .accounting import MIN_INDEX_BYTES, MIN_PAYLOAD_BYTES, index_slice
from .errors import ConfigMismatchError, StoreUnavailableError
from .eviction import LAYOUTS
from .keys import Namespace

__all__ = ["StoreDirectory", "SETTINGS_FILE", "LOCK_FILE", "check_capacity"]

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
LOCK_FILE = "store.lock"
SETTINGS_VERSION = 1
_COMPONENTS = (LOCK_FILE, SETTINGS_FILE, "index", "data", "tmp", "quarantine")


class StoreDirectory:
    """One store directory, opened: checked, locked, its settings at hand.

    :param path: the directory; created (one level, mode 0700) if missing.
    :param readonly: open for inspection: no creation, no ownership check.
    :param trust_path: accept a symlinked path, another owner, or group/other write bits.

    Raises :class:`StoreUnavailableError` naming the path when it cannot be used.
    """

    def __init__(self, path: str, *, readonly: bool, trust_path: bool) -> None:
        self.path = path
        self.readonly = readonly
        self.trust_path = trust_path
        self._lock_fd = -1
        self._check_and_create()
        self.exclusive = self._acquire_lock()

    # ------------------------------------------------------------- checks
    def _check_and_create(self) -> None:
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
        if stat.S_ISLNK(st.st_mode):
            if not self.trust_path:
                raise StoreUnavailableError(
                    f"store path {path} is a symlink; refusing to follow it (pass trust_path=True "
                    f"if it is yours)")
            st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreUnavailableError(f"store path {path} exists and is not a directory")
        if not self.trust_path and not self.readonly:
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
        for name in _COMPONENTS:
            component = os.path.join(path, name)
            try:
                if stat.S_ISLNK(os.lstat(component).st_mode):
                    raise StoreUnavailableError(f"{component} is a symlink; refusing to follow it")
            except FileNotFoundError:
                pass

    # --------------------------------------------------------------- lock
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

    def share_lock(self) -> None:
        """Done reconciling: let other processes open the store too."""
        if self.exclusive:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = -1

    @property
    def closed(self) -> bool:
        return self._lock_fd < 0

    # ----------------------------------------------------------- settings
    def settings(self, **given: Any) -> dict[str, Any]:
        """The store's settings: read and checked against ``given`` (``None``
        means "whatever it is"), or created from ``given`` for a new store.

        Raises :class:`ConfigMismatchError` naming the field that disagrees or
        is invalid, ``ValueError`` when a new store lacks ``namespace`` or
        ``capacity_bytes``.
        """
        path = os.path.join(self.path, SETTINGS_FILE)
        try:
            with open(path, "rb") as fh:
                settings = json.loads(fh.read())
        except FileNotFoundError:
            settings = None
        except (OSError, ValueError) as exc:
            raise StoreUnavailableError(f"cannot read {path}: {exc}") from None
        if settings is None:
            if self.readonly or not self.exclusive:
                raise StoreUnavailableError(f"{self.path} is not an initialised kvstore directory")
            if given["namespace"] is None:
                raise ValueError("namespace is required to create a store")
            if given["capacity_bytes"] is None:
                raise ValueError("capacity_bytes is required to create a store")
            index_bytes = given["index_bytes"] or index_slice(given["capacity_bytes"])
            check_capacity(given["capacity_bytes"], index_bytes)
            settings = {
                "format": SETTINGS_VERSION,
                "namespace": given["namespace"],
                "block_tokens": given["block_tokens"] or 4096,
                "layout": given["layout"] or "snapshot",
                "index_bytes": index_bytes,
                "capacity_bytes": given["capacity_bytes"],
            }
            self.write_settings(settings)
            log.info("created store %s (%s)", self.path, settings)
            return settings
        if not isinstance(settings, dict) or settings.get("format") != SETTINGS_VERSION:
            found = settings.get("format") if isinstance(settings, dict) else settings
            raise ConfigMismatchError(f"{path}: unsupported settings format {found!r}")
        _check_settings(settings, path)
        for name in ("namespace", "block_tokens", "layout", "index_bytes"):
            if given.get(name) is not None and given[name] != settings[name]:
                raise ConfigMismatchError(
                    f"store {self.path} was created with {name}={settings[name]!r}, "
                    f"not {given[name]!r}; open it with the same {name} or use another directory")
        return settings

    def write_settings(self, settings: dict[str, Any]) -> None:
        """Replace ``settings.json`` atomically (temp file, fsync, rename, fsync dir)."""
        path = os.path.join(self.path, SETTINGS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", opener=_private_opener) as fh:
            json.dump(settings, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_capacity(capacity: int, index_bytes: int) -> None:
    """Raise ``ValueError`` when ``capacity`` leaves less than 64 KiB beside the index."""
    if capacity - index_bytes < MIN_PAYLOAD_BYTES:
        raise ValueError(
            f"capacity_bytes={capacity} is too small: the index takes index_bytes={index_bytes}; "
            f"use at least {index_bytes + MIN_PAYLOAD_BYTES}")


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
    if not is_int(index_bytes) or not MIN_INDEX_BYTES <= index_bytes <= 1 << 40:
        raise bad("index_bytes", f"an int from {MIN_INDEX_BYTES} to 2**40")
    capacity = settings.get("capacity_bytes")
    if capacity is not None and (not is_int(capacity) or capacity <= index_bytes):
        raise bad("capacity_bytes", "an int larger than index_bytes")


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)
