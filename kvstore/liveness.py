"""Is the process that reserved room in a store still alive?

A writer reserves room before it writes and names itself by pid, start time
and boot id; a store shared by several processes reclaims the room of a
writer that died mid-write without waiting until it is opened alone. The
start time and boot id make sure a reused pid, or a reboot, is never taken
for the writer.

>>> import os
>>> writer_alive(owner(os.getpid()), boot_id())
True
>>> writer_alive({"pid": 0}, boot_id())  # not a writer's reservation
True
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["owner", "boot_id", "start_time", "writer_alive"]


def boot_id() -> str | None:
    """This machine's boot id (Linux), or ``None`` where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            return fh.read().strip().decode()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), ``-1``
    for a zombie, ``None`` when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":  # a zombie: dead, only not yet reaped
        return -1
    return int(fields[19])


def owner(pid: int) -> dict[str, Any]:
    """What identifies process ``pid`` in a reservation."""
    record: dict[str, Any] = {"pid": pid}
    boot, start = boot_id(), start_time(pid)
    if boot is not None:
        record["boot"] = boot
    if start is not None:
        record["start"] = start
    return record


def writer_alive(reservation: dict[str, Any], boot: str | None) -> bool:
    """Whether the process that made ``reservation`` may still be writing."""
    pid = reservation.get("pid") or 0
    if pid <= 0:
        return True  # not a writer's reservation
    if reservation.get("boot") and boot and reservation["boot"] != boot:
        return False  # made before a reboot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = reservation.get("start")
    now = start_time(pid)
    return not (now == -1 or (start is not None and now is not None and now != start))
