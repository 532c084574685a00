"""How a store lays checkpoints out: ``snapshot`` or ``chained``, one object each.

- ``snapshot``: a checkpoint holds the whole state of its prefix. The longest
  match is the longest prefix held in any tier; a load reads one file.
- ``chained``: a checkpoint holds one block. A prefix matches only while every
  block up to it is held in some tier; a load reads them all, in order; a
  block is written only after its parent, and making room for it never
  evicts its own ancestors.

>>> layout_for("chained").chained, layout_for("snapshot").assemble([b"a", b"b"])
(True, b'b')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .keys import PrefixKeys
from .tiers.base import Tier

__all__ = ["Layout", "SnapshotLayout", "ChainedLayout", "layout_for"]


class Layout:
    """What depends on the layout; subclasses fill it in."""

    name = ""
    chained = False

    def longest_match(self, tiers: Sequence[Tier], prefix: PrefixKeys) -> tuple[int, str, tuple[str, ...]] | None:
        """``(tokens, key, blocks)`` of the longest loadable prefix over ``tiers``, or ``None``.
        Runtime complexity: O(blocks * tiers) probes."""
        raise NotImplementedError

    def protect(self, ancestors: tuple[str, ...]) -> tuple[str, ...]:
        """Keys that must survive the eviction made for a new checkpoint."""
        return ()

    def check_put(self, prefix: PrefixKeys, n_tokens: int, present: Callable[[str], bool]) -> None:
        """Raise ``ValueError`` when ``tokens[:n_tokens]`` may not be written now."""

    def assemble(self, parts: list[Any]) -> Any:
        """What ``load`` returns, given the payloads of the match's blocks in order."""
        raise NotImplementedError


class SnapshotLayout(Layout):
    name = "snapshot"

    def longest_match(self, tiers, prefix):
        best = None
        for tier in tiers:
            found = tier.longest_match(prefix)
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return None if best is None else (best[0], best[1], ())

    def assemble(self, parts):
        return parts[-1]


class ChainedLayout(Layout):
    name = "chained"
    chained = True

    def longest_match(self, tiers, prefix):
        block = prefix.block_tokens
        chain: list[str] = []
        depth = 0
        for n in range(block, prefix.anchor(len(prefix)) + 1, block):  # the longest run of held blocks
            key = prefix.key(n)
            if not any(key in tier for tier in tiers):
                break
            chain.append(key)
            depth = n
        tail = None
        anchor = prefix.key(depth)
        for tier in tiers:  # then its longest tail
            for tail_key, tokens in tier.tails_at(anchor).items():
                if (depth < tokens <= len(prefix) and (tail is None or tokens > tail[0])
                        and prefix.key(tokens) == tail_key):
                    tail = (tokens, tail_key)
        if tail is not None:
            return tail[0], tail[1], (*chain, tail[1])
        return (depth, chain[-1], tuple(chain)) if chain else None

    def protect(self, ancestors):
        return ancestors

    def check_put(self, prefix, n_tokens, present):
        parent = prefix.parent_key(n_tokens)
        if parent is not None and not present(parent):
            raise ValueError(
                f"chained layout: the block before tokens[:{n_tokens}] is not stored; "
                f"put the blocks of a prompt in order")

    def assemble(self, parts):
        return parts


_LAYOUTS = {layout.name: layout for layout in (SnapshotLayout(), ChainedLayout())}


def layout_for(name: str) -> Layout:
    """The layout object named ``name`` (``"snapshot"`` or ``"chained"``)."""
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise ValueError(f"layout must be one of {tuple(_LAYOUTS)}, got {name!r}") from None
