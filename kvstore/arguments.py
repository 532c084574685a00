"""Checks of :class:`~kvstore.CheckpointStore`'s arguments: each error names
the argument and what would be valid, before anything is opened.

>>> check_tier_arguments(0, None, None, None, 16)
>>> check_tier_arguments(-1, None, None, None, 16)
Traceback (most recent call last):
ValueError: ram_bytes must be an int >= 0, got -1
"""

from __future__ import annotations

from .accounting import MIN_INDEX_BYTES
from .eviction import LAYOUTS
from .tiers.base import Tier

__all__ = ["check_arguments", "check_tier_arguments", "check_session"]


def check_session(session: object) -> str | None:
    """A session hint: a ``str`` or ``None``."""
    if session is not None and not isinstance(session, str):
        raise TypeError(f"session must be a str or None, not {type(session).__name__}")
    return session


def check_arguments(*, capacity_bytes: object, index_bytes: object, layout: object, pin_quota_bytes: object,
                     clock: object, trust_path: object, tiers: object) -> None:
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if capacity_bytes is not None:
        if not is_int(capacity_bytes):
            raise TypeError(f"capacity_bytes must be an int, not {type(capacity_bytes).__name__}")
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if index_bytes is not None and (not is_int(index_bytes) or index_bytes < MIN_INDEX_BYTES):
        raise ValueError(f"index_bytes must be an int >= {MIN_INDEX_BYTES}, got {index_bytes!r}")
    if pin_quota_bytes is not None and (not is_int(pin_quota_bytes) or pin_quota_bytes < 0):
        raise TypeError(f"pin_quota_bytes must be an int >= 0 or None, got {pin_quota_bytes!r}")
    if not callable(clock):
        raise TypeError(f"clock must be a callable returning seconds, not {type(clock).__name__}")
    if not isinstance(trust_path, bool):
        raise TypeError(f"trust_path must be a bool, not {type(trust_path).__name__}")
    if isinstance(tiers, (str, bytes)) or not all(isinstance(t, Tier) for t in tiers):
        raise TypeError("tiers must be a sequence of kvstore.tiers.Tier objects")


def check_tier_arguments(ram_bytes: object, cold_path: object, cold_capacity_bytes: object,
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
