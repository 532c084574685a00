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
    """Write a per-checkpoint object trace for libCacheSim's CSV reader; return
    the number of rows.

    Columns ``time,key,size,request,tokens,warmup``: every request looks up,
    shortest first, each aligned checkpoint of its prompt, the end of its
    session's previous prompt when this prompt extends it (the tail an engine
    matches after a tool call), and its own end — with the size kvsim counts
    for each file. ``request`` (0-based) and ``tokens`` map a row back to its
    request and the prefix it would load; ``warmup`` marks rows that fill the
    cache but are left out of kvsim's metrics. Read it with
    ``ReaderInitParam(has_header=True, delimiter=",", time_field=1,
    obj_id_field=2, obj_size_field=3)`` — libCacheSim's default reader takes
    every row as object 0 of size 1.
    """
    writer = csv.writer(sink)
    writer.writerow(["time", "key", "size", "request", "tokens", "warmup"])
    ns = Namespace(config.namespace)
    tokens_of = TokenMaterializer()
    previous: dict[str, tuple[int, str]] = {}  # session -> (tokens, key) of its last prompt's end
    rows = 0
    for index, request in enumerate(requests):
        prefix = PrefixKeys(ns, tokens_of.tokens(request.prompt), config.block_tokens)
        total = len(prefix)
        lengths = config.checkpoint_lengths(total)
        last = previous.get(request.session)
        if last is not None and last[0] < total and last[0] % config.block_tokens and \
                prefix.key(last[0]) == last[1]:
            lengths = sorted(set(lengths) | {last[0]})
        warmup = int(bool(request.tags.get("warmup")))
        for n in lengths:
            writer.writerow([f"{request.t:.3f}", int(prefix.key(n)[:15], 16), config.entry_bytes(n),
                             index, n, warmup])
            rows += 1
        previous[request.session] = (total, prefix.key(total))
    return rows
