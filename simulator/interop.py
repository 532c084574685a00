"""Importers of public traces and exporters to other simulators.

Mooncake / FAST'25 format: one JSON object per line with ``timestamp`` (ms),
``input_length``, ``output_length`` and ``hash_ids`` — one id per block of
``block_size`` tokens, the last block possibly partial. Equal hash ids at equal
positions mean equal tokens, so each block becomes a span of content
``h<id>`` (the ids are already chained hashes of the prefix).

>>> import io
>>> line = '{"timestamp": 0, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]}'
>>> [r.prompt for r in import_mooncake(io.StringIO(line), block_size=512)]
[(('h1', 512), ('h2', 188))]
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import IO

from kvstore.keys import Namespace, PrefixKeys

from .replay import ReplayConfig
from .tokens import TokenMaterializer
from .trace import Request, TraceError, json_lines

__all__ = ["import_mooncake", "export_libcachesim"]


def import_mooncake(source: IO[str], *, block_size: int = 512, session_field: str | None = None) -> Iterator[Request]:
    """Requests from a Mooncake-format JSONL stream; errors name line and field."""
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    for number, doc in json_lines(source):
        if not isinstance(doc, dict):
            raise TraceError("expected a JSON object", line=number)
        for name in ("timestamp", "input_length", "output_length", "hash_ids"):
            if name not in doc:
                raise TraceError("missing", line=number, field=name)
        ts, n_in, n_out, ids = doc["timestamp"], doc["input_length"], doc["output_length"], doc["hash_ids"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0:
            raise TraceError(f"must be a number >= 0, got {ts!r}", line=number, field="timestamp")
        for name, value in (("input_length", n_in), ("output_length", n_out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TraceError(f"must be an int >= 0, got {value!r}", line=number, field=name)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TraceError("must be a list of ints", line=number, field="hash_ids")
        needed = -(-n_in // block_size)
        if len(ids) != needed:
            raise TraceError(f"has {len(ids)} ids, but input_length {n_in} needs {needed} blocks of "
                             f"{block_size} (is --block-size right?)", line=number, field="hash_ids")
        if n_in == 0:
            continue
        spans = tuple((f"h{i}", block_size) for i in ids[:-1]) + ((f"h{ids[-1]}", n_in - block_size * (needed - 1)),)
        session = str(doc.get(session_field, number)) if session_field else f"r{number}"
        yield Request(session, ts / 1000.0, spans, n_out)


def export_libcachesim(requests: Iterable[Request], sink: IO[str], config: ReplayConfig) -> int:
    """Write a per-checkpoint object trace (CSV: ``time,key,size``) that
    libCacheSim's CSV reader takes: every request looks up each checkpoint key
    of its prompt, in order, with the size the cost model gives it. Returns the
    number of rows."""
    writer = csv.writer(sink)
    writer.writerow(["time", "key", "size"])
    ns = Namespace(config.namespace)
    tokens_of = TokenMaterializer()
    rows = 0
    for request in requests:
        prefix = PrefixKeys(ns, tokens_of.tokens(request.prompt), config.block_tokens)
        for n in config.checkpoint_lengths(len(prefix)):
            writer.writerow([f"{request.t:.3f}", int(prefix.key(n)[:15], 16), config.entry_bytes(n)])
            rows += 1
    return rows
