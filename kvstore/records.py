"""One checkpoint record: :class:`Entry`, what the index stores (as JSON) and
what the eviction manager keeps; a policy sees it read-only. Its file's
:class:`~kvstore.fileformat.Header` is the on-disk form, and
:func:`entry_from_header` is the one converter between the two.

>>> from kvstore.fileformat import Header
>>> h = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=8, payload_len=5, checksum=0,
...            ancestors=("cd" * 20,), parent="cd" * 20)
>>> entry = entry_from_header(h, "file")
>>> (entry.tokens, entry.size == h.file_size, entry.ancestors == ("cd" * 20,), entry.file)
(8, True, True, 'file')
>>> Entry.decode(entry.encode()) == entry
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .fileformat import Header

__all__ = ["Entry", "entry_from_header"]

# what the index keeps of an entry (pins live in a table of their own)
_STORED = ("key", "file", "tokens", "size", "parent", "anchor", "ancestors", "is_tail", "priority",
           "inserted_at", "hits", "last_use")


@dataclass(slots=True)
class Entry:
    """One stored checkpoint.

    ``anchor`` is set on tails only: the aligned key they hang from (the root
    key, for a tail shorter than one block). ``file``, ``hits`` and
    ``last_use`` are the store's bookkeeping; a policy's view does not show them.
    """

    key: str
    tokens: int
    size: int
    parent: str | None = None
    ancestors: tuple[str, ...] = ()
    is_tail: bool = False
    anchor: str | None = None
    priority: int = 0
    pinned: bool = False
    inserted_at: float = 0.0
    file: str = ""  #: its payload file's name in the store directory ("" outside a store)
    hits: int = 0  #: lookups that matched it, persisted with the index
    last_use: float = 0.0  #: time of the last such lookup

    def encode(self) -> bytes:
        """Its index record: JSON, ancestors as one string of 40-character keys."""
        doc = {name: getattr(self, name) for name in _STORED}
        doc["ancestors"] = "".join(self.ancestors)
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Entry":
        """The entry an index record holds (records written by earlier versions too)."""
        doc = json.loads(raw)
        chained = doc.get("ancestors", "")
        doc["ancestors"] = tuple(chained[i : i + 40] for i in range(0, len(chained), 40))
        return cls(**{name: doc[name] for name in _STORED if name in doc})


def entry_from_header(header: Header, name: str) -> Entry:
    """The entry of the payload file ``name`` whose header is ``header``."""
    return Entry(
        key=header.key, file=name, tokens=header.tokens, size=header.file_size, parent=header.parent,
        anchor=header.anchor, ancestors=tuple(header.ancestors), is_tail=header.is_tail,
        priority=header.priority, inserted_at=header.inserted_at, last_use=header.inserted_at,
    )
