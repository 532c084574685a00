"""The eight scenarios of the OpenClaw turn report, replayed under the 7B profile.

Each scenario is a short session on the report's 15,700-token base prompt;
scenarios 2–8 start from a warm store (a priming call, not reported), as in
the report where ollama kept the KV warm between calls. The engine checkpoints
every 256 tokens plus the exact end of each prompt. A call is a ``HIT`` when it
reloads any prefix from the store, a ``MISS`` when it prefills from token 0.

Scenario 8's base prompt is the report's agent tape: a short system message
(the report: "cache invalid from position 30 onward") followed by the tool
chain that compaction replaces by a summary.

>>> [s.number for s in SCENARIOS]
[1, 2, 3, 4, 5, 6, 7, 8]
"""

from __future__ import annotations

from dataclasses import dataclass

from .costmodel import PROFILES
from .replay import ReplayConfig, RequestResult, replay
from .trace import Request

__all__ = ["Scenario", "SCENARIOS", "run_scenarios"]

BASE = 15_700
BLOCK = 256


@dataclass(frozen=True)
class Scenario:
    number: int
    name: str
    expected: str  #: the report's pattern, e.g. "HIT HIT HIT"
    prime: tuple[tuple[tuple[str, int], ...], ...]  #: warm-up prompts (not reported)
    calls: tuple[tuple[tuple[str, int], ...], ...]


def _base(tag: str = "base") -> list[tuple[str, int]]:
    return [("system", 1_200), (f"{tag}/tools+history", BASE - 1_200)]


def _grow(prompt: list[tuple[str, int]], *parts: tuple[str, int]) -> tuple[tuple[str, int], ...]:
    prompt.extend(parts)
    return tuple(prompt)


def _scenarios() -> list[Scenario]:
    out = []
    out.append(Scenario(1, "cold prime", "MISS", (), (tuple(_base()),)))
    p = _base()
    prime = tuple(p)
    calls = tuple(_grow(p, (f"u{i}", 120), (f"a{i}", 60)) for i in range(3))
    out.append(Scenario(2, "plain chat append (3 turns)", "HIT HIT HIT", (prime,), calls))
    p = _base()
    out.append(Scenario(3, "tool-turn attempt", "HIT", (tuple(p),), (_grow(p, ("tool-ask", 150)),)))
    p = _base()
    out.append(Scenario(4, "retrieval inlined in the user message", "HIT", (tuple(p),),
                        (_grow(p, ("u-rag", 80), ("doc-4kb", 1_000)),)))
    p = _base()
    prime = tuple(p)
    calls = tuple(_grow(p, (f"s5u{i}", 150), (f"s5a{i}", 90)) for i in range(6))
    out.append(Scenario(5, "session growth, 6 turns", " ".join(["HIT"] * 6), (prime,), calls))
    p = _base()
    spliced = (("system-head", 40), ("rag-snippet", 1_000), ("system-rest", 1_160),
               ("base/tools+history", BASE - 1_200), ("u6", 100))
    out.append(Scenario(6, "retrieval spliced into the system message", "MISS", (tuple(p),), (spliced,)))
    p = _base()
    prime = tuple(p)
    calls = [_grow(p, ("s7u", 100))]
    for i in range(4):
        calls.append(_grow(p, (f"s7call{i}", 60), (f"s7result{i}", 700)))
    out.append(Scenario(7, "search + fetch + write (5 calls, 4 tools)", " ".join(["HIT"] * 5), (prime,),
                        tuple(calls)))
    tape = [("s8/system", 30), ("s8/tool-chain", BASE - 30)]
    prime = tuple(tape)
    turn0 = _grow(tape, ("s8/user0", 200), ("s8/assistant0", 300))
    turn1 = (("s8/system", 30), ("s8/summary", 1_500), ("s8/user0", 200), ("s8/assistant0", 300),
             ("s8/tool-chain-2", BASE - 1_500), ("s8/user1", 200))
    out.append(Scenario(8, "agentic flow + auto-compaction + follow-up", "HIT MISS", (prime,),
                        (turn0, turn1)))
    return out


SCENARIOS = _scenarios()


def run_scenarios(profile: str = "qwen7b-laptop") -> list[dict]:
    """Replay every scenario on a fresh store; one dict per scenario."""
    results = []
    for scenario in SCENARIOS:
        requests = [Request("warm", float(i), prompt, 0, {"warmup": True}) for i, prompt in enumerate(scenario.prime)]
        start = len(requests)
        requests += [Request("s", float(start + i), prompt, 0) for i, prompt in enumerate(scenario.calls)]
        calls: list[RequestResult] = []
        replay(requests, ReplayConfig(capacity_bytes=1 << 40, policy="prefix-chain",
                                      profile=PROFILES[profile], block_tokens=BLOCK),
               on_request=calls.append)
        results.append({
            "scenario": scenario.number, "name": scenario.name, "expected": scenario.expected,
            "calls": [{"outcome": "HIT" if c.loaded_tokens else "MISS", "ttft": round(c.ttft, 3),
                       "loaded_tokens": c.loaded_tokens, "prefill_tokens": c.prefill_tokens} for c in calls],
        })
    return results
