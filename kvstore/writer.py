"""A background writer: one thread, a bounded queue, and nobody blocked for long.

``submit`` never waits for a write: when the queue already holds ``max_pending``
jobs, the oldest is dropped (and returned, so the caller can forget it) to make
room. ``drain`` waits until everything queued so far has been written;
``close`` drains and stops the thread. A job that raises is logged and handed
to ``on_error``; the thread carries on.

>>> done = []
>>> writer = BackgroundWriter(done.append, max_pending=4)
>>> writer.submit("a") is None
True
>>> writer.drain()
True
>>> done
['a']
>>> writer.close()
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BackgroundWriter"]

log = logging.getLogger(__name__)

Job = TypeVar("Job")


class BackgroundWriter(Generic[Job]):
    """Runs ``write(job)`` for each submitted job, in order, on one daemon thread.

    :param write: does one job; exceptions are caught.
    :param max_pending: most jobs queued (not counting the one being written).
    :param on_error: called with ``(job, exception)`` when ``write`` raises.
    """

    def __init__(self, write: Callable[[Job], None], *, max_pending: int,
                 on_error: Callable[[Job, BaseException], None] | None = None,
                 name: str = "kvstore-writer") -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        self._write = write
        self._on_error = on_error
        self.max_pending = max_pending
        self._queue: deque[Job] = deque()
        self._busy = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        """Jobs queued or being written."""
        with self._changed:
            return len(self._queue) + int(self._busy)

    def submit(self, job: Job) -> Job | None:
        """Queue ``job``; return the job dropped to make room, if any."""
        with self._changed:
            if self._closed:
                raise ValueError("submit on a closed BackgroundWriter")
            dropped = self._queue.popleft() if len(self._queue) >= self.max_pending else None
            self._queue.append(job)
            self._changed.notify_all()
            return dropped

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job is written; ``False`` if ``timeout`` ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread. Idempotent."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and empty
                job = self._queue.popleft()
                self._busy = True
            try:
                self._write(job)
            except BaseException as exc:  # the thread must outlive a failed write
                log.warning("background write failed: %r", exc)
                if self._on_error is not None:
                    self._on_error(job, exc)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
