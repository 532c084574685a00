"""How many bytes things take: a checkpoint's file, a tier's index slice and
payload budget. One set of rules, used by the store and by the simulator, so
the two make the same decisions for the same trace.

>>> file_bytes(payload_len=1000, tokens=8192, block_tokens=4096)  # a header with one ancestor key
1148
>>> index_slice(256 << 30) == 1 << 30  # 1/64 of the capacity, capped at 1 GiB
True
>>> payload_budget(256 << 30) == (256 << 30) - (1 << 30)
True
"""

from __future__ import annotations

from typing import Any

from .fileformat import Header, payload_descriptor

__all__ = ["file_bytes", "payload_file_bytes", "ancestor_count", "index_slice", "payload_budget",
           "MIN_INDEX_BYTES", "MAX_INDEX_BYTES", "MIN_PAYLOAD_BYTES"]

MIN_INDEX_BYTES = 1 << 20
MAX_INDEX_BYTES = 1 << 30
MIN_PAYLOAD_BYTES = 64 << 10
_EMPTY_HEADER = Header(namespace_hash=bytes(8), key="00" * 20, tokens=0, payload_len=0, checksum=0).header_len


def ancestor_count(tokens: int, block_tokens: int) -> int:
    """Shorter aligned prefixes a checkpoint of ``tokens`` records: ``t / block - 1``
    when aligned, ``t // block`` for a tail.

    >>> ancestor_count(8192, 4096), ancestor_count(9000, 4096)
    (1, 2)
    """
    return tokens // block_tokens - (tokens % block_tokens == 0)


def file_bytes(*, payload_len: int, tokens: int, block_tokens: int, array_dims: int | None = None,
               dtype: str | None = None) -> int:
    """Size of the file of a (bytes, uncompressed) checkpoint: its header — which
    grows by 20 bytes per ancestor key — plus the payload. Runtime complexity: O(1).

    ``array_dims`` and ``dtype`` describe a numpy payload (its header also
    records dtype and shape).
    """
    extra = 0
    if dtype is not None:
        extra = len(dtype.encode("ascii")) + 8 * (array_dims or 0)
    return _EMPTY_HEADER + 20 * ancestor_count(tokens, block_tokens) + extra + payload_len


def payload_file_bytes(payload: Any, *, tokens: int, block_tokens: int) -> int:
    """Size of the file of a checkpoint holding ``payload`` (bytes-like or a
    numpy array, whose dtype and shape the header records), as the store counts it.

    >>> import numpy as np
    >>> payload_file_bytes(np.zeros(1000, np.uint8), tokens=8192, block_tokens=4096) \\
    ...     - file_bytes(payload_len=1000, tokens=8192, block_tokens=4096)  # '|u1' and one dimension
    11
    """
    view, dtype, shape = payload_descriptor(payload)
    return file_bytes(payload_len=view.nbytes, tokens=tokens, block_tokens=block_tokens,
                      array_dims=len(shape) if dtype is not None else None, dtype=dtype)


def index_slice(capacity_bytes: int) -> int:
    """The default share of a store's capacity kept for its LMDB index:
    1/64 of it, between 1 MiB and 1 GiB."""
    return min(max(capacity_bytes // 64, MIN_INDEX_BYTES), MAX_INDEX_BYTES)


def payload_budget(capacity_bytes: int, index_bytes: int | None = None) -> int:
    """Bytes left for checkpoint files once the index slice is taken.

    Raises ``ValueError`` when less than 64 KiB would be left.
    """
    index_bytes = index_slice(capacity_bytes) if index_bytes is None else index_bytes
    budget = capacity_bytes - index_bytes
    if budget < MIN_PAYLOAD_BYTES:
        raise ValueError(
            f"capacity_bytes={capacity_bytes} is too small: the index takes index_bytes={index_bytes}; "
            f"use at least {index_bytes + MIN_PAYLOAD_BYTES}")
    return budget
