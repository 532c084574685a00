"""kvsim from the command line: every subcommand runs and says what it did."""

import json

import pytest

from simulator.cli import main
from simulator.replay import METRIC_KEYS


@pytest.fixture
def small_trace(tmp_path):
    path = str(tmp_path / "t.jsonl")
    assert main(["generate", "openclaw", "-o", path, "--sessions", "3", "--min-turns", "2", "--max-turns", "3"]) == 0
    return path


def test_simulate_json_has_exactly_the_documented_keys(small_trace, tmp_path, capsys):
    per_request = tmp_path / "r.jsonl"
    assert main(["simulate", small_trace, "--capacity", "10%", "--policy", "lru", "--json",
                 "--requests", str(per_request)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert set(result) == set(METRIC_KEYS) | {"policy", "capacity_bytes", "profile"}
    lines = [json.loads(line) for line in per_request.read_text().splitlines()]
    assert len(lines) == result["requests"]
    assert set(lines[0]) == {"session", "t", "prompt_tokens", "loaded_tokens", "prefill_tokens", "ttft", "tier"}


def test_sweep_prints_a_table_and_writes_a_plot(small_trace, tmp_path, capsys):
    plot = tmp_path / "sweep.png"
    assert main(["sweep", small_trace, "--capacities", "5%,50%", "--policies", "lru,prefix-chain,belady",
                 "--plot", str(plot), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "prefix-chain" in out and "belady*" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_json_lists_every_policy_and_capacity(small_trace, capsys):
    assert main(["sweep", small_trace, "--capacities", "5%,1GiB", "--policies", "lru,fifo", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [(r["policy"], r["capacity_bytes"] == 2**30) for r in results][2:] == [("lru", True), ("fifo", True)]


def test_listing_commands(capsys):
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert "prefix-chain" in out and "[offline]" in out
    assert main(["profiles", "--json"]) == 0
    assert {"ds4", "qwen7b-laptop"} <= set(json.loads(capsys.readouterr().out))


def test_scenarios_json_shape(capsys):
    assert main(["scenarios", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["scenario"] for r in results] == list(range(1, 9))
    assert set(results[0]["calls"][0]) == {"outcome", "ttft", "loaded_tokens", "prefill_tokens"}


def test_import_and_export(tmp_path, capsys):
    src = tmp_path / "m.jsonl"
    src.write_text('{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n')
    out = tmp_path / "t.jsonl"
    assert main(["import", "mooncake", str(src), "-o", str(out)]) == 0
    csv_path = tmp_path / "o.csv"
    assert main(["export", "libcachesim", str(out), "-o", str(csv_path), "--block-tokens", "256"]) == 0
    assert csv_path.read_text().splitlines()[0] == "time,key,size"


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session": "s", "t": 0, "prompt": []}\n')
    assert main(["simulate", str(bad), "--capacity", "1GiB"]) == 2
    assert "kvsim: error: line 1, field 'prompt'" in capsys.readouterr().err
    assert main(["sweep", str(bad), "--policies", "nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


def test_simulate_reads_and_hashes_the_trace_once(tmp_path, monkeypatch, capsys):
    """A percentage capacity needs the working set before the replay: the keys
    hashed for it are the ones the replay uses."""
    import simulator.cli
    import simulator.replay
    from simulator.generators.openclaw import OpenClawConfig, generate
    from simulator.trace import write_trace

    trace = str(tmp_path / "t.jsonl")
    requests = generate(OpenClawConfig(sessions=3, turns=(2, 3), seed=5))
    write_trace(trace, requests)
    hashed, reads = [], []
    real_keys, real_load = simulator.replay.PrefixKeys, simulator.cli.load_trace

    class CountingKeys(real_keys):
        def __init__(self, *args, **kwargs):
            hashed.append(1)
            super().__init__(*args, **kwargs)

    def counting_load(path):
        reads.append(path)
        return real_load(path)

    monkeypatch.setattr(simulator.replay, "PrefixKeys", CountingKeys)
    monkeypatch.setattr(simulator.cli, "load_trace", counting_load)
    assert simulator.cli.main(["simulate", trace, "--capacity", "10%", "--policy", "lru", "--json"]) == 0
    assert len(reads) == 1 and len(hashed) == len(requests)
