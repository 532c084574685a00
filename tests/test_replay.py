"""The simulator: metrics on hand-computed traces, the DS4 #444 and OpenClaw seeds."""

import io
import json

import pytest

from kvstore.accounting import file_bytes
from simulator.costmodel import PROFILES, Profile, load_profiles
from simulator.generators.ds4 import Ds4Config, generate as generate_ds4
from simulator.generators.openclaw import OpenClawConfig, generate as generate_openclaw
from simulator.interop import export_libcachesim, import_mooncake
from simulator.replay import ReplayConfig, replay, working_set_bytes
from simulator.scenarios import run_scenarios
from simulator.sweep import parse_size, resolve_capacity
from simulator.trace import Request, load_trace

FLAT = Profile("flat", "1 tok/s, 1 byte per token", prefill_tps=1.0, context_halving=1e18, decode_tps=1.0,
               disk_read_bps=1e18, kv_bytes_per_token=1.0, fixed_bytes=0, load_latency_s=0.0)


def run(reqs, capacity=10**9, policy="lru", **kw):
    results = []
    metrics = replay(reqs, ReplayConfig(capacity_bytes=capacity, policy=policy, profile=FLAT, block_tokens=4, **kw),
                     on_request=results.append)
    return metrics, results


def test_metrics_of_a_hand_computed_trace():
    reqs = [Request("a", 0, (("sys", 8), ("q1", 2))),          # miss: writes 4, 8, tail 10
            Request("a", 1, (("sys", 8), ("q1", 2), ("r", 3))),  # tail 10 matches: prefill 3
            Request("b", 2, (("sys", 8), ("q2", 5))),          # aligned 8 matches: prefill 5
            Request("c", 3, (("other", 6),))]                  # miss
    metrics, results = run(reqs)
    assert [r.loaded_tokens for r in results] == [0, 10, 8, 0]
    assert metrics.requests == 4 and metrics.prompt_tokens == 10 + 13 + 13 + 6
    assert metrics.loaded_tokens == 18 and metrics.prefill_tokens == 42 - 18
    assert metrics.reprefill_seconds == pytest.approx(24)  # 1 token per second
    assert metrics.full_misses == 2
    assert metrics.token_hit_rate == pytest.approx(18 / 42)
    # files: 4, 8, tail 10; then 12, tail 13; then 12, tail 13; then 4, tail 6 (aligned past the
    # match, and tails): one byte per token plus each file's header, as the store counts them
    written = [4, 8, 10, 12, 13, 12, 13, 4, 6]
    assert metrics.bytes_written == sum(file_bytes(payload_len=n, tokens=n, block_tokens=4) for n in written)
    assert metrics.evictions == 0
    assert metrics.ttft_p50 == pytest.approx(sorted([10, 3, 5, 6])[1] + 0.5 * (sorted([10, 3, 5, 6])[2] - 5))


def test_capacity_pressure_evicts_and_warmup_is_not_counted():
    reqs = [Request("w", 0, (("x", 8),), tags={"warmup": True}), Request("a", 1, (("x", 8),))]
    metrics, _ = run(reqs)
    assert metrics.requests == 1 and metrics.loaded_tokens == 8
    room_for_8 = file_bytes(payload_len=8, tokens=8, block_tokens=4)  # the files of 4 and 8 do not both fit
    metrics, _ = run(reqs, capacity=room_for_8, index_bytes=0)  # the 4 is evicted for the 8
    assert metrics.loaded_tokens == 8 and metrics.evictions == 1


def test_blend_potential_counts_content_seen_elsewhere():
    reqs = [Request("a", 0, (("sys", 4), ("doc", 6))), Request("b", 1, (("sys", 4), ("q", 3), ("doc", 6)))]
    metrics, _ = run(reqs)
    assert metrics.blend_potential_tokens == 6  # doc moved from position 4 to 7


def test_chained_layout_loads_every_block_and_never_orphans():
    reqs = [Request("a", 0, (("x", 12),)), Request("a", 1, (("x", 12), ("y", 1)))]
    metrics, results = run(reqs, layout="chained", write_tail=False)
    assert results[1].loaded_tokens == 12
    assert metrics.bytes_written == sum(file_bytes(payload_len=FLAT.block_bytes(4), tokens=n, block_tokens=4)
                                        for n in (4, 8, 12))


def test_generators_are_deterministic():
    cfg = OpenClawConfig(sessions=3, turns=(2, 4), seed=5)
    assert generate_openclaw(cfg) == generate_openclaw(cfg)
    assert generate_openclaw(cfg) != generate_openclaw(OpenClawConfig(sessions=3, turns=(2, 4), seed=6))
    assert generate_ds4(Ds4Config(stale_sessions=3)) == generate_ds4(Ds4Config(stale_sessions=3))


@pytest.mark.parametrize("client, diverge", [("strip-history", True), ("tail-carrier", True), ("append-only", False)])
def test_client_behaviours_shape_where_turns_diverge(client, diverge):
    reqs = generate_openclaw(OpenClawConfig(sessions=1, turns=(3, 3), tool_calls=(0, 0), retrieval_rate=0,
                                            splice_rate=0, client=client, seed=1))
    first, second = reqs[0].prompt, reqs[1].prompt
    assert (second[: len(first)] != first) is diverge


def test_openclaw_compaction_replaces_history_after_the_system_prompt():
    reqs = generate_openclaw(OpenClawConfig(sessions=1, turns=(12, 12), compact_at=5_000, seed=3))
    compacted = [r for r in reqs if r.tags.get("compacted")]
    assert compacted and all("summary" in r.prompt[2][0] for r in compacted)


def test_mooncake_import_round_trip_and_errors():
    lines = [{"timestamp": 0, "input_length": 1100, "output_length": 7, "hash_ids": [1, 2, 3]},
             {"timestamp": 1500, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]}]
    reqs = list(import_mooncake(io.StringIO("\n".join(map(json.dumps, lines))), block_size=512))
    assert [r.prompt for r in reqs] == [(("h1", 512), ("h2", 512), ("h3", 76)), (("h1", 512), ("h2", 512))]
    assert [r.t for r in reqs] == [0.0, 1.5] and reqs[0].output == 7
    bad = json.dumps({"timestamp": 0, "input_length": 2000, "output_length": 1, "hash_ids": [1]})
    with pytest.raises(ValueError, match="line 1, field 'hash_ids'.*--block-size"):
        list(import_mooncake(io.StringIO(bad), block_size=512))
    with pytest.raises(ValueError, match="field 'timestamp': missing"):
        list(import_mooncake(io.StringIO('{"input_length": 1}'), block_size=512))


def test_libcachesim_export_lists_every_checkpoint_lookup():
    reqs = [Request("a", 0, (("x", 10),)), Request("a", 1, (("x", 10),))]
    sink = io.StringIO()
    rows = export_libcachesim(reqs, sink, ReplayConfig(capacity_bytes=1, policy="lru", profile=FLAT, block_tokens=4))
    lines = sink.getvalue().splitlines()
    assert rows == 6 and lines[0] == "time,key,size,request,tokens,warmup,tail"
    assert [l.split(",")[3:5] for l in lines[1:4]] == [["0", "4"], ["0", "8"], ["0", "10"]]
    first, second = [l.split(",") for l in lines[1:4]], [l.split(",") for l in lines[4:7]]
    assert [f[1:3] + f[4:] for f in first] == [s[1:3] + s[4:] for s in second]  # same keys, sizes, lengths
    assert {f[3] for f in first} == {"0"} and {s[3] for s in second} == {"1"}  # rows map back to requests
    assert [int(l.split(",")[2]) for l in lines[1:4]] == [file_bytes(payload_len=n, tokens=n, block_tokens=4)
                                                           for n in (4, 8, 10)]  # the sizes kvsim counts


def test_profiles_from_toml_and_their_errors(tmp_path):
    good = tmp_path / "p.toml"
    good.write_text('[profiles.mine]\nprefill_tps = 100\ncontext_halving = 1e5\ndecode_tps = 10\n'
                    'disk_read_bps = 1e9\nkv_bytes_per_token = 1000\nfixed_bytes = 0\n')
    assert load_profiles(str(good))["mine"].prefill_seconds(0, 100) == pytest.approx(1.0005)
    bad = tmp_path / "bad.toml"
    bad.write_text('[profiles.mine]\nprefill_tps = 100\nspeed = 3\n')
    with pytest.raises(ValueError, match="profiles.mine: unknown key 'speed'"):
        load_profiles(str(bad))
    bad.write_text('[profiles.mine]\nprefill_tps = -1\ncontext_halving = 1\ndecode_tps = 1\n'
                   'disk_read_bps = 1\nkv_bytes_per_token = 1\nfixed_bytes = 0\n')
    with pytest.raises(ValueError, match="prefill_tps must be a number > 0"):
        load_profiles(str(bad))


def test_sizes_and_capacities_parse():
    assert parse_size("64MiB") == 64 << 20 and parse_size("2GB") == 2 * 10**9
    assert resolve_capacity("25%", working_set=400) == 100
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_the_eight_openclaw_scenarios_reproduce_the_report():
    results = run_scenarios()
    for r in results:
        assert " ".join(c["outcome"] for c in r["calls"]) == r["expected"], r["name"]
    s8 = results[7]["calls"]
    assert s8[1]["ttft"] >= 20 * s8[0]["ttft"]


def test_ds4_issue_444_trace_reproduces_the_report():
    reqs = load_trace("traces/ds4-issue-444.jsonl")
    outcomes = {}
    for policy in ("ds4-density", "prefix-chain"):
        results = []
        replay(reqs, ReplayConfig(capacity_bytes=256 * 10**9, policy=policy, profile=PROFILES["ds4"]),
               on_request=results.append)
        outcomes[policy] = results[1:]  # turn 0 is cold for every policy
    assert all(r.loaded_tokens == 0 and 100 <= r.ttft <= 208 for r in outcomes["ds4-density"])
    assert all(r.loaded_tokens == 32_768 and 8 <= r.ttft <= 12 for r in outcomes["prefix-chain"])
    fresh = []
    replay([r for r in reqs if not r.tags.get("warmup")],
           ReplayConfig(capacity_bytes=256 * 10**9, policy="ds4-density", profile=PROFILES["ds4"]),
           on_request=fresh.append)
    assert all(r.loaded_tokens == 32_768 and 8 <= r.ttft <= 12 for r in fresh[1:])
    working_set = working_set_bytes(reqs, ReplayConfig(capacity_bytes=1, policy="lru", profile=PROFILES["ds4"]))
    assert working_set > 2 * 256 * 10**9  # the store really is at capacity


def test_replays_repeat_exactly_across_processes(tmp_path):
    """Set iteration order changes with PYTHONHASHSEED; results must not."""
    import os
    import subprocess
    import sys

    trace = tmp_path / "t.jsonl"
    from simulator.trace import write_trace
    write_trace(str(trace), generate_openclaw(OpenClawConfig(sessions=12, session_gap_s=30, seed=4)))
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-m", "simulator.cli", "sweep", str(trace), "--capacities", "5%",
                              "--policies", "prefix-chain,marconi,hicache,random", "--json"],
                             capture_output=True, text=True, env=env, check=True).stdout
        outputs.add(tuple(r["reprefill_seconds"] for r in json.loads(out)))
    assert len(outputs) == 1


def test_chained_replay_under_pressure_never_stores_an_orphan_block():
    """Making room for a block must not evict that block's own ancestors."""
    from policies import LRUPolicy

    reqs = generate_openclaw(OpenClawConfig(sessions=6, turns=(3, 5), session_gap_s=20, seed=9))
    policy = LRUPolicy()
    config = ReplayConfig(capacity_bytes=40 * FLAT.block_bytes(256), policy=policy, profile=FLAT,
                          layout="chained", block_tokens=256, index_bytes=0)
    metrics = replay(reqs, config)
    manager = policy.view
    assert metrics.evictions > 100
    manager._check()
    assert all(manager.get(k).parent is None or manager.get(k).parent in manager for k in manager)


def test_tokens_are_the_generators_draws_for_any_length():
    """The materialised tokens (read from PCG64's raw outputs) are exactly the
    Generator's uint32 draws, so every key stays what it was."""
    import numpy as np

    from simulator.tokens import TokenMaterializer, _draw

    for seed in (0, 7, 2**63 + 11):
        for size in (0, 1, 2, 3, 4095, 4096, 4097):
            expected = np.random.Generator(np.random.PCG64(seed)).integers(0, 2**32, size=size, dtype=np.uint32)
            got = _draw(seed, size)
            assert got.dtype == np.uint32 and np.array_equal(got, expected), (seed, size)
    m = TokenMaterializer()
    grown = m.content("doc", 5), m.content("doc", 9)  # a longer span of a content drawn again
    assert np.array_equal(grown[1][:5], grown[0]) and len(grown[1]) == 9


def test_entry_bytes_follow_the_config_they_are_kept_for():
    """``entry_bytes`` keeps each length's size; setting any field of the config
    (its profile, layout or grid) computes them again."""
    config = ReplayConfig(capacity_bytes=2**30, policy="lru", profile=PROFILES["ds4"])
    snapshot = config.entry_bytes(5000)
    assert snapshot == file_bytes(payload_len=PROFILES["ds4"].checkpoint_bytes(5000), tokens=5000, block_tokens=4096)
    config.profile = PROFILES["qwen7b-laptop"]
    assert config.entry_bytes(5000) == file_bytes(payload_len=PROFILES["qwen7b-laptop"].checkpoint_bytes(5000),
                                                  tokens=5000, block_tokens=4096) != snapshot
    config.layout = "chained"
    assert config.entry_bytes(5000) == file_bytes(payload_len=PROFILES["qwen7b-laptop"].block_bytes(904),
                                                  tokens=5000, block_tokens=4096)
    config.block_tokens = 1000
    assert config.entry_bytes(5000) == file_bytes(payload_len=PROFILES["qwen7b-laptop"].block_bytes(1000),
                                                  tokens=5000, block_tokens=1000)
