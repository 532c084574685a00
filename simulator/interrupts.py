"""SIGTERM stops a command the way Ctrl-C does.

By default a SIGTERM (``kill``, a service manager, a CI job's timeout) ends
Python at once: no ``finally`` runs, so a sweep would leave its temporary keys
directory and an output its ``.partial`` file. Inside
:func:`terminate_as_interrupt` it raises :class:`Terminated`, a
``KeyboardInterrupt``, so the cleanup written for Ctrl-C runs for it too.

>>> import os, signal
>>> with terminate_as_interrupt():
...     try:
...         os.kill(os.getpid(), signal.SIGTERM)
...     except Terminated:
...         print("cleaned up")
cleaned up
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "terminate_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (exit status 143 by convention)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread; the
    previous handler is restored on the way out. Elsewhere than the main
    thread (where Python cannot set handlers) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
