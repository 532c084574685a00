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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO


from .keyed import KeyedTrace
from .replay import ReplayConfig
from .trace import Request, TraceError, json_lines

__all__ = ["import_mooncake", "export_libcachesim", "replay_libcachesim", "EXPORT_COLUMNS", "EngineReplayResult"]


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


EXPORT_COLUMNS = ("time", "key", "size", "request", "tokens", "warmup", "tail")


def export_libcachesim(requests: Iterable[Request] | None, sink: IO[str], config: ReplayConfig, *,
                       keys: KeyedTrace | None = None) -> int:
    """Write a per-checkpoint object trace for libCacheSim's CSV reader; return
    the number of rows.

    One row per key a request touches, shortest first: each aligned prefix of
    its prompt, each earlier prompt's end it extends (the tail an engine
    matches after a tool call), and its own end. Columns:
    ``time,key,size,request,tokens,warmup,tail`` — ``key`` is the key's integer
    id (equal ids exactly when the store's keys are equal), ``size`` the bytes
    kvsim counts for its file, ``request`` (0-based) and ``tokens`` map the row
    back to its request and the prefix it would load, ``warmup`` marks rows
    kvsim leaves out of its metrics, ``tail`` marks keys that are not block
    aligned.

    Read by libCacheSim's own reader (``ReaderInitParam(has_header=True,
    has_header_set=True, delimiter=",")`` with ``time_field, obj_id_field,
    obj_size_field = 1, 2, 3``; its default reader takes every row as object 0
    of size 1), every row is a get
    that admits on a miss: a cache's view of the workload. An engine only
    writes what lies past the prefix it loaded; :func:`replay_libcachesim`
    drives any libCacheSim cache that way and loads the tokens kvsim does.
    """
    if keys is None:
        keys = KeyedTrace.build(requests, block_tokens=config.block_tokens, namespace=config.namespace,
                                write_tail=config.write_tail)
    keys.check_matches(block_tokens=config.block_tokens, namespace=config.namespace, write_tail=config.write_tail)
    writer = csv.writer(sink)
    writer.writerow(EXPORT_COLUMNS)
    rows = 0
    for index, (info, prompt) in enumerate(keys.rows()):
        lengths = prompt.aligned_lengths + sorted(prompt.known_tails())
        lengths.sort()
        time = f"{info.t:.3f}"
        warmup = int(info.warmup)
        for n in lengths:
            writer.writerow((time, prompt.key(n), config.entry_bytes(n), index, n, warmup,
                             int(n % config.block_tokens != 0)))
        rows += len(lengths)
    return rows


@dataclass
class EngineReplayResult:
    """What :func:`replay_libcachesim` measured (warm-up requests excluded)."""

    requests: int = 0
    loaded_tokens: int = 0
    per_request: list[int] = field(default_factory=list, repr=False)  # tokens loaded, every request


def replay_libcachesim(rows: Iterable[Sequence[str]], cache) -> EngineReplayResult:
    """Drive a libCacheSim ``cache`` (``libcachesim.LRU(cache_size=...)``...)
    through rows of :func:`export_libcachesim` (without the header) the way
    kvsim's engine uses its store: per request, load the longest stored
    prefix (a hit on it, then on its stored aligned ancestors, shortest
    first), then write each checkpoint past it that is not stored (a get that
    admits it, evicting as the cache chooses).

    >>> import io, csv
    >>> from libcachesim import LRU  # doctest: +SKIP
    >>> # replay_libcachesim(list(csv.reader(io.StringIO(text)))[1:], LRU(cache_size=budget))

    Runtime complexity: O(rows) cache operations.
    """
    import libcachesim

    result = EngineReplayResult()
    req = libcachesim.Request()

    def present(row, touch: bool) -> bool:
        req.obj_id, req.obj_size, req.clock_time = row[1], row[2], row[0]
        return cache.find(req, update_cache=touch) is not None

    def flush(group: list) -> None:
        if not group:
            return
        stored = [row for row in group if present(row, False)]
        match = max(stored, key=lambda row: row[4]) if stored else None
        loaded = match[4] if match else 0
        if match is not None:
            present(match, True)
            for row in stored:  # its stored aligned ancestors, shortest first
                if not row[6] and row[4] < loaded:
                    present(row, True)
        total = group[-1][4]
        for row in group:
            if row[4] > loaded and (not row[6] or row[4] == total) and not present(row, False):
                cache.get(req)  # (present() left this row in req)
        if not group[0][5]:
            result.requests += 1
            result.loaded_tokens += loaded
        result.per_request.append(loaded)

    group: list = []
    for raw in rows:
        row = (int(float(raw[0])), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), int(raw[5]), int(raw[6]))
        if group and row[3] != group[0][3]:
            flush(group)
            group = []
        group.append(row)
    flush(group)
    return result
