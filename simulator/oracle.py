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

from .keyed import KeyedTrace
from .tokens import TokenMaterializer
from .trace import Request

__all__ = ["FutureOracle"]


class FutureOracle:
    """Sorted use times of every key of a trace."""

    def __init__(self, requests: Iterable[Request], block_tokens: int, namespace: str = "kvsim") -> None:
        ns = Namespace(namespace)
        tokens_of = TokenMaterializer()
        uses: dict[str, list[float]] = {}
        last_of_session: dict[str, tuple[int, str]] = {}
        for request in requests:
            prefix = PrefixKeys(ns, tokens_of.tokens(request.prompt), block_tokens)
            total = len(prefix)
            keys = [prefix.key(n) for n in prefix.aligned_lengths]
            keys.append(prefix.key(total))
            previous = last_of_session.get(request.session)
            if previous is not None and previous[0] < total and prefix.key(previous[0]) == previous[1]:
                keys.append(previous[1])
            for key in keys:
                times = uses.setdefault(key, [])
                if not times or times[-1] != request.t:
                    times.append(request.t)
            last_of_session[request.session] = (total, prefix.key(total))
        self._uses = uses

    @classmethod
    def from_keys(cls, keys: "KeyedTrace") -> "FutureOracle":
        """The same oracle over a trace's integer-id keys (:class:`KeyedTrace`)."""
        oracle = cls.__new__(cls)
        uses: dict[int, list[float]] = {}
        last_of_session: dict[str, tuple[int, int]] = {}
        for info, prefix in keys.rows():
            total = len(prefix)
            ids = [prefix.key(n) for n in prefix.aligned_lengths]
            end = prefix.key(total)
            if end >= 0 and total % prefix.block_tokens:
                ids.append(end)
            previous = last_of_session.get(info.session)
            if previous is not None and previous[0] < total and prefix.key(previous[0]) == previous[1] >= 0:
                ids.append(previous[1])
            for key in ids:
                times = uses.setdefault(key, [])
                if not times or times[-1] != info.t:
                    times.append(info.t)
            last_of_session[info.session] = (total, end)
        oracle._uses = uses
        return oracle

    def next_use(self, key: str, now: float) -> float:
        times = self._uses.get(key)
        if not times:
            return math.inf
        i = bisect.bisect_right(times, now)
        return times[i] if i < len(times) else math.inf
