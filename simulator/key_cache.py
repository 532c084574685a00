"""A sweep's hashed keys, kept beside its ``--results`` file until it finishes,
so a sweep resumed after a crash (or a Ctrl-C) does not hash the trace again.

Hashing is the one pass every run of a sweep waits for: about a minute and a
half for a million requests with ``--jobs 2``. The keys go to
``FILE.jsonl.keys/``, written under ``.partial`` and renamed once complete,
with the trace's content (SHA-1 of the file) beside them; the keys' own
metadata records their block size, namespace and tails. A later sweep maps
them only when all of these match; otherwise it hashes again and replaces
them. The sweep removes them once every run it was asked for is
on file, since the results alone are what a finished sweep needs.

>>> import os, tempfile
>>> from simulator.trace import Request
>>> from simulator.keyed import KeyedTrace
>>> keys = KeyedTrace.build([Request("s", 0.0, (("sys", 9),))], block_tokens=4)
>>> cache = KeyCache(os.path.join(tempfile.mkdtemp(), "runs.jsonl.keys"), trace_sha1="ab" * 20,
...                  block_tokens=4, namespace="kvsim", write_tail=True)
>>> cache.load() is None
True
>>> cache.save(keys)
>>> len(cache.load())
1
>>> KeyCache(cache.directory, trace_sha1="cd" * 20, block_tokens=4, namespace="kvsim",
...          write_tail=True).load() is None  # another trace's keys are not used
True
>>> KeyCache(cache.directory, trace_sha1="ab" * 20, block_tokens=8, namespace="kvsim",
...          write_tail=True).load() is None  # nor keys of another block size
True
"""

from __future__ import annotations

import json
import os
import shutil

from .keyed import KeyedTrace

__all__ = ["KeyCache"]

_SCOPE_FILE = "scope.json"


class KeyCache:
    """One directory of saved keys and the trace they were computed from.

    :param directory: where the keys live (``FILE.jsonl.keys`` beside a results file).
    :param trace_sha1: the trace file's SHA-1 (see :func:`simulator.results_log.file_sha1`).
    """

    def __init__(self, directory: str, *, trace_sha1: str, block_tokens: int, namespace: str,
                 write_tail: bool) -> None:
        self.directory = directory
        self._scope = {"trace_sha1": trace_sha1}
        self._settings = {"block_tokens": block_tokens, "namespace": namespace, "write_tail": write_tail}

    def load(self) -> KeyedTrace | None:
        """The saved keys, mapped read-only, if they are this trace's with these
        settings; ``None`` otherwise (missing, another scope, or not readable). O(1)."""
        try:
            with open(os.path.join(self.directory, _SCOPE_FILE), encoding="utf-8") as fh:
                if json.load(fh) != self._scope:
                    return None
            keys = KeyedTrace.load(self.directory)
            keys.check_matches(**self._settings)  # (as a replay checks them, from the keys' metadata)
            return keys
        except (OSError, ValueError):
            return None

    def save(self, keys: KeyedTrace) -> None:
        """Write ``keys`` and their trace's SHA-1 under ``DIRECTORY.partial``, then put it
        in place of any older keys. O(size of the keys)."""
        partial = self.directory + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        keys.save(partial)
        with open(os.path.join(partial, _SCOPE_FILE), "w", encoding="utf-8") as fh:
            json.dump(self._scope, fh)
        self.remove()
        os.rename(partial, self.directory)

    def remove(self) -> None:
        """Delete the saved keys, if any."""
        shutil.rmtree(self.directory, ignore_errors=True)
