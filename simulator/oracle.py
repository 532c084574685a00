"""The future, for the offline ``belady`` reference: when is each key used next?

A request *uses* every aligned prefix key of its prompt, the key of its whole
prompt (a tail), and the tail of the previous request of its session when it
extends that prompt exactly (tool calls). ``next_use(key, now)`` is the first
such request after ``now``.

>>> from simulator.trace import Request
>>> oracle = FutureOracle([Request("s", 0.0, (("a", 8),)), Request("s", 5.0, (("a", 8), ("b", 2)))], 4)
>>> key = next(iter(oracle._uses))
>>> oracle.next_use(key, 0.0)
5.0
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

from kvstore.keys import Namespace, PrefixKeys

from .keyed import UNKNOWN_KEY, KeyedTrace
from .tokens import TokenMaterializer
from .trace import Request

__all__ = ["FutureOracle"]


class FutureOracle:
    """Sorted use times of every key of a trace."""

    def __init__(self, requests: Iterable[Request], block_tokens: int, namespace: str = "kvsim") -> None:
        ns = Namespace(namespace)
        tokens_of = TokenMaterializer()
        self._uses = _uses((r.session, r.t, PrefixKeys(ns, tokens_of.tokens(r.prompt), block_tokens))
                           for r in requests)

    @classmethod
    def from_keys(cls, keys: "KeyedTrace") -> "FutureOracle":
        """The same oracle over a trace's integer-id keys (:class:`KeyedTrace`)."""
        oracle = cls.__new__(cls)
        oracle._uses = _uses((info.session, info.t, prefix) for info, prefix in keys.rows())
        return oracle

    def next_use(self, key: str, now: float) -> float:
        times = self._uses.get(key)
        if not times:
            return math.inf
        i = bisect.bisect_right(times, now)
        return times[i] if i < len(times) else math.inf


def _uses(steps: Iterable[tuple[str, float, object]]) -> dict:
    """Key -> sorted times of the requests that use it, from ``(session, time,
    prefix keys)`` of each request (hashed or integer-id keys alike)."""
    uses: dict = {}
    last_of_session: dict[str, tuple[int, object]] = {}
    for session, t, prefix in steps:
        total = len(prefix)
        keys = [prefix.key(n) for n in prefix.aligned_lengths]
        end = prefix.key(total)
        keys.append(end)
        previous = last_of_session.get(session)
        if previous is not None and previous[0] < total and prefix.key(previous[0]) == previous[1]:
            keys.append(previous[1])
        for key in keys:
            if key == UNKNOWN_KEY:
                continue  # an end no checkpoint was written for (integer ids, no tails)
            times = uses.setdefault(key, [])
            if not times or times[-1] != t:
                times.append(t)
        last_of_session[session] = (total, end)
    return uses
