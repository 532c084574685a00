"""One checkpoint, three views: its file header, its index record, its entry
in the eviction manager. These converters are the only place that maps one
onto another, so a field added to one is added to all.

>>> from kvstore.fileformat import Header
>>> h = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=8, payload_len=5, checksum=0,
...            ancestors=("cd" * 20,), parent="cd" * 20)
>>> entry = entry_from_header(h, "file")
>>> (entry.tokens, entry.size == h.file_size, entry.ancestors, entry.extra["file"])
(8, True, ('cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd',), 'file')
"""

from __future__ import annotations

from .eviction import Entry
from .fileformat import Header
from .index import EntryRecord

__all__ = ["record_from_header", "entry_from_header", "entry_from_record"]


def record_from_header(header: Header, name: str) -> EntryRecord:
    """The index record of the file ``name`` whose header is ``header``."""
    return EntryRecord(
        key=header.key, file=name, tokens=header.tokens, size=header.file_size,
        parent=header.parent, anchor=header.anchor, ancestors="".join(header.ancestors),
        is_tail=header.is_tail, priority=header.priority, inserted_at=header.inserted_at,
        last_use=header.inserted_at,
    )


def entry_from_header(header: Header, name: str) -> Entry:
    """The eviction manager's entry for the file ``name`` whose header is ``header``."""
    return entry_from_record(record_from_header(header, name))


def entry_from_record(record: EntryRecord) -> Entry:
    """The eviction manager's entry for an index record."""
    return Entry(
        key=record.key, tokens=record.tokens, size=record.size, parent=record.parent,
        ancestors=record.ancestor_keys(), is_tail=record.is_tail, anchor=record.anchor,
        priority=record.priority, inserted_at=record.inserted_at, extra={"file": record.file},
    )
