"""Self-describing payload files: a checksummed header, then the payload.

Layout (little-endian), ``header_len`` bytes of header then ``payload_len``
bytes of payload::

    magic "KVCKPT\\r\\n" | version u16 | header_len u32 | flags u16 (tail, numpy, parent, anchor, zstd,
                                                              chained, layout recorded)
    namespace hash 8s | key 20s | parent 20s | anchor 20s
    tokens u64 | payload_len u64 | payload crc32 u32 | priority i32
    inserted_at f64 | n_ancestors u32 | dtype_len u8 | ndim u8 | 2 pad bytes
    ancestors 20s * n | dtype ascii | shape u64 * ndim | [raw_len u64 if zstd] | header crc32 u32

With the ``zstd`` flag (files of a cold tier) the payload is one zstd frame of
``payload_len`` bytes that decompresses to ``raw_len`` bytes; the CRC32 always
covers the uncompressed bytes, so a checksum means the same in every tier.

The header alone is enough to rebuild the index entry (``kvstore verify
--repair``). Numpy payloads record dtype and shape, so they come back as arrays
without pickle; only plain numeric dtypes are accepted.

>>> h = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=4, payload_len=3, checksum=7)
>>> Header.decode(h.encode()) == h
True
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CorruptFileError

__all__ = ["Header", "MAGIC", "FORMAT_VERSION", "payload_view", "payload_descriptor", "MAX_HEADER_BYTES"]

MAGIC = b"KVCKPT\r\n"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<8sHIH8s20s20s20sQQIidIBB2x")
_CRC = struct.Struct("<I")
FLAG_TAIL = 1
FLAG_NUMPY = 2
FLAG_PARENT = 4
FLAG_ANCHOR = 8
FLAG_ZSTD = 16
FLAG_CHAINED = 32  # written by a store of the chained layout (meaningful with FLAG_LAYOUT)
FLAG_LAYOUT = 64  # the file records its layout (files written before that record nothing)
MAX_HEADER_BYTES = 1 << 20
_NUMERIC_KINDS = "biufc"
_ZERO_KEY = bytes(20)


def _key_bytes(key: str | None, what: str) -> bytes:
    if key is None:
        return _ZERO_KEY
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise ValueError(f"{what} must be a 40-character hex SHA1, got {key!r}") from None
    if len(raw) != 20:
        raise ValueError(f"{what} must be a 40-character hex SHA1, got {key!r}")
    return raw


@dataclass(frozen=True)
class Header:
    """Everything a payload file says about itself."""

    namespace_hash: bytes
    key: str
    tokens: int
    payload_len: int
    checksum: int
    parent: str | None = None
    anchor: str | None = None
    ancestors: tuple[str, ...] = ()
    is_tail: bool = False
    priority: int = 0
    inserted_at: float = 0.0
    dtype: str | None = None  #: numpy dtype string for array payloads, else None
    shape: tuple[int, ...] = field(default=())
    raw_len: int | None = None  #: uncompressed payload length of a zstd payload, else None
    chained: bool | None = None  #: the layout it was written for (None: not recorded, older files)

    @property
    def compressed(self) -> bool:
        return self.raw_len is not None

    @property
    def data_len(self) -> int:
        """Length of the payload as the caller stored it (uncompressed)."""
        return self.payload_len if self.raw_len is None else self.raw_len

    @property
    def header_len(self) -> int:
        dtype_len = len(self.dtype.encode("ascii")) if self.dtype else 0
        return (_FIXED.size + 20 * len(self.ancestors) + dtype_len + 8 * len(self.shape)
                + (8 if self.compressed else 0) + _CRC.size)

    @property
    def file_size(self) -> int:
        return self.header_len + self.payload_len

    def encode(self) -> bytes:
        dtype = self.dtype.encode("ascii") if self.dtype else b""
        flags = ((FLAG_TAIL if self.is_tail else 0) | (FLAG_NUMPY if self.dtype else 0)
                 | (FLAG_PARENT if self.parent is not None else 0)
                 | (FLAG_ANCHOR if self.anchor is not None else 0)
                 | (FLAG_ZSTD if self.compressed else 0)
                 | (0 if self.chained is None else FLAG_LAYOUT | (FLAG_CHAINED if self.chained else 0)))
        parts = [
            _FIXED.pack(
                MAGIC, FORMAT_VERSION, self.header_len, flags, self.namespace_hash,
                _key_bytes(self.key, "key"), _key_bytes(self.parent, "parent"),
                _key_bytes(self.anchor, "anchor"), self.tokens, self.payload_len,
                self.checksum, self.priority, self.inserted_at, len(self.ancestors),
                len(dtype), len(self.shape),
            ),
            b"".join(_key_bytes(a, "ancestor") for a in self.ancestors),
            dtype,
            struct.pack(f"<{len(self.shape)}Q", *self.shape),
            struct.pack("<Q", self.raw_len) if self.compressed else b"",
        ]
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @staticmethod
    def fixed_size() -> int:
        """Bytes to read before the full header length is known."""
        return _FIXED.size

    @classmethod
    def decode(cls, data: bytes | memoryview) -> "Header":
        """Parse and validate a header; raises :class:`CorruptFileError`."""
        data = bytes(data)
        if len(data) < _FIXED.size + _CRC.size:
            raise CorruptFileError(f"header truncated: {len(data)} bytes")
        (magic, version, header_len, flags, ns, key, parent, anchor, tokens, payload_len,
         checksum, priority, inserted_at, n_anc, dtype_len, ndim) = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise CorruptFileError("not a kvstore checkpoint file (bad magic)")
        if version != FORMAT_VERSION:
            raise CorruptFileError(f"unsupported format version {version}")
        expected = (_FIXED.size + 20 * n_anc + dtype_len + 8 * ndim
                    + (8 if flags & FLAG_ZSTD else 0) + _CRC.size)
        if header_len != expected or header_len > MAX_HEADER_BYTES:
            raise CorruptFileError(f"inconsistent header length {header_len}")
        if len(data) < header_len:
            raise CorruptFileError(f"header truncated: {len(data)} of {header_len} bytes")
        body = data[: header_len - _CRC.size]
        (crc,) = _CRC.unpack_from(data, header_len - _CRC.size)
        if zlib.crc32(body) != crc:
            raise CorruptFileError("header checksum mismatch")
        pos = _FIXED.size
        ancestors = tuple(body[pos + 20 * i : pos + 20 * i + 20].hex() for i in range(n_anc))
        pos += 20 * n_anc
        dtype = body[pos : pos + dtype_len].decode("ascii") if flags & FLAG_NUMPY else None
        pos += dtype_len
        shape = struct.unpack_from(f"<{ndim}Q", body, pos)
        pos += 8 * ndim
        raw_len = struct.unpack_from("<Q", body, pos)[0] if flags & FLAG_ZSTD else None
        data_len = payload_len if raw_len is None else raw_len
        if dtype is not None:
            _check_dtype(dtype)
            if int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize != data_len:
                raise CorruptFileError("shape and dtype disagree with payload length")
        return cls(
            namespace_hash=ns, key=key.hex(), tokens=tokens, payload_len=payload_len,
            checksum=checksum, parent=parent.hex() if flags & FLAG_PARENT else None,
            anchor=anchor.hex() if flags & FLAG_ANCHOR else None,
            ancestors=ancestors, is_tail=bool(flags & FLAG_TAIL), priority=priority,
            inserted_at=inserted_at, dtype=dtype, shape=tuple(shape), raw_len=raw_len,
            chained=bool(flags & FLAG_CHAINED) if flags & FLAG_LAYOUT else None,
        )

    def fits(self, *, block_tokens: int, chained: bool) -> str | None:
        """Why this checkpoint cannot belong to a store of ``block_tokens`` and
        that layout, or ``None`` when it can. The block size shows in the
        header's shape: an aligned checkpoint of ``t`` tokens has ``t / block - 1``
        ancestors, a tail ``t // block``.

        >>> Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=8, payload_len=0, checksum=0,
        ...        ancestors=("cd" * 20,), chained=False).fits(block_tokens=8, chained=False)
        'written with block_tokens=4, not 8'
        """
        if self.chained is not None and self.chained != chained:
            return (f"written by a {'chained' if self.chained else 'snapshot'} store, "
                    f"not a {'chained' if chained else 'snapshot'} one")
        aligned = self.tokens % block_tokens == 0
        if aligned == self.is_tail or len(self.ancestors) != self.tokens // block_tokens - aligned:
            blocks = len(self.ancestors) + (0 if self.is_tail else 1)
            written = self.tokens // blocks if blocks and not self.is_tail else None
            return (f"written with block_tokens={written}, not {block_tokens}" if written
                    else f"does not sit on a grid of block_tokens={block_tokens}")
        return None


def _check_dtype(dtype: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise CorruptFileError(f"unknown dtype {dtype!r}") from None
    if dt.kind not in _NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise CorruptFileError(f"dtype {dtype!r} is not a plain numeric dtype")
    return dt


def payload_descriptor(payload: Any) -> tuple[memoryview, str | None, tuple[int, ...]]:
    """Return ``(bytes view, dtype or None, shape)`` for a payload, copying
    only non-contiguous arrays.

    >>> view, dtype, shape = payload_descriptor(np.zeros((2, 3), np.float16))
    >>> (view.nbytes, dtype, shape)
    (12, '<f2', (2, 3))
    """
    if isinstance(payload, np.ndarray):
        if payload.dtype.kind not in _NUMERIC_KINDS or payload.dtype.fields is not None:
            raise TypeError(f"payload array must have a plain numeric dtype, not {payload.dtype}")
        arr = np.ascontiguousarray(payload)
        if arr.dtype.byteorder == ">":  # store little-endian (or byte-order free) only
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
        # the shape of the payload itself: ascontiguousarray makes a 0-d array 1-d
        return view, arr.dtype.str, tuple(int(d) for d in payload.shape)
    if isinstance(payload, (bytes, bytearray, memoryview)):
        view = memoryview(payload)
        if not view.contiguous:
            raise ValueError("payload memoryview must be contiguous")
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view, None, ()
    raise TypeError(
        f"payload must be bytes, bytearray, memoryview or a numpy array, not {type(payload).__name__}"
    )


def payload_view(buffer: bytearray | bytes, header: Header) -> Any:
    """Turn loaded bytes back into what was stored (bytes, or an array)."""
    if header.dtype is None:
        return bytes(buffer) if isinstance(buffer, bytearray) else buffer
    dt = _check_dtype(header.dtype)
    return np.frombuffer(buffer, dtype=dt).reshape(header.shape)
