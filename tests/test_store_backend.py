"""The simulator makes exactly the store's decisions.

The same trace is replayed twice at the same capacity: by the simulator
(the eviction manager counting bytes) and through a real CheckpointStore
(payload files of the profile's sizes written to disk, the trace's time as
the store's clock). Every request must load the same number of tokens, and
the two must agree on the bytes written and the evictions.
"""

import json

import pytest

from policies import Policy
from simulator.cli import main as kvsim
from simulator.costmodel import Profile
from simulator.generators.openclaw import OpenClawConfig, generate
from simulator.replay import ReplayConfig, replay, working_set_bytes
from simulator.store_backend import StoreBackend
from simulator.trace import write_trace

# a profile small enough to write every checkpoint for real: 4 bytes per token
TINY = Profile("tiny", "4 bytes per token", prefill_tps=300.0, context_halving=30_000.0, decode_tps=20.0,
               disk_read_bps=500e6, kv_bytes_per_token=4.0, fixed_bytes=4096, load_latency_s=0.01)
BLOCK = 512
INDEX = 8 << 20  # roomy: the index never crowds, as with real checkpoint sizes


class SmallestFirst(Policy):
    """A user's policy, unregistered: evicts the smallest checkpoint first."""

    name = "smallest-first"

    def __init__(self):
        self._eligible = set()

    def on_eligible(self, key, eligible):
        (self._eligible.add if eligible else self._eligible.discard)(key)

    def on_remove(self, key):
        self._eligible.discard(key)

    def victim(self, now):
        return min(self._eligible, key=lambda k: (self.view.entry(k).size, k), default=None)


TRACES = {
    "strip-history": OpenClawConfig(sessions=8, turns=(3, 6), session_gap_s=40, seed=21),
    "tail-carrier": OpenClawConfig(sessions=8, turns=(3, 6), client="tail-carrier", session_gap_s=40, seed=22),
}


def both(requests, layout, policy, share, tmp_path):
    ws = working_set_bytes(requests, ReplayConfig(capacity_bytes=1, policy="lru", profile=TINY,
                                                  layout=layout, block_tokens=BLOCK))
    config = ReplayConfig(capacity_bytes=INDEX + int(ws * share), policy=policy, profile=TINY, layout=layout,
                          block_tokens=BLOCK, index_bytes=INDEX)
    simulated, stored = [], []
    sim = replay(requests, config, on_request=simulated.append)
    if isinstance(policy, Policy):  # a fresh instance of the user's policy for the second run
        config.policy = type(policy)()
    real = replay(requests, config, on_request=stored.append, backend=StoreBackend.at(str(tmp_path / "store")))
    return sim, real, simulated, stored


@pytest.mark.parametrize("trace", sorted(TRACES))
@pytest.mark.parametrize("layout", ["snapshot", "chained"])
@pytest.mark.parametrize("policy", ["lru", "prefix-chain", "gdsf", "user"])
def test_simulator_and_store_load_the_same_tokens_request_by_request(tmp_path, trace, layout, policy):
    requests = generate(TRACES[trace])
    policy = SmallestFirst() if policy == "user" else policy
    sim, real, simulated, stored = both(requests, layout, policy, 0.15, tmp_path)
    assert sim.evictions > 20  # under pressure
    assert [r.loaded_tokens for r in stored] == [r.loaded_tokens for r in simulated]
    assert (real.bytes_written, real.evictions) == (sim.bytes_written, sim.evictions)
    assert real.reprefill_seconds == pytest.approx(sim.reprefill_seconds)


def test_kvsim_simulate_backend_store_writes_the_same_per_request_lines(tmp_path):
    trace = str(tmp_path / "t.jsonl")
    write_trace(trace, generate(OpenClawConfig(sessions=4, turns=(2, 4), session_gap_s=40, seed=23)))
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.tiny]\ndescription = "4 bytes per token"\nprefill_tps = 300.0\n'
                        'context_halving = 30000.0\ndecode_tps = 20.0\ndisk_read_bps = 500e6\n'
                        'kv_bytes_per_token = 4.0\nfixed_bytes = 4096\nload_latency_s = 0.01\n')
    lines = {}
    for backend in ("manager", "store"):
        out = tmp_path / f"{backend}.jsonl"
        args = ["simulate", trace, "--capacity", "20MiB", "--index-bytes", "8MiB", "--policy", "lru",
                "--profile", "tiny",
                "--profiles-file", str(profiles), "--block-tokens", str(BLOCK), "--requests", str(out), "--json"]
        if backend == "store":
            args += ["--backend", "store", "--store-dir", str(tmp_path / "store")]
        assert kvsim(args) == 0
        lines[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines["store"] == lines["manager"] and len(lines["store"]) > 5
    with pytest.raises(SystemExit):
        kvsim(["simulate", trace, "--capacity", "12MiB", "--backend", "store"])  # needs --store-dir
