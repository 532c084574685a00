"""Trace format v1: JSON Lines, one request per line.

Each line is an object::

    {"session": "s1", "t": 12.5, "prompt": [["sys", 15000], ["u1", 420]], "output": 240,
     "tags": {"kind": "tool"}}

- ``session`` (str): the conversation the request belongs to;
- ``t`` (number >= 0): arrival time in seconds; lines are sorted by it;
- ``prompt``: spans ``[content_id, n_tokens]``: the first ``n_tokens`` tokens of
  the content named ``content_id`` (a str). Two prompts share exactly the
  tokens of their equal leading spans, and of a common leading part of the
  first span where they differ (the same content, cut at different lengths);
- ``output`` (int >= 0): tokens the engine decodes;
- ``tags`` (optional object): free-form labels (scenario, call kind...).

A first line ``{"format": "kvsim-trace", "version": 1, ...}`` is an optional
header; other keys in it (``generator``, ``command``...) document provenance.

>>> import io
>>> buf = io.StringIO()
>>> write_trace(buf, [Request("s", 0.0, (("sys", 10),), 5)])
1
>>> next(iter(read_trace(io.StringIO(buf.getvalue())))).prompt_tokens
10
"""

from __future__ import annotations

import dataclasses

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["Request", "TraceError", "read_trace", "write_trace", "load_trace", "no_requests", "json_lines",
           "FORMAT", "VERSION"]

FORMAT = "kvsim-trace"
VERSION = 1


class TraceError(ValueError):
    """A trace line is malformed; the message names the line and the field."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        where = [f"line {line}"] if line is not None else []
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a trace."""

    session: str
    t: float
    prompt: tuple[tuple[str, int], ...]
    output: int = 0
    tags: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def prompt_tokens(self) -> int:
        return sum(n for _, n in self.prompt)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"session": self.session, "t": self.t,
                               "prompt": [[c, n] for c, n in self.prompt], "output": self.output}
        if self.tags:
            doc["tags"] = self.tags
        return doc


def _parse(doc: Any, line: int) -> Request:
    if not isinstance(doc, dict):
        raise TraceError(f"expected a JSON object, got {type(doc).__name__}", line=line)
    unknown = set(doc) - {"session", "t", "prompt", "output", "tags"}
    if unknown and {"hash_ids", "input_length"} <= set(doc):
        raise TraceError("this is a Mooncake trace, not a kvsim trace: convert it first with "
                         "`kvsim import mooncake FILE --block-size 512 -o TRACE.jsonl`", line=line)
    if unknown:
        raise TraceError(f"unknown field(s) {sorted(unknown)}", line=line, field=sorted(unknown)[0])
    session = doc.get("session")
    if not isinstance(session, str) or not session:
        raise TraceError("must be a non-empty string", line=line, field="session")
    t = doc.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise TraceError(f"must be a finite number >= 0, got {t!r}", line=line, field="t")
    prompt = doc.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise TraceError("must be a non-empty list of [content_id, n_tokens] spans", line=line, field="prompt")
    spans = []
    for i, span in enumerate(prompt):
        if (not isinstance(span, list) or len(span) != 2 or not isinstance(span[0], str) or not span[0]
                or isinstance(span[1], bool) or not isinstance(span[1], int) or span[1] <= 0):
            raise TraceError(f"span {i} must be [content_id (non-empty str), n_tokens (int > 0)], "
                             f"got {span!r}", line=line, field="prompt")
        spans.append((span[0], span[1]))
    output = doc.get("output", 0)
    if isinstance(output, bool) or not isinstance(output, int) or output < 0:
        raise TraceError(f"must be an int >= 0, got {output!r}", line=line, field="output")
    tags = doc.get("tags", {})
    if not isinstance(tags, dict):
        raise TraceError("must be an object", line=line, field="tags")
    return Request(session, float(t), tuple(spans), output, tags)


def json_lines(source: IO[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed document)`` of every non-blank line; a line that
    is not JSON raises :class:`TraceError` naming it."""
    for number, text in enumerate(source, start=1):
        text = text.strip()
        if not text:
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"not valid JSON: {exc.msg}", line=number) from None


def read_trace(source: IO[str] | str) -> Iterator[Request]:
    """Yield the requests of a trace (a path or an open text file), validating
    every line; raises :class:`TraceError` naming the line and field."""
    if isinstance(source, str):
        with open(source, encoding="utf-8") as fh:
            try:
                yield from read_trace(fh)
            except UnicodeDecodeError as exc:
                raise TraceError(f"{source} is not a text trace (byte {exc.object[exc.start]:#04x} at "
                                 f"offset {exc.start} of a line is not UTF-8)") from None
            except TraceError as exc:
                raise TraceError(f"{source}: {exc}") from None
        return
    last_t = -1.0
    for number, doc in json_lines(source):
        if isinstance(doc, dict) and doc.get("format") == FORMAT:
            if doc.get("version") != VERSION:
                raise TraceError(f"unsupported version {doc.get('version')!r}", line=number, field="version")
            continue
        request = _parse(doc, number)
        if request.t < last_t:
            raise TraceError(f"arrival times must not decrease ({request.t} after {last_t})",
                             line=number, field="t")
        last_t = request.t
        yield request


def scaled(requests: Iterable[Request], factor: float) -> Iterator[Request]:
    """The same requests with every span's token count times ``factor`` (at
    least 1 token), so an agent workload fits a small model's context; what
    two prompts share stays shared.

    >>> [r.prompt for r in scaled([Request("s", 0.0, (("sys", 12_000), ("u", 5)))], 0.1)]
    [(('sys', 1200), ('u', 1))]
    """
    if not 0 < factor < float("inf"):
        raise ValueError(f"scale must be a number > 0, got {factor!r}")
    for request in requests:
        yield dataclasses.replace(request, prompt=tuple((c, max(1, round(n * factor))) for c, n in request.prompt),
                                  output=max(0, round(request.output * factor)))


def load_trace(path: str) -> list[Request]:
    """All requests of a trace file; a file with none (empty, or a header only)
    is an error naming it."""
    requests = list(read_trace(path))
    if not requests:
        raise no_requests(path)
    return requests


def no_requests(path: str) -> TraceError:
    """The error for a trace file that holds no request."""
    return TraceError(f"{path} holds no requests (an empty file, or a header line only)")


def write_trace(sink: IO[str] | str, requests: Iterable[Request], **provenance: Any) -> int:
    """Write requests (with a header line carrying ``provenance``); return the count."""
    if isinstance(sink, str):
        with open(sink, "w", encoding="utf-8") as fh:
            return write_trace(fh, requests, **provenance)
    sink.write(json.dumps({"format": FORMAT, "version": VERSION, **provenance}) + "\n")
    count = 0
    for request in requests:
        sink.write(json.dumps(request.to_json(), separators=(",", ":")) + "\n")
        count += 1
    return count
