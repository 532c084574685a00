"""Prompts hashed into the store's keys, in this process or in worker processes.

:meth:`simulator.keyed.KeyedTrace.build` decides which keys each prompt needs
(its aligned prefixes, the earlier prompt ends it may extend, its own end) and
numbers them in trace order; this module computes them, the part of the pass
that materialises tokens and runs SHA-1. :class:`PromptHasher` does it here;
:func:`hash_batches` with ``jobs > 1`` spreads the sessions over that many
spawned processes, each with a hasher of its own, and hands the digests back
in the order of the batches. A key is a function of a prompt's tokens alone,
so which process hashes a prompt, and from which earlier prompt it resumes,
never changes a digest.

>>> hasher = PromptHasher("kvsim", block_tokens=4)
>>> digests = hasher.digests("s", (("sys", 9),), [9])  # key(0), key(4), key(8), then key(9)
>>> len(digests) // 20
4
>>> batches = [[("s", (("sys", 9),), [9])], [("t", (("sys", 9), ("u", 2)), [9, 11])]]
>>> [d for batch in hash_batches(batches, "kvsim", 4, jobs=1) for d in batch][0] == digests
True
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import traceback
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from kvstore.keys import Namespace, PrefixKeys

from .tokens import TokenMaterializer

__all__ = ["PromptHasher", "hash_batches", "DIGEST_BYTES"]

#: bytes of one key's digest (SHA-1)
DIGEST_BYTES = 20

#: sessions whose last prompt is kept to resume hashing from (about 100 KB each)
_RECENT_SESSIONS = 256

#: batches a worker may have queued beyond the one it hashes (work ahead while the parent numbers keys)
_AHEAD = 2

#: one item of a batch: (session, spans, lengths past the aligned ones to hash)
Item = tuple[str, tuple, Sequence[int]]


def _likeliest_base(spans: tuple, *bases) -> tuple[tuple | None, int, int, int]:
    """Of earlier prompts ``(spans, PrefixKeys)``, the one sharing the most
    leading tokens with ``spans`` by their spans (a session's previous prompt,
    or the last one hashed for a shared system prompt): ``(base, shared tokens,
    index of the first span not wholly shared, its tokens shared)``;
    ``(None, 0, 0, 0)`` if none shares any."""
    best = (None, 0, 0, 0)
    for base in bases:
        if base is None:
            continue
        shared = index = partial = 0
        for (content, n), (other, m) in zip(spans, base[0]):
            if content != other:
                break
            if n != m:
                partial = min(n, m)
                break
            shared += n
            index += 1
        if shared + partial > best[1]:
            best = (base, shared + partial, index, partial)
    return best


class PromptHasher:
    """The store's keys of prompts, each hashed from the earlier prompt it shares
    the most with (its session's last, or the last one hashed): only its new
    tokens are materialised and hashed.

    Runtime complexity: O(new tokens) hashing per prompt, plus O(block) per
    length asked that is not aligned.
    """

    def __init__(self, namespace: str, block_tokens: int) -> None:
        self._ns = Namespace(namespace)
        self._block = block_tokens
        self._tokens_of = TokenMaterializer()
        self._recent: OrderedDict[str, tuple[tuple, PrefixKeys]] = OrderedDict()
        self._previous: tuple[tuple, PrefixKeys] | None = None

    def digests(self, session: str, spans: tuple, lengths: Sequence[int]) -> bytes:
        """SHA-1 digests of the prompt's aligned prefixes (``key(0)``, ``key(block)``,
        … up to its length), then of its prefixes of ``lengths``, 20 bytes each."""
        recent = self._recent
        base, shared, index, partial = _likeliest_base(spans, recent.get(session), self._previous)
        if base is None:
            prefix = PrefixKeys(self._ns, self._tokens_of.tokens(spans), self._block)
        else:  # the shared tokens from the earlier prompt, the rest materialised
            rest = [self._tokens_of.content(content, n) for content, n in spans[index:]]
            if rest and partial:
                rest[0] = rest[0][partial:]
            prefix = PrefixKeys.extending(base[1], np.concatenate([base[1].tokens[:shared], *rest]))
        self._previous = recent[session] = (spans, prefix)
        recent.move_to_end(session)
        if len(recent) > _RECENT_SESSIONS:
            recent.popitem(last=False)
        aligned = range(0, len(prefix) + 1, self._block)
        return bytes.fromhex("".join(prefix.keys_at([*aligned, *lengths])))


def _serve(inbox, outbox, namespace: str, block_tokens: int) -> None:
    """A worker: hash each batch from ``inbox`` into ``outbox`` (a list of digests
    per batch) until ``None``, or until the parent is gone (killed, it sends
    nothing more); on an error, send its traceback as text and stop."""
    hasher = PromptHasher(namespace, block_tokens)
    parent = multiprocessing.parent_process()
    try:
        while True:
            try:
                batch = inbox.get(timeout=1.0)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
            if batch is None:
                return
            outbox.put([hasher.digests(*item) for item in batch])
    except BaseException:  # (the parent raises it: a worker must not die silently)
        outbox.put(traceback.format_exc())


class _Workers:
    """``jobs`` hashing processes; a session always goes to the same one, so it
    resumes from its own last prompt there."""

    def __init__(self, jobs: int, namespace: str, block_tokens: int) -> None:
        context = multiprocessing.get_context("spawn")  # (a fork would copy the parent's tables)
        self._inboxes = [context.Queue() for _ in range(jobs)]
        self._outboxes = [context.Queue() for _ in range(jobs)]
        self._processes = [context.Process(target=_serve, args=(inbox, outbox, namespace, block_tokens),
                                           name=f"kvsim-hash-{i}", daemon=True)
                           for i, (inbox, outbox) in enumerate(zip(self._inboxes, self._outboxes))]
        for process in self._processes:
            process.start()
        self._worker_of: dict[str, int] = {}

    def submit(self, batch: list[Item]) -> list[int]:
        """Send each item to its session's worker; return which worker has each."""
        workers, worker_of = len(self._inboxes), self._worker_of
        route = [worker_of.setdefault(item[0], len(worker_of) % workers) for item in batch]
        parts: list[list[Item]] = [[] for _ in range(workers)]
        for item, worker in zip(batch, route):
            parts[worker].append(item)
        for inbox, part in zip(self._inboxes, parts):
            inbox.put(part)
        return route

    def collect(self, route: list[int]) -> list[bytes]:
        """The digests of a batch :meth:`submit` sent, in the batch's order."""
        parts = [iter(self._receive(worker)) for worker in range(len(self._outboxes))]
        return [next(parts[worker]) for worker in route]

    def _receive(self, worker: int) -> list[bytes]:
        while True:
            try:
                answer = self._outboxes[worker].get(timeout=1.0)
                break
            except queue.Empty:
                process = self._processes[worker]
                if not process.is_alive():
                    raise RuntimeError(f"hashing process {process.name} died (exit code {process.exitcode})") from None
        if isinstance(answer, str):
            raise RuntimeError(f"hashing process {self._processes[worker].name} failed:\n{answer}")
        return answer

    def close(self, *, finished: bool = True) -> None:
        """End the workers: when ``finished``, once they have read the stop sign;
        otherwise (an error, Ctrl-C, SIGTERM, a caller that stopped reading) at once."""
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(timeout=5 if finished else 0)
            if process.is_alive():  # (stopped early: it may still be hashing, or sending digests no one reads)
                process.kill()
                process.join()
        for q in (*self._inboxes, *self._outboxes):
            q.close()
            q.cancel_join_thread()  # (nothing left worth waiting for: the workers are gone)


def hash_batches(batches: Iterable[list[Item]], namespace: str, block_tokens: int, *,
                 jobs: int = 1) -> Iterator[list[bytes]]:
    """Each batch's digests (:meth:`PromptHasher.digests` of every item), in order.

    With ``jobs > 1`` and more than one batch, ``jobs`` spawned processes hash
    them while this one goes on preparing batches and using digests; a single
    batch is hashed here (starting processes would cost more). Batches are
    read ahead of the digests handed back, up to ``jobs + 1`` at a time."""
    batches = iter(batches)
    first = next(batches, None)
    second = next(batches, None) if first is not None else None
    if jobs <= 1 or second is None:
        hasher = PromptHasher(namespace, block_tokens)
        for batch in itertools.chain((b for b in (first, second) if b is not None), batches):
            yield [hasher.digests(*item) for item in batch]
        return
    workers = _Workers(jobs, namespace, block_tokens)
    finished = False
    try:
        in_flight: deque[list[int]] = deque()
        for batch in (first, second):
            in_flight.append(workers.submit(batch))
        for batch in batches:
            if len(in_flight) > _AHEAD:
                yield workers.collect(in_flight.popleft())
            in_flight.append(workers.submit(batch))
        while in_flight:
            yield workers.collect(in_flight.popleft())
        finished = True
    finally:
        workers.close(finished=finished)
