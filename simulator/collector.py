"""Rarer cyclic garbage collections while a long replay or hashing pass runs.

A replay allocates millions of short-lived containers (heap entries, views,
tuples) and frees nearly all of them by reference counting: over a whole
200,000-request replay the cyclic collector finds a few hundred objects. Yet at
CPython's default thresholds it runs thousands of times, and each full
collection walks every live object of the replay's tables, a cost that grows
with the store. Raising the first threshold for the duration of the pass
changes no decision: it only changes when the collector looks. What it put
off is collected once on the way out: a replay's store, policy and the view
between them refer to each other, and only the collector frees them (without
that, a sweep worker kept one replay's tables while it ran the next one).

Measured with ``bench/bench_gc.py``; decisions are the same by construction.

>>> import gc
>>> before = gc.get_threshold()
>>> with rarer_collections():
...     gc.get_threshold()[0]
50000
>>> gc.get_threshold() == before
True
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["rarer_collections"]


@contextmanager
def rarer_collections(first: int = 50_000) -> Iterator[None]:
    """Run the body with the collector's first threshold at ``first`` allocations
    (older generations at least 20 and 100 of the younger's collections); on
    exit, even on an error, one full collection frees the garbage in cycles the
    body left, and the thresholds in force before are restored. The thresholds
    are the process's own: nested or concurrent uses restore in the order they
    exit.

    :param first: container allocations (net of frees) between young collections.
    """
    if isinstance(first, bool) or not isinstance(first, int) or first < 1:
        raise ValueError(f"first must be an int >= 1, got {first!r}")
    before = gc.get_threshold()
    gc.set_threshold(max(first, before[0]), max(20, before[1]), max(100, before[2]))
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.collect()
