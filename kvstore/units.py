"""Byte counts for people, both ways.

>>> human_bytes(3 * 2**30), human_bytes(512)
('3.0 GiB', '512 B')
>>> parse_size("64MiB"), parse_size("1.5GB")
(67108864, 1500000000)
"""

from __future__ import annotations

import re

__all__ = ["human_bytes", "parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes from ``4096``, ``64MiB``, ``1.5GB``, ``256GiB`` (case-insensitive)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 64MiB, 1.5GB, 256GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human_bytes(n: float) -> str:
    """``n`` bytes in binary units (B, KiB, MiB, GiB, TiB, PiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
