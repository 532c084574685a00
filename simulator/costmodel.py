"""Cost model: what a turn costs on given hardware, as named profiles.

Prefill speed falls with context: ``tokens/s = prefill_tps / (1 + context /
context_halving)``, so prefilling from ``a`` to ``b`` tokens of context takes
``((b - a) + (b² - a²) / (2 · context_halving)) / prefill_tps`` seconds.
Loading a checkpoint costs ``load_latency_s + bytes / disk_read_bps``. A
checkpoint of ``n`` tokens occupies ``fixed_bytes + n · kv_bytes_per_token``.

Built-in profiles, calibrated from the field reports:

- ``ds4``: DS4 on an edge box (DS4 #444): files of 76 / 130 / 184 MiB at 4096 /
  8192 / 12288 tokens (54 MiB per 4096 tokens + 22 MiB fixed); a 35k-token
  re-prefill about 110 s; 6,337 fresh tokens at ~30k context in ~20 s; turn
  start from 32,768 tokens on disk about 10 s.
- ``qwen7b-laptop``: qwen2.5-7B q4_K_M with q8_0 KV on a 24 GB laptop (the
  OpenClaw turn report): 140 KB per token, decode 5 tok/s, a cold 15.7k-token
  prime ~95 s of prefill, a compaction miss on ~20k tokens ~125 s.

User profiles come from TOML (``[profiles.NAME]`` tables with the same keys).

>>> p = PROFILES["ds4"]
>>> round(p.prefill_seconds(0, 35_000))
112
>>> round(p.checkpoint_bytes(4096) / 2**20)
76
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields

__all__ = ["Profile", "PROFILES", "load_profiles", "get_profile"]

MiB = 1 << 20


@dataclass(frozen=True)
class Profile:
    """Hardware and model figures that turn tokens into seconds and bytes."""

    name: str
    description: str
    prefill_tps: float  #: prefill tokens/s at empty context
    context_halving: float  #: context length at which prefill speed halves
    decode_tps: float  #: decode tokens/s
    disk_read_bps: float  #: checkpoint read bandwidth, bytes/s
    kv_bytes_per_token: float
    fixed_bytes: int  #: per-checkpoint bytes that do not grow with tokens
    load_latency_s: float = 0.05
    #: shared tier (``kvsim simulate --shared-capacity``): read bandwidth over the network, bytes/s
    #: (500 MiB/s: ``bench/bench_shared.py`` read and verified 64 MiB in 0.13 s from a loopback cluster)
    shared_read_bps: float = 500 * 2**20
    shared_latency_s: float = 0.002  #: a shared lookup and read's round trips

    def __post_init__(self) -> None:
        for name in ("prefill_tps", "context_halving", "decode_tps", "disk_read_bps", "shared_read_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"profile {self.name!r}: {name} must be a number > 0, got {value!r}")
        for name in ("kv_bytes_per_token", "fixed_bytes", "load_latency_s", "shared_latency_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"profile {self.name!r}: {name} must be a number >= 0, got {value!r}")

    def prefill_seconds(self, start: int, end: int) -> float:
        """Seconds to prefill context positions ``[start, end)``."""
        if end <= start:
            return 0.0
        return ((end - start) + (end * end - start * start) / (2 * self.context_halving)) / self.prefill_tps

    def decode_seconds(self, tokens: int) -> float:
        return tokens / self.decode_tps

    def load_seconds(self, nbytes: int) -> float:
        return self.load_latency_s + nbytes / self.disk_read_bps

    def shared_load_seconds(self, nbytes: int) -> float:
        """Seconds to fetch a checkpoint of ``nbytes`` from the shared tier."""
        return self.shared_latency_s + nbytes / self.shared_read_bps

    def checkpoint_bytes(self, tokens: int) -> int:
        """Bytes a snapshot of ``tokens`` tokens occupies."""
        return int(self.fixed_bytes + tokens * self.kv_bytes_per_token)

    def block_bytes(self, tokens: int) -> int:
        """Bytes of a ``chained`` block of ``tokens`` tokens (KV only, no fixed state)."""
        return int(tokens * self.kv_bytes_per_token) + 4096

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("ds4", "DS4-like edge engine (DS4 #444): 54 MiB/4096 tok + 22 MiB per file, ~290-350 tok/s",
                prefill_tps=350.0, context_halving=150_000.0, decode_tps=20.0,
                disk_read_bps=200 * MiB, kv_bytes_per_token=54 * MiB / 4096, fixed_bytes=22 * MiB),
        Profile("qwen7b-laptop", "qwen2.5-7B q4_K_M, q8_0 KV (140 KB/tok) on a 24 GB laptop, 5 tok/s decode",
                prefill_tps=200.0, context_halving=40_000.0, decode_tps=5.0,
                disk_read_bps=2000 * MiB, kv_bytes_per_token=140_000.0, fixed_bytes=2 * MiB,
                load_latency_s=0.1),
    )
}


def load_profiles(path: str) -> dict[str, Profile]:
    """Profiles from a TOML file of ``[profiles.NAME]`` tables; raises
    ``ValueError`` naming the profile and key that is wrong."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    tables = doc.get("profiles")
    if not isinstance(tables, dict) or not tables:
        raise ValueError(f"{path}: expected [profiles.NAME] tables")
    known = {f.name for f in fields(Profile)} - {"name"}
    required = {f.name for f in fields(Profile) if f.default is f.default_factory} - {"name", "description"}
    out = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: profiles.{name} must be a table")
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"{path}: profiles.{name}: unknown key {sorted(unknown)[0]!r}; "
                             f"known: {', '.join(sorted(known))}")
        missing = required - set(table) - {"load_latency_s"}
        if missing:
            raise ValueError(f"{path}: profiles.{name}: missing key {sorted(missing)[0]!r}")
        out[name] = Profile(name=name, description=table.get("description", f"from {path}"),
                            **{k: v for k, v in table.items() if k != "description"})
    return out


def get_profile(name: str, extra: dict[str, Profile] | None = None) -> Profile:
    """A profile by name (built-in or from ``extra``)."""
    table = {**PROFILES, **(extra or {})}
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; available: {', '.join(sorted(table))}")
    return table[name]
