"""Generator of OpenClaw-like agent sessions (multi-session, seeded).

Shaped by the field reports:

- a 12–16k-token system prompt (persona + tool definitions) shared by every
  session, as two contents so that retrieval can be spliced into it;
- per turn a user message, then 0..k tool calls, each request extending the
  previous one exactly (assistant tool call + tool result), then the reply;
- the client's treatment of volatile metadata (``client``):
  ``strip-history`` decorates the active user message and strips it once it
  is history, so each turn diverges at the previous user message;
  ``tail-carrier`` carries it in a runtime-context message at the tail only;
  ``append-only`` is a well-behaved client;
- retrieval inlined in the user message (it stays in history) or, with
  probability ``splice_rate``, spliced into the system message near its top
  (a miss from there on);
- auto-compaction: once the history passes ``compact_at`` tokens, the tool
  chain and old turns are replaced by a summary right after the system prompt;
- sessions start at random times and interleave; think time between turns,
  tool latency between calls.

>>> reqs = generate(OpenClawConfig(sessions=2, turns=(2, 2), seed=1))
>>> len({r.session for r in reqs}), all(a.t <= b.t for a, b in zip(reqs, reqs[1:]))
(2, True)
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..trace import Request

__all__ = ["OpenClawConfig", "generate", "iter_generate", "CLIENTS"]

CLIENTS = ("strip-history", "tail-carrier", "append-only")


@dataclass
class OpenClawConfig:
    """Knobs of the generator (all token counts are ranges drawn uniformly)."""

    sessions: int = 20
    turns: tuple[int, int] = (4, 12)
    client: str = "strip-history"
    system_tokens: tuple[int, int] = (12_000, 16_000)
    user_tokens: tuple[int, int] = (50, 600)
    metadata_tokens: tuple[int, int] = (200, 2_000)
    tool_calls: tuple[int, int] = (0, 5)
    tool_result_tokens: tuple[int, int] = (200, 3_000)
    reply_tokens: tuple[int, int] = (80, 600)
    retrieval_rate: float = 0.3
    retrieval_tokens: tuple[int, int] = (1_000, 4_000)
    splice_rate: float = 0.05
    compact_at: int = 40_000
    summary_tokens: tuple[int, int] = (800, 2_500)
    session_gap_s: float = 600.0
    think_time_s: float = 60.0
    tool_latency_s: tuple[float, float] = (2.0, 15.0)
    seed: int = 0
    extra_tags: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}, got {self.client!r}")
        if self.sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {self.sessions}")
        for name in ("turns", "system_tokens", "user_tokens", "metadata_tokens", "tool_calls",
                     "tool_result_tokens", "reply_tokens", "retrieval_tokens", "summary_tokens"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range lo..hi with 0 <= lo <= hi, got {lo}..{hi}")
        for name in ("retrieval_rate", "splice_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _session(cfg: OpenClawConfig, index: int, start: float, system: tuple, rng: random.Random) -> list[Request]:
    sid = f"s{index}"
    draw = lambda bounds: rng.randint(*bounds)  # noqa: E731
    history: list[tuple[str, int]] = []
    requests: list[Request] = []
    t = start
    for turn in range(draw(cfg.turns)):
        tags = {"turn": turn, **cfg.extra_tags}
        if sum(n for _, n in history) > cfg.compact_at:
            history = [(f"{sid}/summary{turn}", draw(cfg.summary_tokens))]
            tags["compacted"] = True
        head = list(system)
        if rng.random() < cfg.splice_rate:  # retrieval spliced into the system message
            head = [system[0], (f"{sid}/sysrag{turn}", draw(cfg.retrieval_tokens)), system[1]]
            tags["retrieval"] = "system"
        user = [(f"{sid}/u{turn}", draw(cfg.user_tokens))]
        if rng.random() < cfg.retrieval_rate:
            user.append((f"{sid}/doc{turn}", draw(cfg.retrieval_tokens)))
            tags.setdefault("retrieval", "user")
        meta = (f"{sid}/meta{turn}", draw(cfg.metadata_tokens))
        if cfg.client == "strip-history":  # the active message carries the metadata inline
            active = [(f"{sid}/u{turn}+meta", user[0][1] + meta[1]), *user[1:]]
            tail: list[tuple[str, int]] = []
        elif cfg.client == "tail-carrier":
            active, tail = list(user), [meta]
        else:
            active, tail = list(user), []
        chain: list[tuple[str, int]] = []  # tool calls and results of this turn so far
        calls = draw(cfg.tool_calls)
        for call in range(calls + 1):  # each request extends the previous one exactly
            prompt = tuple(head + history + active + chain + tail)
            requests.append(Request(sid, round(t, 3), prompt, draw(cfg.reply_tokens),
                                    {**tags, "call": call}))
            if call < calls:
                chain += [(f"{sid}/t{turn}c{call}", rng.randint(20, 120)),
                          (f"{sid}/t{turn}r{call}", draw(cfg.tool_result_tokens))]
                t += rng.uniform(*cfg.tool_latency_s)
        history = history + user + chain + [(f"{sid}/a{turn}", draw(cfg.reply_tokens))]
        t += rng.expovariate(1.0 / cfg.think_time_s) + 20.0
    return requests


def generate(cfg: OpenClawConfig) -> list[Request]:
    """All requests of ``cfg.sessions`` interleaved sessions, sorted by arrival
    (the list of :func:`iter_generate`)."""
    return list(iter_generate(cfg))


def iter_generate(cfg: OpenClawConfig) -> Iterator[Request]:
    """The requests of :func:`generate`, in the same order, one at a time: memory
    holds the sessions still running, not the trace.

    The order is that of a stable sort of every session's requests by arrival
    time: ties go to the session started first, then to the earlier request
    of a session. Sessions are generated in the order they start and merged
    on a heap; a session is opened once no request still to come can arrive
    before it. Runtime complexity: O(log open sessions) per request.

    >>> cfg = OpenClawConfig(sessions=3, seed=1)
    >>> lazily = iter_generate(cfg)
    >>> next(lazily) == generate(cfg)[0]
    True
    """
    rng = random.Random(cfg.seed)
    sys_tokens = rng.randint(*cfg.system_tokens)
    splice_at = rng.randint(200, 800)  # the persona header before the retrieval slot
    system = (("system/head", splice_at), ("system/tools", sys_tokens - splice_at))
    running: list[tuple[float, int, int, list[Request]]] = []  # (next arrival, session, position, its requests)
    start, opened = 0.0, 0
    while running or opened < cfg.sessions:
        # open every session that starts by the earliest pending arrival. One that
        # starts later arrives no earlier: arrivals are rounded to 1 ms, the pending
        # one too, and a tie goes to the session opened first
        while opened < cfg.sessions and (not running or start <= running[0][0]):
            session = _session(cfg, opened, start, system, random.Random(rng.getrandbits(64)))
            if session:
                heapq.heappush(running, (session[0].t, opened, 0, session))
            opened += 1
            start += rng.expovariate(1.0 / cfg.session_gap_s)
        if not running:
            continue
        _, index, position, session = running[0]
        yield session[position]
        if position + 1 < len(session):
            heapq.heapreplace(running, (session[position + 1].t, index, position + 1, session))
        else:
            heapq.heappop(running)
