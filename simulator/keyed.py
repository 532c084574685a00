"""A trace's prefix keys, computed once and kept as compact integer ids.

Replaying a trace asks the same questions of every policy and capacity: the
keys of each prompt's aligned prefixes, of its end (a tail), and of the tails
earlier prompts left that this prompt extends. :class:`KeyedTrace` answers them
in one pass over the trace, with the store's own keys (``kvstore.keys``): every
distinct SHA1 key gets a small integer id, in order of first appearance, and
the replay works on those ids. Two prompts get the same id for a length exactly
when the store would give them the same key, so a replayed decision is still
the engine's.

Everything lives in flat numpy arrays (a few dozen bytes a request plus eight a
key), which :meth:`KeyedTrace.save` writes as ``.npy`` files (no pickle) and
:meth:`KeyedTrace.load` maps back without reading them: the worker processes
of a sweep share one copy through the page cache.

>>> from simulator.trace import Request
>>> reqs = [Request("s", 0.0, (("sys", 9),)), Request("s", 1.0, (("sys", 9), ("u", 3)))]
>>> kt = KeyedTrace.build(reqs, block_tokens=4)
>>> [len(kt.prompt(i)) for i in range(len(kt))]
[9, 12]
>>> kt.prompt(1).key(8) == kt.prompt(0).key(8), kt.prompt(1).key(9) == kt.prompt(0).key(9)
(True, True)
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from kvstore.keys import AlignedChain

from .blend import BlendTracker, reusable_tokens
from .prompt_hashing import DIGEST_BYTES, hash_batches
from .trace import Request

__all__ = ["KeyedTrace", "KeyedPrompt", "RequestInfo", "UNKNOWN_KEY"]

#: the id :meth:`KeyedPrompt.key` returns for a length no stored key can match
UNKNOWN_KEY = -1

_ARRAYS = ("t", "session", "engine", "warmup", "total", "aligned_start", "aligned_ids", "tail_start", "tail_len",
           "tail_ids", "blend_start", "blend_pos", "blend_end", "blend_cap", "id_tokens")
_FORMAT = "kvsim-keys"
_VERSION = 2


#: requests per batch sent to hashing (see :mod:`simulator.prompt_hashing`)
_BATCH = 2000
#: requests whose arrays :meth:`KeyedTrace.rows` reads into lists at once
_ROWS_AT_ONCE = 4096


class _Ends:
    """Prompt ends seen so far, found again by the span their last token is in.

    A later prompt extends an end of ``n`` tokens exactly when its first ``n``
    tokens are that prompt's, and then its token ``n - 1`` is the same token
    of the same content as the end's: a span of that content starting where
    the end's last span started. So the ends are kept under ``(content, where
    its span starts)``, and a prompt asks only under its own spans: the
    candidates it returns include every end the prompt extends (its keys then
    decide which it does; two contents drawing the same tokens for a whole
    prefix is the chance of a SHA-1 collision).

    >>> ends = _Ends()
    >>> ends.add((("sys", 9), ("u1", 3)))        # an end of 12 tokens, in u1 from 9
    >>> ends.extended_by((("sys", 9), ("u1", 5)))  # u1 again from 9, past its 3rd token
    [12]
    >>> ends.extended_by((("sys", 9), ("u2", 5))), ends.extended_by((("u1", 5),))
    ([], [])

    Runtime complexity: O(1) per add, O(spans + candidates) per question,
    whatever the number of ends (one per session under a shared system
    prompt on agent traces).
    """

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: dict[tuple[str, int], list[int]] = {}  # (content, its span's start) -> end lengths

    def add(self, spans: tuple) -> None:
        """Note the end of a prompt of ``spans``. O(spans)."""
        start = total = 0
        last = None
        for content, n in spans:
            if n > 0:
                last, start = content, total
                total += n
        if last is None:
            return
        lengths = self._at.get((last, start))
        if lengths is None:
            self._at[(last, start)] = [total]
        elif total not in lengths:
            lengths.append(total)

    def extended_by(self, spans: tuple) -> list[int]:
        """Lengths of the ends whose last token a prompt of ``spans`` has at the
        same place from the same content: every end it extends (keys decide
        which). O(spans + candidates)."""
        found: list[int] = []
        position = 0
        at = self._at
        for content, n in spans:
            lengths = at.get((content, position))
            position += n
            if lengths is not None:
                found.extend(length for length in lengths if length <= position)
        return found


class KeyedPrompt(AlignedChain):
    """One prompt's keys as integer ids, with the interface of
    :class:`kvstore.keys.PrefixKeys` that the eviction manager uses.

    Aligned lengths and the prompt's end are always known; a tail length is
    known when an earlier prompt of the trace ended there with these tokens.
    Any other length returns :data:`UNKNOWN_KEY`, which equals no stored key:
    no checkpoint of that length exists anywhere in the trace.

    Runtime complexity: O(1) per key, O(blocks) per ``ancestor_keys``.
    """

    __slots__ = ("_keys", "_tails", "_total", "block_tokens")

    def __init__(self, aligned: list[int], tails: dict[int, int], total: int, block_tokens: int) -> None:
        self._keys = aligned  # id of key(i * block_tokens) at index i, from key(0)
        self._tails = tails  # tail length -> id
        self._total = total
        self.block_tokens = block_tokens

    def __len__(self) -> int:
        return self._total

    def key(self, n_tokens: int) -> int:
        index, rest = divmod(n_tokens, self.block_tokens)
        if rest == 0:
            return self._keys[index]
        return self._tails.get(n_tokens, UNKNOWN_KEY)

    def longest_tail(self, anchor: int, tails: dict) -> tuple[int, int] | None:
        """The longest of ``tails`` (stored at ``anchor``) this prompt extends:
        only the tails it knows can match, so only those are looked up.
        O(known tails), usually one or two."""
        best = None
        end = anchor + self.block_tokens
        for n, key in self._tails.items():
            if anchor < n < end and tails.get(key) == n and (best is None or n > best[0]):
                best = (n, key)
        return best

    def known_tails(self) -> dict[int, int]:
        """Tail lengths this prompt has a key for (its end and matched earlier ends)."""
        return dict(self._tails)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a replay needs of a request besides its keys."""

    session: str
    t: float
    warmup: bool
    engine: str | None = None  #: the trace's ``engine`` tag: which engine of a fleet served it


class KeyedTrace:
    """Integer-id keys of every request of a trace, built once.

    :meth:`build` is O(prompt tokens) hashing per request (the floor: keys must
    be computed) plus O(1) per earlier tail a prompt may extend; every later
    question is O(1) or O(blocks).
    """

    def __init__(self, arrays: dict[str, np.ndarray], sessions: list[str], meta: dict) -> None:
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"key arrays missing: {', '.join(missing)}")
        self._a = arrays
        self.sessions = sessions
        self.namespace: str = meta["namespace"]
        self.block_tokens: int = int(meta["block_tokens"])
        self.write_tail: bool = bool(meta["write_tail"])
        self.source: str = meta.get("source", "")
        self.engines: list[str] = list(meta.get("engines", []))  #: the trace's ``engine`` tags, by id

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, requests: Iterable[Request], *, block_tokens: int = 4096, namespace: str = "kvsim",
              write_tail: bool = True, source: str = "",
              progress=None, jobs: int = 1) -> "KeyedTrace":
        """Hash every prompt of ``requests`` once; ``progress(n)`` is called
        every 1,000 requests. With ``jobs > 1`` that many processes hash the
        prompts (:func:`simulator.prompt_hashing.hash_batches`) while this one
        reads the trace and numbers the keys: the same arrays, sooner."""
        ids: dict[bytes, int] = {}
        id_tokens: list[int] = []
        ends = _Ends()  # every prompt end so far, by the span of its last token
        session_ids: dict[str, int] = {}
        engine_ids: dict[str, int] = {}
        blend = BlendTracker()
        cols = {name: [] for name in ("t", "session", "engine", "warmup", "total", "aligned_ids", "tail_len", "tail_ids",
                                      "blend_pos", "blend_end", "blend_cap")}
        aligned_start, tail_start, blend_start = [0], [0], [0]
        waiting: deque[tuple[int, list[int], bool]] = deque()  # per request sent to hash: total, candidates, own end

        def batches() -> Iterator[list]:
            """What each request needs hashed, in batches; everything that does not
            need its keys is recorded here (this runs ahead of the hashing)."""
            batch = []
            for request in requests:
                spans = request.prompt
                total = sum(n for _, n in spans)
                candidates = ends.extended_by(spans)  # earlier ends this prompt may extend
                own = bool(write_tail and total % block_tokens)
                if own:
                    ends.add(spans)
                waiting.append((total, candidates, own))
                batch.append((request.session, spans, [*candidates, total] if own else candidates))
                cols["t"].append(request.t)
                cols["session"].append(session_ids.setdefault(request.session, len(session_ids)))
                cols["warmup"].append(bool(request.tags.get("warmup")))
                engine = request.tags.get("engine")
                cols["engine"].append(-1 if engine is None else engine_ids.setdefault(str(engine), len(engine_ids)))
                cols["total"].append(total)
                reusable = blend.candidates(spans)
                for start, end, cap in reusable:
                    cols["blend_pos"].append(start)
                    cols["blend_end"].append(end)
                    cols["blend_cap"].append(cap)
                blend_start.append(blend_start[-1] + len(reusable))
                if len(batch) == _BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def intern(digest: bytes, tokens: int) -> int:
            found = ids.get(digest)
            if found is None:
                found = ids[digest] = len(id_tokens)
                id_tokens.append(tokens)
            return found

        count = 0
        for digests in hash_batches(batches(), namespace, block_tokens, jobs=jobs):
            for blob in digests:  # (ids are numbered here, in trace order, whoever hashed the prompt)
                total, candidates, own = waiting.popleft()
                blocks = total // block_tokens
                aligned = [intern(blob[i * DIGEST_BYTES: (i + 1) * DIGEST_BYTES], i * block_tokens)
                           for i in range(blocks + 1)]
                tails: dict[int, int] = {}
                at = (blocks + 1) * DIGEST_BYTES
                for n in candidates:
                    found = ids.get(blob[at: at + DIGEST_BYTES])
                    if found is not None:
                        tails[n] = found
                    at += DIGEST_BYTES
                if own:
                    tails[total] = intern(blob[at: at + DIGEST_BYTES], total)
                cols["aligned_ids"].extend(aligned)
                aligned_start.append(aligned_start[-1] + len(aligned))
                for n in sorted(tails):
                    cols["tail_len"].append(n)
                    cols["tail_ids"].append(tails[n])
                tail_start.append(tail_start[-1] + len(tails))
                count += 1
                if progress is not None and count % 1000 == 0:
                    progress(count)
        arrays = {
            "t": np.asarray(cols["t"], dtype=np.float64),
            "session": np.asarray(cols["session"], dtype=np.int64),
            "warmup": np.asarray(cols["warmup"], dtype=np.bool_),
            "engine": np.asarray(cols["engine"], dtype=np.int64),
            "total": np.asarray(cols["total"], dtype=np.int64),
            "aligned_start": np.asarray(aligned_start, dtype=np.int64),
            "aligned_ids": np.asarray(cols["aligned_ids"], dtype=np.int64),
            "tail_start": np.asarray(tail_start, dtype=np.int64),
            "tail_len": np.asarray(cols["tail_len"], dtype=np.int64),
            "tail_ids": np.asarray(cols["tail_ids"], dtype=np.int64),
            "blend_start": np.asarray(blend_start, dtype=np.int64),
            "blend_pos": np.asarray(cols["blend_pos"], dtype=np.int64),
            "blend_end": np.asarray(cols["blend_end"], dtype=np.int64),
            "blend_cap": np.asarray(cols["blend_cap"], dtype=np.int64),
            "id_tokens": np.asarray(id_tokens, dtype=np.int64),
        }
        if progress is not None:
            progress(count)
        return cls(arrays, list(session_ids), {"namespace": namespace, "block_tokens": block_tokens,
                                                "write_tail": write_tail, "source": source,
                                                "engines": list(engine_ids)})

    # ------------------------------------------------------------- questions
    def __len__(self) -> int:
        return len(self._a["total"])

    @property
    def key_count(self) -> int:
        """Distinct keys of the trace (aligned prefixes and prompt ends)."""
        return len(self._a["id_tokens"])

    @property
    def nbytes(self) -> int:
        """Bytes the arrays take."""
        return sum(int(a.nbytes) for a in self._a.values())

    def info(self, i: int) -> RequestInfo:
        a = self._a
        engine = int(a["engine"][i])
        return RequestInfo(self.sessions[int(a["session"][i])], float(a["t"][i]), bool(a["warmup"][i]),
                           self.engines[engine] if engine >= 0 else None)

    def prompt(self, i: int) -> KeyedPrompt:
        """The keys of request ``i``. O(blocks)."""
        return next(self._prompts(i, i + 1))

    def _prompts(self, lo: int, hi: int) -> Iterator[KeyedPrompt]:
        """The keys of requests ``lo`` to ``hi - 1``, their arrays read into lists
        at once (read request by request, they cost more than the rest of a
        prompt). O(blocks) per request."""
        a, block = self._a, self.block_tokens
        totals = a["total"][lo:hi].tolist()
        aligned_at, tails_at = a["aligned_start"][lo:hi + 1].tolist(), a["tail_start"][lo:hi + 1].tolist()
        aligned = a["aligned_ids"][aligned_at[0]:aligned_at[-1]].tolist()
        tail_len = a["tail_len"][tails_at[0]:tails_at[-1]].tolist()
        tail_ids = a["tail_ids"][tails_at[0]:tails_at[-1]].tolist()
        a0, t0 = aligned_at[0], tails_at[0]
        for j in range(hi - lo):
            first, last = tails_at[j] - t0, tails_at[j + 1] - t0
            tails = dict(zip(tail_len[first:last], tail_ids[first:last])) if last > first else {}
            yield KeyedPrompt(aligned[aligned_at[j] - a0:aligned_at[j + 1] - a0], tails, totals[j], block)

    def blend_tokens(self, i: int, loaded: int) -> int:
        """Tokens past ``loaded`` a CacheBlend-style engine could reuse: content
        seen before, at another position. O(spans)."""
        a = self._a
        lo, hi = int(a["blend_start"][i]), int(a["blend_start"][i + 1])
        if hi == lo:
            return 0
        return reusable_tokens(zip(a["blend_pos"][lo:hi].tolist(), a["blend_end"][lo:hi].tolist(),
                                   a["blend_cap"][lo:hi].tolist()), loaded)

    def rows(self) -> Iterator[tuple[RequestInfo, KeyedPrompt]]:
        """Every request's info and keys, in trace order, read a few thousand
        requests at a time. O(blocks) per request."""
        a, sessions = self._a, self.sessions
        t, session, warmup = a["t"].tolist(), a["session"].tolist(), a["warmup"].tolist()
        engine, engines = a["engine"].tolist(), self.engines + [None]  # -1 (no tag) picks None
        for lo in range(0, len(self), _ROWS_AT_ONCE):
            for i, prompt in enumerate(self._prompts(lo, min(len(self), lo + _ROWS_AT_ONCE)), lo):
                yield RequestInfo(sessions[session[i]], t[i], warmup[i], engines[engine[i]]), prompt

    def last_request_of_sessions(self) -> dict[str, int]:
        """Each session's last request index."""
        session = self._a["session"]
        last = np.full(len(self.sessions), -1, dtype=np.int64)
        last[session] = np.arange(len(session))
        return {name: int(last[i]) for i, name in enumerate(self.sessions)}

    def lengths_of_ids(self) -> np.ndarray:
        """Tokens of the prefix each id names (read-only view)."""
        return self._a["id_tokens"]

    def working_set_bytes(self, entry_bytes) -> int:
        """Bytes of every distinct checkpoint with unlimited space, each sized by
        ``entry_bytes(tokens)``. O(distinct lengths)."""
        lengths, counts = np.unique(self._a["id_tokens"], return_counts=True)
        return sum(entry_bytes(int(n)) * int(c) for n, c in zip(lengths, counts) if n > 0)

    def check_matches(self, *, block_tokens: int, namespace: str, write_tail: bool) -> None:
        """Raise ``ValueError`` unless these keys were built with these settings."""
        for name, mine, theirs in (("block_tokens", self.block_tokens, block_tokens),
                                   ("namespace", self.namespace, namespace),
                                   ("write_tail", self.write_tail, write_tail)):
            if mine != theirs:
                raise ValueError(f"keys were built with {name}={mine!r}, the replay asks for {theirs!r}")

    # ---------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Write the arrays as ``.npy`` files and a ``meta.json`` into ``directory``."""
        os.makedirs(directory, exist_ok=True)
        for name, array in self._a.items():
            np.save(os.path.join(directory, f"{name}.npy"), array, allow_pickle=False)
        meta = {"format": _FORMAT, "version": _VERSION, "namespace": self.namespace,
                "block_tokens": self.block_tokens, "write_tail": self.write_tail, "source": self.source,
                "sessions": self.sessions, "engines": self.engines}
        with open(os.path.join(directory, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "KeyedTrace":
        """Map keys saved by :meth:`save` (read-only, shared through the page cache)."""
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{directory}: not a kvsim key directory of version {_VERSION}")
        # plain ndarray views of the maps: indexing a memmap object costs ten times more
        arrays = {name: np.asarray(np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r",
                                           allow_pickle=False)) for name in _ARRAYS}
        return cls(arrays, meta["sessions"], meta)
