"""A bounded queue of work done by one background thread, that never blocks
the caller: when it is full, the oldest waiting item is dropped and counted.

>>> done = []
>>> queue = Publisher(done.append, max_items=2, name="demo")
>>> queue.submit("a")
>>> queue.flush(timeout=5.0)
True
>>> done, queue.dropped
(['a'], 0)
>>> queue.close()
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class Publisher:
    """Run ``work(item)`` for each submitted item on one daemon thread.

    :param work: called with each item; what it raises is logged and the item counted in ``failed``.
    :param max_items: most items waiting; past it the oldest is dropped (``dropped``).
    :param name: the thread's name.
    :param idle: called about once a second while nothing waits (e.g. to flush counters).
    :param on_drop: called with each dropped item.
    """

    def __init__(self, work: Callable[[Any], None], *, max_items: int, name: str,
                 idle: Callable[[], None] | None = None, on_drop: Callable[[Any], None] | None = None) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be an int >= 1, got {max_items!r}")
        self._work, self._idle, self._on_drop = work, idle, on_drop
        self._items: collections.deque[Any] = collections.deque()
        self._max = max_items
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._items)

    def submit(self, item: Any) -> None:
        """Queue ``item``; drops the oldest waiting one when full. O(1), never waits for the work."""
        with self._cond:
            if self._closed:
                self._drop([item])
                return
            self._items.append(item)
            if len(self._items) > self._max:
                self._drop([self._items.popleft()])
            self._cond.notify_all()

    def _drop(self, items: list) -> None:
        self.dropped += len(items)
        if self._on_drop is not None:
            for item in items:
                self._on_drop(item)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing waits or runs, at most ``timeout`` seconds; whether it got there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Finish what waits (up to ``timeout`` seconds; the rest is dropped), then stop. Idempotent."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._drop(list(self._items))
            self._items.clear()
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    if not self._cond.wait(1.0) and self._idle is not None:
                        break
                if self._closed and not self._items:
                    return
                item = self._items.popleft() if self._items else None
                self._busy = True
            try:
                if item is not None:
                    self._work(item)
                elif self._idle is not None:
                    self._idle()
            except Exception as exc:  # a background failure is counted, never raised into the engine
                self.failed += 1
                log.warning("background work failed: %s", exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
