"""A sweep's finished runs on disk, one JSON line each, so a crash loses only
the runs in flight and the same command picks up where it stopped.

A line is written, flushed and synced as each run finishes. It names what the
run depends on: the trace's content (SHA-1 of the file), the settings shared by
the sweep (the profile's figures, not just its name; layout, block size,
tails, session hints, index slice), kvsim's version, and the run's own policy
and capacity as the user wrote it. A later sweep reuses a line only when all of
these match; lines of other traces or settings stay in the file untouched. A
last line cut short by a crash is dropped when the file is opened again.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "runs.jsonl")
>>> log = ResultsLog(path, trace_sha1="ab" * 20, settings={"layout": "snapshot"})
>>> log.finished()
{}
>>> log.append({"policy": "lru", "capacity": "5%", "loaded_tokens": 7})
>>> ResultsLog(path, trace_sha1="ab" * 20, settings={"layout": "snapshot"}).finished()
{('lru', '5%'): {'policy': 'lru', 'capacity': '5%', 'loaded_tokens': 7}}
>>> ResultsLog(path, trace_sha1="cd" * 20, settings={"layout": "snapshot"}).finished()  # another trace
{}
"""

from __future__ import annotations

import hashlib
import json
import os

__all__ = ["ResultsLog", "file_sha1"]


def file_sha1(path: str, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes, read in chunks (about 1 s per GB)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ResultsLog:
    """The finished runs of sweeps, appended to ``path`` (a JSON Lines file).

    :param trace_sha1: the trace file's :func:`file_sha1`.
    :param settings: what every run of this sweep shares (JSON-serialisable).
    """

    def __init__(self, path: str, *, trace_sha1: str, settings: dict) -> None:
        from kvstore import __version__

        self.path = path
        self.trace_sha1 = trace_sha1
        self._scope = {"trace_sha1": trace_sha1, "settings": settings, "kvsim": __version__}
        self._scope_text = json.dumps(self._scope, sort_keys=True)
        self._finished: dict[tuple[str, str], dict] = {}
        self.working_set_bytes: int | None = None  #: the trace's working set, as the runs on file saw it
        self.other_lines = 0  #: lines of other traces, settings or versions, kept as they are
        self.dropped_tail = False  #: a last line cut short (a crash mid-write) was dropped
        if os.path.exists(path):
            self._read()

    def _read(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        good = data.rfind(b"\n") + 1  # a line is complete only once its newline is written
        if good < len(data):
            self.dropped_tail = True
            with open(self.path, "r+b") as fh:  # append after the last whole line
                fh.truncate(good)
        for number, raw in enumerate(data[:good].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                scope, result = line["scope"], line["result"]
                cell = (result["policy"], result["capacity"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{self.path}:{number}: not a line of a kvsim results file") from None
            if json.dumps(scope, sort_keys=True) == self._scope_text:
                self._finished[cell] = result
                self.working_set_bytes = line.get("working_set_bytes", self.working_set_bytes)
            else:
                self.other_lines += 1

    def finished(self) -> dict[tuple[str, str], dict]:
        """``{(policy, capacity label): result}`` of the runs this sweep can reuse. O(1)."""
        return dict(self._finished)

    def append(self, result: dict, working_set_bytes: int | None = None) -> None:
        """Write one finished run (and the working set its capacity is a share of)
        and sync it to disk. O(size of the result)."""
        line = json.dumps({"scope": self._scope, "result": result, "working_set_bytes": working_set_bytes}) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._finished[(result["policy"], result["capacity"])] = result
        if working_set_bytes is not None:
            self.working_set_bytes = working_set_bytes

    def describe(self, reused: int, total: int) -> str:
        """One line for stderr: what was reused and what was not."""
        parts = [f"{self.path}: {reused} of {total} runs already finished"]
        if self.other_lines:
            parts.append(f"{self.other_lines} lines of other traces or settings kept")
        if self.dropped_tail:
            parts.append("a last line cut short by a crash dropped")
        return "; ".join(parts)
