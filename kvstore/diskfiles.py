"""Payload files on disk, written crash-safely and read back verified.

Write order: a fresh temp file (exclusive create, mode 0600) in ``tmp/``,
payload streamed with its CRC32 computed on the way, header written last,
``fsync``, ``rename`` into ``data/<2 hex>/``, ``fsync`` of that directory.
Only then does the caller commit the index entry. A crash before the rename
leaves a temp file (removed on the next open); after it, a complete, valid
file (adopted on the next open).

Reads never follow symlinks and never return bytes whose checksum, key or
namespace disagree with what was asked for.

>>> import tempfile
>>> files = DiskFiles(tempfile.mkdtemp())
>>> head = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=4, payload_len=0, checksum=0)
>>> name, size = files.write(head, memoryview(b"hello"))
>>> files.read(name, key="ab" * 20, namespace_hash=b"n" * 8)[1]
b'hello'
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
import zlib
from collections.abc import Iterator
from dataclasses import replace

import zstandard

from .errors import CorruptFileError, StoreUnavailableError
from .fileformat import Header, payload_view

__all__ = ["DiskFiles", "CHUNK_BYTES", "stored_size_bound"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
_THREADED_ZSTD_BYTES = 8 << 20  # multithreaded compression pays from a few chunks up


def stored_size_bound(header: Header, *, compressed: bool) -> int:
    """Most bytes the file of ``header`` (``payload_len`` uncompressed) can take.

    zstd never expands input by more than 1/128 plus a small constant.

    >>> h = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=4, payload_len=1000, checksum=0)
    >>> stored_size_bound(h, compressed=False) == h.file_size
    True
    """
    if not compressed:
        return header.file_size
    n = header.payload_len
    return replace(header, raw_len=n).header_len + n + (n >> 7) + 4096
_DATA, _TMP, _QUARANTINE = "data", "tmp", "quarantine"
_SUFFIX = ".kv"


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# errors that mean "this path is not a file we can read": a symlink (ELOOP with
# O_NOFOLLOW), a folder, no permission, a device that refuses to open
_UNREADABLE = (errno.ELOOP, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENOTDIR)


def _open_dir(name: str, dir_fd: int | None, *, create: bool, what: str) -> int:
    """Open the folder ``name`` (relative to ``dir_fd``) without following a symlink."""
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StoreUnavailableError(f"{what} is a symlink or not a folder; refusing to use it") from None
        raise


class DiskFiles:
    """The payload files of one store directory (no index, no accounting).

    Every operation goes through descriptors of the store's own folders,
    opened with ``O_NOFOLLOW``: a symlink planted anywhere inside the store,
    even while it is open, is never followed (a read through it is a miss, a
    write replaces it by a real folder). Only regular files are ever read:
    a FIFO, a device or a folder where a payload should be is refused
    without blocking.
    """

    def __init__(self, root: str, *, create: bool = True) -> None:
        """``create=False`` (a store opened read-only) makes no directories."""
        self.root = root
        self.data_dir = os.path.join(root, _DATA)
        self.tmp_dir = os.path.join(root, _TMP)
        self.quarantine_dir = os.path.join(root, _QUARANTINE)
        self._fds: list[int] = []
        try:
            self._root_fd = self._keep(_open_dir(root, None, create=False, what=root))
            self._data_fd, self._tmp_fd, self._quarantine_fd = (
                self._keep(_open_dir(name, self._root_fd, create=create, what=os.path.join(root, name)))
                for name in (_DATA, _TMP, _QUARANTINE))
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        """Close the folder descriptors (idempotent)."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- names
    @staticmethod
    def name_for(key: str) -> str:
        """A fresh file name for ``key``: never reused, so a reader holding an
        evicted file open can never see another payload under its name."""
        return f"{key}.{secrets.token_hex(4)}{_SUFFIX}"

    def path_of(self, name: str) -> str:
        """Where ``name`` lives (for messages and tests; I/O goes through descriptors)."""
        _check_name(name)
        return os.path.join(self.data_dir, name[:2], name)

    def _subdir(self, name: str, *, create: bool) -> int:
        """A descriptor of ``data/<2 hex>/`` for ``name`` (close it after use).

        Without ``create``, a missing or non-folder entry raises ``FileNotFoundError``
        (the file is as good as gone). With it, anything else in its place (a
        symlink, a file) is removed first and a real folder made.
        """
        _check_name(name)
        prefix = name[:2]
        try:
            return os.open(prefix, _DIR_FLAGS, dir_fd=self._data_fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not create:
                raise FileNotFoundError(errno.ENOENT, "not a folder of this store",
                                        os.path.join(self.data_dir, prefix)) from None
            log.warning("replacing %s (a symlink or file, not a folder) by a folder",
                        os.path.join(self.data_dir, prefix))
            os.unlink(prefix, dir_fd=self._data_fd)
        try:
            os.mkdir(prefix, 0o700, dir_fd=self._data_fd)
        except FileExistsError:
            pass
        return os.open(prefix, _DIR_FLAGS, dir_fd=self._data_fd)

    # ---------------------------------------------------------------- write
    def write(self, header: Header, payload: memoryview, *, durable: bool = True,
              compression_level: int | None = None, tag: str | None = None) -> tuple[str, int]:
        """Write one payload file; return ``(name, file size)``.

        ``header.checksum`` and ``payload_len`` are filled in here; ``tag``
        (unique, e.g. the reservation id) names the temp file. With a
        ``compression_level`` the payload is stored as one zstd frame
        (multithreaded for large payloads), checksummed before compression.
        On any error the temp file is removed and the error propagates.
        Runtime complexity: O(payload bytes), one pass.
        """
        raw_len = payload.nbytes if compression_level is not None else None
        header = replace(header, payload_len=payload.nbytes, checksum=0, raw_len=raw_len)
        head_len = header.header_len
        tmp_name = f"{tag if tag is not None else secrets.token_hex(8)}.tmp"
        tmp = os.path.join(self.tmp_dir, tmp_name)
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self._tmp_fd)
        try:
            try:
                os.lseek(fd, head_len, os.SEEK_SET)
                if compression_level is None:
                    crc, stored = _write_plain(fd, payload), payload.nbytes
                else:
                    crc, stored = _write_zstd(fd, payload, compression_level)
                header = replace(header, checksum=crc, payload_len=stored)
                final = header.encode()
                if os.pwrite(fd, final, 0) != len(final):
                    raise OSError(errno.EIO, "short header write", tmp)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            name = self.name_for(header.key)
            sub = self._subdir(name, create=True)
            try:
                if durable:
                    os.fsync(self._data_fd)
                os.rename(tmp_name, name, src_dir_fd=self._tmp_fd, dst_dir_fd=sub)
                if durable:
                    os.fsync(sub)
            finally:
                os.close(sub)
        except BaseException as exc:
            try:
                os.unlink(tmp_name, dir_fd=self._tmp_fd)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError) and exc.filename is None:  # os.write/fsync name no file
                raise OSError(exc.errno, f"{exc.strerror} while writing a checkpoint into {self.root}",
                              tmp) from exc
            raise
        return name, head_len + header.payload_len

    # ----------------------------------------------------------------- read
    def read_header(self, name: str) -> Header:
        """Parse the header of a stored file (payload not verified)."""
        fd = self._open(name)
        try:
            return _read_header(fd)
        finally:
            os.close(fd)

    def read(self, name: str, *, key: str, namespace_hash: bytes) -> tuple[Header, object]:
        """Read and verify a payload; return ``(header, payload)``.

        Raises ``FileNotFoundError`` if it vanished and :class:`CorruptFileError`
        if anything disagrees (key, namespace, length, checksum) or the path
        is no regular file this process can read.
        """
        fd = self._open(name)
        try:
            header = _read_header(fd)
            if header.key != key:
                raise CorruptFileError(f"{name}: header names key {header.key}, expected {key}")
            if header.namespace_hash != namespace_hash:
                raise CorruptFileError(f"{name}: header belongs to another namespace")
            size = os.fstat(fd).st_size
            if size != header.file_size:
                raise CorruptFileError(f"{name}: file is {size} bytes, header says {header.file_size}")
            if header.compressed:
                buffer, crc = _read_zstd(fd, header, name)
            else:
                buffer, crc = _read_plain(fd, header, name)
            if crc != header.checksum:
                raise CorruptFileError(f"{name}: payload checksum mismatch")
            return header, payload_view(buffer, header)
        finally:
            os.close(fd)

    def verify(self, name: str) -> Header:
        """Fully verify a file on its own (header, length, checksum)."""
        header = self.read_header(name)
        self.read(name, key=header.key, namespace_hash=header.namespace_hash)
        return header

    def stat(self, name: str) -> os.stat_result:
        """``lstat`` of a payload file (``FileNotFoundError`` if it is gone)."""
        sub = self._subdir(name, create=False)
        try:
            return os.stat(name, dir_fd=sub, follow_symlinks=False)
        finally:
            os.close(sub)

    def _open(self, name: str) -> int:
        sub = self._subdir(name, create=False)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sub)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in _UNREADABLE:
                raise CorruptFileError(f"{name}: cannot be read ({exc.strerror})") from None
            raise
        finally:
            os.close(sub)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise CorruptFileError(f"{name}: not a regular file")
        return fd

    # ------------------------------------------------------------- maintain
    def delete(self, name: str) -> None:
        """Remove a payload file; a file already gone is not an error, and a
        folder found in its place is moved to ``quarantine/`` instead."""
        try:
            sub = self._subdir(name, create=False)
        except FileNotFoundError:
            return
        try:
            os.unlink(name, dir_fd=sub)
        except FileNotFoundError:
            pass
        except (IsADirectoryError, PermissionError):
            log.warning("%s is a folder, not a payload file; moving it to quarantine", name)
            os.rename(name, name, src_dir_fd=sub, dst_dir_fd=self._quarantine_fd)
        finally:
            os.close(sub)

    def quarantine(self, name: str) -> None:
        """Move a bad file aside for inspection (``quarantine/``)."""
        try:
            sub = self._subdir(name, create=False)
        except FileNotFoundError:
            return
        try:
            os.replace(name, name, src_dir_fd=sub, dst_dir_fd=self._quarantine_fd)
            log.warning("quarantined %s", name)
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. a folder onto an existing name: keep it out of the data
            if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            os.rename(name, f"{name}.{secrets.token_hex(4)}", src_dir_fd=sub, dst_dir_fd=self._quarantine_fd)
        finally:
            os.close(sub)

    def names(self) -> Iterator[str]:
        """Names of every file under ``data/`` (valid names only)."""
        for sub_name in sorted(os.listdir(self._data_fd)):
            try:
                sub = os.open(sub_name, _DIR_FLAGS, dir_fd=self._data_fd)
            except OSError:
                continue
            try:
                names = sorted(os.listdir(sub))
            finally:
                os.close(sub)
            yield from names

    def stray_paths(self) -> Iterator[str]:
        """Paths under ``data/`` that are not well-formed payload files."""
        for entry in sorted(os.listdir(self._data_fd)):
            path = os.path.join(self.data_dir, entry)
            try:
                sub = os.open(entry, _DIR_FLAGS, dir_fd=self._data_fd)
            except OSError:
                yield path
                continue
            try:
                for name in sorted(os.listdir(sub)):
                    if not _valid_name(name) or name[:2] != entry \
                            or stat.S_ISLNK(os.stat(name, dir_fd=sub, follow_symlinks=False).st_mode):
                        yield os.path.join(path, name)
            finally:
                os.close(sub)

    def remove_stray(self, path: str) -> None:
        """Remove a stray path reported by :meth:`stray_paths` (files and links only)."""
        parent, name = os.path.split(path)
        if parent == self.data_dir:
            dir_fd, close = self._data_fd, False
        else:
            dir_fd, close = os.open(os.path.basename(parent), _DIR_FLAGS, dir_fd=self._data_fd), True
        try:
            if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        finally:
            if close:
                os.close(dir_fd)

    def remove_temp(self, tag: str) -> None:
        """Delete the temp file of an interrupted write tagged ``tag``, if any."""
        if "/" in tag or tag.startswith("."):
            raise ValueError(f"invalid temp file tag {tag!r}")
        try:
            os.unlink(f"{tag}.tmp", dir_fd=self._tmp_fd)
        except FileNotFoundError:
            pass

    def remove_temp_files(self) -> int:
        """Delete what interrupted writes left in ``tmp/``; return how many."""
        removed = 0
        for name in sorted(os.listdir(self._tmp_fd)):
            try:
                if not stat.S_ISDIR(os.stat(name, dir_fd=self._tmp_fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=self._tmp_fd)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def quarantined_bytes(self) -> int:
        """Bytes held in ``quarantine/`` (files and quarantined index folders)."""
        total = 0
        for folder, dirs, names, _fd in os.fwalk(dir_fd=self._quarantine_fd):
            for name in names:
                try:
                    total += os.stat(name, dir_fd=_fd, follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
        return total

    def purge_quarantine(self) -> int:
        """Delete everything quarantined; return the bytes freed."""
        freed = self.quarantined_bytes()
        for name in os.listdir(self._quarantine_fd):
            try:
                mode = os.stat(name, dir_fd=self._quarantine_fd, follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    shutil.rmtree(name, dir_fd=self._quarantine_fd)
                else:
                    os.unlink(name, dir_fd=self._quarantine_fd)
            except FileNotFoundError:
                pass
        return freed


def _check_name(name: str) -> None:
    if not _valid_name(name):
        raise CorruptFileError(f"invalid payload file name {name!r}")


def _valid_name(name: str) -> bool:
    stem, dot, rest = name.partition(".")
    return (
        len(stem) == 40 and all(c in "0123456789abcdef" for c in stem)
        and dot == "." and rest.endswith(_SUFFIX) and len(rest) == 8 + len(_SUFFIX)
        and all(c in "0123456789abcdef" for c in rest[:8])
    )


def _write_plain(fd: int, payload: memoryview) -> int:
    crc = 0
    for start in range(0, payload.nbytes, CHUNK_BYTES):
        chunk = payload[start : start + CHUNK_BYTES]
        crc = zlib.crc32(chunk, crc)
        _write_all(fd, chunk)
    return crc


def _write_zstd(fd: int, payload: memoryview, level: int) -> tuple[int, int]:
    threads = -1 if payload.nbytes >= _THREADED_ZSTD_BYTES else 0
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    stream = compressor.compressobj(size=payload.nbytes)
    crc = stored = 0
    for start in range(0, payload.nbytes, CHUNK_BYTES):
        chunk = payload[start : start + CHUNK_BYTES]
        crc = zlib.crc32(chunk, crc)
        out = stream.compress(chunk)
        _write_all(fd, memoryview(out))
        stored += len(out)
    out = stream.flush()
    _write_all(fd, memoryview(out))
    return crc, stored + len(out)


def _read_plain(fd: int, header: Header, name: str) -> tuple[bytearray, int]:
    buffer = bytearray(header.payload_len)
    view = memoryview(buffer)
    crc = 0
    for start in range(0, header.payload_len, CHUNK_BYTES):
        chunk = view[start : start + CHUNK_BYTES]
        if os.preadv(fd, [chunk], header.header_len + start) != len(chunk):
            raise CorruptFileError(f"{name}: truncated payload")
        crc = zlib.crc32(chunk, crc)
    return buffer, crc


def _read_zstd(fd: int, header: Header, name: str) -> tuple[bytearray, int]:
    buffer = bytearray(header.data_len)
    stream = zstandard.ZstdDecompressor().decompressobj()
    filled = 0
    try:
        for start in range(0, header.payload_len, CHUNK_BYTES):
            size = min(CHUNK_BYTES, header.payload_len - start)
            chunk = os.pread(fd, size, header.header_len + start)
            if len(chunk) != size:
                raise CorruptFileError(f"{name}: truncated payload")
            out = stream.decompress(chunk)
            if filled + len(out) > len(buffer):
                raise CorruptFileError(f"{name}: payload decompresses past its length")
            buffer[filled : filled + len(out)] = out
            filled += len(out)
    except zstandard.ZstdError as exc:
        raise CorruptFileError(f"{name}: compressed payload is damaged ({exc})") from None
    if filled != len(buffer) or not stream.eof:
        raise CorruptFileError(f"{name}: compressed payload is truncated")
    return buffer, zlib.crc32(buffer)


def _write_all(fd: int, chunk: memoryview) -> None:
    while chunk.nbytes:
        written = os.write(fd, chunk)
        chunk = chunk[written:]


def _read_header(fd: int) -> Header:
    fixed = os.pread(fd, Header.fixed_size() + 4, 0)
    if len(fixed) < Header.fixed_size():
        raise CorruptFileError("file shorter than a header")
    # header_len sits right after the magic (8 bytes) and version (2 bytes)
    header_len = int.from_bytes(fixed[10:14], "little")
    if header_len > (1 << 20):
        raise CorruptFileError(f"implausible header length {header_len}")
    return Header.decode(os.pread(fd, header_len, 0))
