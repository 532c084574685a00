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
import zlib
from collections.abc import Iterator
from dataclasses import replace

import zstandard

from .errors import CorruptFileError
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


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskFiles:
    """The payload files of one store directory (no index, no accounting)."""

    def __init__(self, root: str, *, create: bool = True) -> None:
        """``create=False`` (a store opened read-only) makes no directories."""
        self.root = root
        self.data_dir = os.path.join(root, _DATA)
        self.tmp_dir = os.path.join(root, _TMP)
        self.quarantine_dir = os.path.join(root, _QUARANTINE)
        for path in (self.data_dir, self.tmp_dir, self.quarantine_dir) if create else ():
            os.makedirs(path, mode=0o700, exist_ok=True)
            if os.path.islink(path):
                raise CorruptFileError(f"{path} is a symlink; refusing to use it")

    # ---------------------------------------------------------------- names
    @staticmethod
    def name_for(key: str) -> str:
        """A fresh file name for ``key``: never reused, so a reader holding an
        evicted file open can never see another payload under its name."""
        return f"{key}.{secrets.token_hex(4)}{_SUFFIX}"

    def path_of(self, name: str) -> str:
        if not _valid_name(name):
            raise CorruptFileError(f"invalid payload file name {name!r}")
        return os.path.join(self.data_dir, name[:2], name)

    # ---------------------------------------------------------------- write
    def write(self, header: Header, payload: memoryview, *, durable: bool = True,
              compression_level: int | None = None) -> tuple[str, int]:
        """Write one payload file; return ``(name, file size)``.

        ``header.checksum`` and ``payload_len`` are filled in here. With a
        ``compression_level`` the payload is stored as one zstd frame
        (multithreaded for large payloads), checksummed before compression.
        On any error the temp file is removed and the error propagates.
        Runtime complexity: O(payload bytes), one pass.
        """
        raw_len = payload.nbytes if compression_level is not None else None
        header = replace(header, payload_len=payload.nbytes, checksum=0, raw_len=raw_len)
        head_len = header.header_len
        tmp = os.path.join(self.tmp_dir, f"{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
            subdir = os.path.join(self.data_dir, name[:2])
            if not os.path.isdir(subdir):
                os.makedirs(subdir, mode=0o700, exist_ok=True)
                if durable:
                    _fsync_dir(self.data_dir)
            os.rename(tmp, os.path.join(subdir, name))
            if durable:
                _fsync_dir(subdir)
        except BaseException as exc:
            try:
                os.unlink(tmp)
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
        if anything disagrees: key, namespace, length, or checksum.
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

    def _open(self, name: str) -> int:
        return os.open(self.path_of(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    # ------------------------------------------------------------- maintain
    def delete(self, name: str) -> None:
        """Remove a payload file; a file already gone is not an error."""
        try:
            os.unlink(self.path_of(name))
        except FileNotFoundError:
            pass

    def quarantine(self, name: str) -> None:
        """Move a bad file aside for inspection (``quarantine/``)."""
        try:
            os.replace(self.path_of(name), os.path.join(self.quarantine_dir, name))
            log.warning("quarantined %s", name)
        except FileNotFoundError:
            pass

    def names(self) -> Iterator[str]:
        """Names of every file under ``data/`` (valid names only)."""
        for sub in sorted(os.listdir(self.data_dir)):
            subdir = os.path.join(self.data_dir, sub)
            if not os.path.isdir(subdir) or os.path.islink(subdir):
                continue
            for name in sorted(os.listdir(subdir)):
                yield name

    def stray_paths(self) -> Iterator[str]:
        """Paths under ``data/`` that are not well-formed payload files."""
        for entry in sorted(os.listdir(self.data_dir)):
            path = os.path.join(self.data_dir, entry)
            if os.path.islink(path) or not os.path.isdir(path):
                yield path
                continue
            for name in sorted(os.listdir(path)):
                sub = os.path.join(path, name)
                if not _valid_name(name) or name[:2] != entry or os.path.islink(sub):
                    yield sub

    def temp_paths(self) -> list[str]:
        return [os.path.join(self.tmp_dir, n) for n in sorted(os.listdir(self.tmp_dir))]

    def quarantined_bytes(self) -> int:
        """Bytes held in ``quarantine/`` (files and quarantined index folders)."""
        total = 0
        for folder, dirs, names in os.walk(self.quarantine_dir):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def purge_quarantine(self) -> int:
        """Delete everything quarantined; return the bytes freed."""
        freed = self.quarantined_bytes()
        for name in os.listdir(self.quarantine_dir):
            path = os.path.join(self.quarantine_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _unlink(path)
        return freed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
