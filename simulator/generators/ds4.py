"""The DS4 #444 scenario: a full store of stale files, then a live session
whose client rewrites the tail of its ~35k-token prompt every turn.

- Warm-up (tagged ``warmup``, excluded from metrics): ``stale_sessions`` older
  sessions (an earlier agent version, so another system prompt), each one
  long prompt of 38–50k tokens, together several times the store (the report:
  256 GB, hundreds of stale files, only large ones left).
- Live: one session of ``turns`` turns. Each prompt is the stable history
  (about 33,800 tokens, growing ~80 per turn) plus the active user message,
  decorated with metadata that the client strips once it is history; so turn
  ``k+1`` diverges from turn ``k`` near token 34,000 and the longest stored
  prefix that still matches is the 32,768-token checkpoint.

>>> reqs = generate(Ds4Config(stale_sessions=2, turns=3))
>>> sum(1 for r in reqs if not r.tags.get("warmup")), max(r.prompt_tokens for r in reqs) > 35_000
(3, True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..trace import Request

__all__ = ["Ds4Config", "generate"]


@dataclass
class Ds4Config:
    stale_sessions: int = 150
    stale_tokens: tuple[int, int] = (38_000, 50_000)
    turns: int = 8
    system_tokens: int = 12_500
    stable_tokens: int = 33_800
    growth_per_turn: int = 80
    active_tokens: int = 1_000
    seed: int = 444


def generate(cfg: Ds4Config) -> list[Request]:
    rng = random.Random(cfg.seed)
    system = ("agent/system", cfg.system_tokens)
    requests: list[Request] = []
    t = 0.0
    for s in range(cfg.stale_sessions):  # stale sessions: one long prefill each
        old_system = ("agent-v0/system", cfg.system_tokens)
        history = (f"old{s}/history", rng.randint(*cfg.stale_tokens) - cfg.system_tokens)
        requests.append(Request(f"old{s}", round(t, 1), (old_system, history), 200, {"warmup": True}))
        t += rng.uniform(60, 600)
    t += 8 * 3600  # the live session starts hours later: everything above is stale
    history = [("live/history", cfg.stable_tokens - cfg.system_tokens)]
    for turn in range(cfg.turns):
        active = (f"live/u{turn}+meta", cfg.active_tokens)
        requests.append(Request("live", round(t, 1), (system, *history, active), 300,
                                {"turn": turn}))
        history.append((f"live/u{turn}+a{turn}", cfg.growth_per_turn))  # stripped user + reply
        t += rng.uniform(120, 600)
    return requests
