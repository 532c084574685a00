"""kvsim against a real engine: the 135M SmolLM2 model on llama.cpp.

``kvsim validate`` runs the shipped scaled OpenClaw trace on the engine and in
the simulator with a profile calibrated here, under capacity pressure, for two
policies: every request must reload the same prefix in both (the same store
code decides) and the predicted re-prefill seconds must be within 20% of the
measured ones.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from kvstore.adapters.llama_cpp import smollm2_model_path
from simulator.cli import main
from simulator.costmodel import load_profiles
from simulator.trace import Request, load_trace, write_trace

TRACE = os.path.join(os.path.dirname(__file__), "..", "traces", "openclaw-small-scaled.jsonl")


@pytest.fixture(scope="module")
def llama():
    from llama_cpp import Llama
    return Llama(model_path=smollm2_model_path(), n_ctx=1024, n_threads=2, seed=0, verbose=False)


@pytest.mark.alone  # its 20% bound compares seconds timed at calibration with seconds timed later
def test_validate_predicts_the_engine_on_the_scaled_trace(capsys):
    assert main(["validate", TRACE, "--model", "smollm2", "--capacity", "20%", "--policies", "lru,prefix-chain",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    results = {r["policy"]: r for r in doc["results"]}
    assert set(results) == {"lru", "prefix-chain"}
    requests = len(load_trace(TRACE))
    for r in results.values():
        assert r["identical_reloads"] and r["requests_with_identical_reloads"] == r["requests"] == requests
        assert r["evictions"] > 0 and r["evictions"] == r["predicted_evictions"]  # under pressure, same evictions
        assert 0 < r["loaded_tokens"] == r["predicted_loaded_tokens"]
        assert 0 < r["bytes_written"] == r["predicted_bytes_written"]  # the same files, byte for byte
        assert abs(r["reprefill_error"]) < 0.20, r  # the simulator's seconds are the engine's
    assert doc["profile"]["kv_bytes_per_token"] > 0 and doc["profile"]["prefill_tps"] > 0


def test_calibrate_writes_a_profile_kvsim_reads(tmp_path, llama, capsys):
    from simulator.engine import measure_state_bytes

    out = tmp_path / "mine.toml"
    assert main(["calibrate", "llama", "--model", "smollm2", "--n-ctx", "1024", "--lengths", "128,256,512",
                 "--repeats", "2", "--name", "mine", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "prefill fit error" in captured.err and "[profiles.mine]" in captured.out
    text = out.read_text()
    assert len(re.findall(r"^#\s+\d+ -> \d+", text, re.M)) == 6  # cold and warm prefill per length, in comments
    profile = load_profiles(str(out))["mine"]
    per_token, fixed = measure_state_bytes(llama)
    assert (profile.kv_bytes_per_token, profile.fixed_bytes) == (per_token, fixed)
    assert profile.prefill_tps > 0 and profile.context_halving > 0 and profile.decode_tps > 0
    assert main(["simulate", TRACE, "--profiles-file", str(out), "--profile", "mine", "--capacity", "20%",
                 "--block-tokens", "512", "--json"]) == 0  # the profile drives the simulator
    assert json.loads(capsys.readouterr().out)[0]["reprefill_seconds"] > 0


def test_engine_replay_measures_each_request(tmp_path, capsys):
    requests = [r for r in load_trace(TRACE) if r.session == "s0"][:3]
    trace = tmp_path / "s0.jsonl"
    write_trace(str(trace), requests)
    lines = tmp_path / "requests.jsonl"
    store = tmp_path / "store"
    assert main(["engine-replay", str(trace), "--model", "smollm2", "--capacity", "1GiB", "--policy", "lru",
                 "--store", str(store), "--requests", str(lines), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    per_request = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["prompt_tokens"] for r in per_request] == [r.prompt_tokens for r in requests]
    assert per_request[0]["loaded_tokens"] == 0 and all(r["loaded_tokens"] > 0 for r in per_request[1:])
    assert result["loaded_tokens"] == sum(r["loaded_tokens"] for r in per_request)
    assert result["reprefill_seconds"] > 0 and result["ttft_p50"] > 0 and result["bytes_written"] > 0
    assert any(name.endswith(".kv") or os.path.isdir(store / name) for name in os.listdir(store))


def test_engine_commands_name_what_is_wrong(tmp_path, capsys):
    assert main(["validate", TRACE, "--model", str(tmp_path / "none.gguf"), "--capacity", "20%"]) == 2
    assert "--model" in capsys.readouterr().err
    long = tmp_path / "long.jsonl"
    write_trace(str(long), [Request("s", 0.0, (("sys", 5000),))])
    assert main(["engine-replay", str(long), "--model", "smollm2", "--n-ctx", "1024", "--capacity", "1GiB"]) == 2
    err = capsys.readouterr().err
    assert "5000 tokens" in err and "n_ctx=1024" in err and "--scale" in err
    assert main(["validate", TRACE, "--model", "smollm2", "--capacity", "20%", "--policies", "belady"]) == 2
    assert "needs the future" in capsys.readouterr().err
    for command in (["calibrate", "llama"], ["validate", TRACE, "--capacity", "20%"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--model", "smollm2", "--repeats", "0"])
        assert exit_.value.code == 2 and "argument --repeats: must be >= 1, got 0" in capsys.readouterr().err


def test_a_prefill_fit_of_noisy_timings_never_gives_a_negative_rate():
    """Timings where a busy machine slowed the long prompts far more than
    attention would: the two-term fit puts all the time in the quadratic term
    (a negative rate per token); the calibration falls back to tokens alone."""
    import numpy as np

    from simulator.engine import _fit_prefill, calibrate_llama

    points = [(0, 128, 0.001), (64, 128, 0.0005), (0, 256, 0.004), (128, 256, 0.004), (0, 512, 0.05),
              (256, 512, 0.045)]
    rows = np.array([[b - a, b * b - a * a] for a, b, _ in points], dtype=float)
    seconds = np.array([s for *_, s in points])
    (per_token, _), *_ = np.linalg.lstsq(rows / seconds[:, None], np.ones(len(points)), rcond=None)
    assert per_token < 0  # (what the two-term fit alone would give)
    tps, halving = _fit_prefill(points)
    assert 0 < tps < float("inf") and halving > 0
    tokens = sum(b - a for a, b, _ in points)
    assert tps == pytest.approx(sum((b - a) ** 2 for a, b, _ in points) / sum((b - a) * s for a, b, s in points))
    assert tokens / tps == pytest.approx(sum(s for *_, s in points), rel=0.5)
    with pytest.raises(ValueError, match="repeats must be an int >= 1, got 0"):
        calibrate_llama("any.gguf", repeats=0)
