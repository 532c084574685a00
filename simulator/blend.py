"""Tokens a CacheBlend-style engine could reuse beyond the matched prefix.

Such an engine reuses content it has seen before even at another position.
:class:`BlendTracker` remembers the ``limit`` most recently seen contents
(bounded memory) and, per prompt, lists the spans it could reuse;
:func:`reusable_tokens` counts those past what the engine loaded.

>>> tracker = BlendTracker()
>>> tracker.candidates((("sys", 8), ("doc", 4)))
[]
>>> spans = tracker.candidates((("u", 2), ("doc", 4)))
>>> spans, reusable_tokens(spans, loaded=0)
([(2, 6, 4)], 4)
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["BlendTracker", "reusable_tokens"]


class BlendTracker:
    """Contents seen so far: most tokens seen and at which positions.
    Runtime complexity: O(spans) per prompt."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self._seen: OrderedDict[str, tuple[int, set[int]]] = OrderedDict()
        self._limit = limit

    def candidates(self, spans: tuple[tuple[str, int], ...]) -> list[tuple[int, int, int]]:
        """``(start, end, reusable)`` of each span whose content was seen before
        at another position, then remember this prompt's spans."""
        found = []
        position = 0
        for content, n in spans:
            seen = self._seen.get(content)
            end = position + n
            if seen is None:
                self._seen[content] = (n, {position})
                if len(self._seen) > self._limit:
                    self._seen.popitem(last=False)
            else:
                if position not in seen[1]:
                    found.append((position, end, min(n, seen[0])))
                self._seen.move_to_end(content)
                seen[1].add(position)
                if n > seen[0]:
                    self._seen[content] = (n, seen[1])
            position = end
        return found


def reusable_tokens(candidates, loaded: int) -> int:
    """Tokens of ``candidates`` (from :meth:`BlendTracker.candidates`) past ``loaded``."""
    return sum(min(cap, end - max(start, loaded)) for start, end, cap in candidates if end > loaded)
