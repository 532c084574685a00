"""Helpers shared by the tests: payloads that can be checked from their key alone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np


def payload_for(key: str, size: int) -> bytes:
    """Deterministic bytes derived from ``key``: a reader can check them knowing only the key."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def tokens_for(session: int, length: int, diverge_at: int | None = None, tail_seed: int = 0) -> list[int]:
    """A prompt of a session; tokens after ``diverge_at`` depend on ``tail_seed``."""
    rng = np.random.default_rng(session)
    base = rng.integers(0, 50_000, size=length).tolist()
    if diverge_at is not None and diverge_at < length:
        tail = np.random.default_rng([session, tail_seed + 1]).integers(50_000, 60_000, size=length - diverge_at)
        base[diverge_at:] = tail.tolist()
    return base


@contextmanager
def tmpfs(path: str, size: str = "4m", readonly: bool = False):
    """A real small filesystem (tests run as root on CI), unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def remount(path: str, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", path], check=True)


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def apply_op(manager, op: str, key: str, now: float, make_entry) -> None:
    """One step of a random walk over an eviction manager: ``insert`` (of
    ``make_entry()``, if absent), ``hit``, ``remove`` (if not pinned), ``pin`` or
    ``unpin``; a step that does not apply to ``key`` does nothing."""
    if op == "insert" and key not in manager:
        manager.insert(make_entry(), now, reserved=0)
    elif op == "hit" and key in manager:
        manager.record_hit(key, now)
    elif op == "remove" and key in manager and not manager.entry(key).pinned:
        manager.remove(key)
    elif op == "pin" and key in manager:
        manager.pin(key)
    elif op == "unpin" and key in manager:
        manager.unpin(key)


def least_scored(manager, policy, now: float) -> str | None:
    """The eligible key with the least (priority, score, last use, key): a full scan."""
    eligible = [e for e in (manager.entry(x) for x in list(manager)) if not e.pinned]
    return min(((e.priority, policy.score(e.key, now), policy._last_use[e.key], e.key) for e in eligible),
               default=(None, None, None, None))[3]
