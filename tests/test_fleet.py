"""The fleet in the simulator (``kvsim simulate --engines N --shared-capacity X``):
its shared tier decides as the Redis scripts do, a fleet of real stores on a
real Redis Cluster loads what it predicts, request by request, and the
command line shows what sharing saves."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from kvstore.keys import Namespace, PrefixKeys
from kvstore.testing.tiers import _header
from kvstore.tiers import SharedTier
from simulator.costmodel import Profile
from simulator.fleet import SharedModel, fleet
from simulator.generators.openclaw import OpenClawConfig, generate
from simulator.keyed import KeyedTrace
from simulator.replay import ReplayConfig, replay
from simulator.store_backend import StoreFleetBackend
from simulator.trace import scaled
from tests.conftest import fresh

TINY = Profile("tiny", "", prefill_tps=100.0, context_halving=1e9, decode_tps=10.0, disk_read_bps=1e9,
               kv_bytes_per_token=8.0, fixed_bytes=64, load_latency_s=0.0)


def test_the_shared_model_evicts_what_the_redis_scripts_evict(cluster):
    rng = random.Random(7)
    ns = Namespace(fresh())
    tier = SharedTier(cluster.url, 40_000, namespace=ns, block_tokens=4, timeout=5.0)
    model = SharedModel(40_000, protect_tokens=4)
    system = [9, 9, 9, 9]
    prompts: list[PrefixKeys] = []
    try:
        for step in range(300):
            if prompts and rng.random() < 0.3:  # a lookup that matched: its use recorded
                prefix = rng.choice(prompts)
                found = tier.longest_match(prefix)
                assert found == model.longest_match(prefix), f"step {step}"
                if found is not None:
                    tier.record_hit(found[1])
                    tier.flush()  # the touch is sent in the background; the next write follows it
                    model.touch(found[1])
                continue
            tokens = system + [rng.randrange(1000) for _ in range(rng.choice([0, 4, 8]) + rng.randrange(0, 4))]
            prefix = PrefixKeys(ns, tokens, 4)
            prompts.append(prefix)
            for n in [*range(4, len(tokens) + 1, 4), *([len(tokens)] if len(tokens) % 4 else [])]:
                payload = rng.randbytes(rng.randrange(500, 6000))
                header = _header(ns, prefix, n, payload, 0.0)
                assert tier.write(header, payload) == model.publish(
                    header.key, tokens=n, size=len(payload), parent=header.parent, anchor=header.anchor), f"step {step}"
            held = {key for key in model.entries}
            assert all(key in tier for key in held), f"step {step}"
            assert tier.stats()["entries"] == len(held) and tier.stats()["bytes"] == model.used_bytes
        assert model.evictions > 50 and model.evictions == tier.stats()["evictions"]
    finally:
        tier.close()


def small_trace(seed: int, sessions: int = 6) -> list:
    """A generated OpenClaw trace at a tenth of the tokens (prompts of 1-4k tokens)."""
    return list(scaled(generate(OpenClawConfig(sessions=sessions, seed=seed)), 0.1))


@pytest.mark.parametrize("route, seed, shared_hits", [("request", 11, 50), ("session", 12, 1)])
def test_a_fleet_of_real_stores_on_a_real_cluster_loads_what_the_simulator_predicts(cluster, tmp_path, route, seed,
                                                                                         shared_hits):
    requests = small_trace(seed)
    config = ReplayConfig(capacity_bytes=3 << 20, policy="prefix-chain", profile=TINY, block_tokens=256,
                          namespace=fresh("fleet"), index_bytes=1 << 20)
    shared_bytes = 400_000
    predicted, measured = [], []
    sim = replay(requests, config, backend=fleet(engines=3, shared_bytes=shared_bytes, route=route),
                 on_request=lambda r: predicted.append((r.loaded_tokens, r.tier)))
    paths = [str(tmp_path / f"engine{i}") for i in range(3)]
    real = replay(requests, config, backend=StoreFleetBackend.at(paths, cluster.url, shared_bytes, route=route),
                  on_request=lambda r: measured.append((r.loaded_tokens, r.tier)))
    assert measured == predicted
    assert sum(1 for _, tier in measured if tier == "shared") >= shared_hits  # the shared tier mattered
    assert real.evictions == sim.evictions and sim.evictions > 0


def test_one_engine_without_a_shared_tier_is_exactly_the_plain_replay():
    requests = small_trace(3, sessions=8)
    config = ReplayConfig(capacity_bytes=2 << 20, policy="prefix-chain", profile=TINY, block_tokens=256)
    keys = KeyedTrace.build(requests, block_tokens=256, namespace=config.namespace, write_tail=True)
    plain, alone = [], []
    a = replay(None, config, keys=keys, on_request=lambda r: plain.append(r.loaded_tokens))
    b = replay(None, config, keys=keys, backend=fleet(engines=1), on_request=lambda r: alone.append(r.loaded_tokens))
    assert plain == alone and a.as_dict() == b.as_dict() and a.evictions > 0


def test_engine_tags_route_requests_and_sessions_hashed_otherwise(tmp_path):
    requests = small_trace(4, sessions=6)
    for i, request in enumerate(requests):
        request.tags["engine"] = "left" if i % 3 else "right"
    config = ReplayConfig(capacity_bytes=2 << 20, policy="lru", profile=TINY, block_tokens=256)
    report: dict = {}
    replay(requests, config, backend=fleet(engines=2, report=report))
    # tags are numbered in order of first appearance: "right" (request 0) is engine 0
    assert report["requests_per_engine"] == [sum(1 for i in range(len(requests)) if not i % 3),
                                             sum(1 for i in range(len(requests)) if i % 3)]
    keys = KeyedTrace.build(requests, block_tokens=256, namespace=config.namespace, write_tail=True)
    keyed: dict = {}
    replay(None, config, keys=keys, backend=fleet(engines=2, report=keyed))
    assert keyed["requests_per_engine"] == report["requests_per_engine"]
    for request in requests:
        del request.tags["engine"]
    hashed: dict = {}
    replay(requests, config, backend=fleet(engines=3, report=hashed))
    assert sum(hashed["requests_per_engine"]) == len(requests) and min(hashed["requests_per_engine"]) > 0


def kvsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True, text=True,
                          timeout=300, env={"COLUMNS": "80", "PATH": ""})


def test_kvsim_simulate_engines_shows_what_the_shared_tier_saves():
    trace = "traces/openclaw-strip-history.jsonl"
    done = kvsim("simulate", trace, "--engines", "4", "--capacity", "5%", "--shared-capacity", "20%",
                 "--route", "request", "--json")
    assert done.returncode == 0, done.stderr
    without, with_shared = json.loads(done.stdout)
    assert without["engines"] == with_shared["engines"] == 4 and "shared_capacity_bytes" not in without
    assert with_shared["shared_hits"] > 0 and with_shared["shared_bytes"] <= with_shared["shared_capacity_bytes"]
    assert with_shared["reprefill_seconds"] < 0.8 * without["reprefill_seconds"]
    table = kvsim("simulate", trace, "--engines", "4", "--capacity", "5%", "--shared-capacity", "20%")
    assert table.returncode == 0, table.stderr
    assert "sessions hashed to engines" in table.stdout and "saved" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


@pytest.mark.parametrize("args, message", [
    (["--engines", "2", "--shared-capacity", "abc%"], "--shared-capacity 'abc%'"),
    (["--engines", "2", "--policy", "belady"], "offline reference cannot run in a fleet"),
    (["--engines", "2", "--backend", "store", "--store-dir", "/tmp/x"], "--backend manager only"),
    (["--engines", "2", "--layout", "chained"], "snapshot layout only"),
])
def test_kvsim_fleet_errors_name_the_flag_before_any_work(args, message):
    done = kvsim("simulate", "traces/openclaw-strip-history.jsonl", "--capacity", "5%", *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    zero = kvsim("simulate", "traces/openclaw-strip-history.jsonl", "--capacity", "5%", "--engines", "0")
    assert zero.returncode == 2 and "--engines" in zero.stderr
