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
    assert set(result) == set(METRIC_KEYS) | {"policy", "capacity_bytes", "capacity_label", "profile"}
    assert result["capacity_label"] == "10%"
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
    # the matrix, capacities as written, then the verdict
    assert any("5%" in line and "50%" in line and "policy" in line for line in out.splitlines())
    assert any(line.startswith("5%: ") and " is best (" in line for line in out.splitlines())
    assert any(line.startswith("50%: ") for line in out.splitlines())


def test_sweep_json_lists_every_policy_and_capacity(small_trace, capsys):
    assert main(["sweep", small_trace, "--capacities", "5%,1GiB", "--policies", "lru,fifo", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [(r["policy"], r["capacity_bytes"] == 2**30) for r in results][2:] == [("lru", True), ("fifo", True)]


def test_a_parallel_sweep_starts_the_longest_replays_first_and_reports_in_the_order_asked(small_trace, capsys):
    from simulator.sweep import RunSpec, _longest_first

    specs = [RunSpec(small_trace, p, c, str(c), "ds4") for p in ("fifo", "lru", "ds4-density") for c in (1, 2)]
    assert [(specs[i].policy, specs[i].capacity_bytes) for i in _longest_first(specs)][:2] == [
        ("ds4-density", 1), ("ds4-density", 2)]
    args = ["sweep", small_trace, "--capacities", "5%,50%", "--policies", "fifo,lru,prefix-chain", "--json"]
    assert main([*args, "--jobs", "1"]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert main([*args, "--jobs", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == serial
    assert [(r["policy"], r["capacity_label"]) for r in serial] == [
        (p, c) for c in ("5%", "50%") for p in ("fifo", "lru", "prefix-chain")]


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
    assert csv_path.read_text().splitlines()[0] == "time,key,size,request,tokens,warmup,tail"


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session": "s", "t": 0, "prompt": []}\n')
    assert main(["simulate", str(bad), "--capacity", "1GiB"]) == 2
    assert f"kvsim: error: {bad}: line 1, field 'prompt'" in capsys.readouterr().err  # names the file too
    assert main(["sweep", str(bad), "--policies", "nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


def test_simulate_reads_and_hashes_the_trace_once(tmp_path, monkeypatch, capsys):
    """A percentage capacity needs the working set before the replay: the keys
    hashed for it are the ones the replay uses."""
    hashed, reads, requests, trace = _count_hashing(tmp_path, monkeypatch)
    assert main(["simulate", trace, "--capacity", "10%", "--policy", "lru", "--json"]) == 0
    assert len(reads) == 1 and len(hashed) == len(requests)


def test_sweep_hashes_the_trace_once_for_every_policy_and_capacity(tmp_path, monkeypatch, capsys):
    hashed, reads, requests, trace = _count_hashing(tmp_path, monkeypatch)
    assert main(["sweep", trace, "--capacities", "5%,50%", "--policies", "lru,prefix-chain,belady",
                           "--jobs", "1", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 6 and len(hashed) == len(requests)
    assert len({r["loaded_tokens"] for r in results}) > 1  # the runs did replay


def test_sweep_results_file_resumes_and_replays_only_the_runs_it_lacks(tmp_path, monkeypatch, capsys):
    hashed, reads, requests, trace = _count_hashing(tmp_path, monkeypatch)
    runs = tmp_path / "runs.jsonl"
    base = ["sweep", trace, "--capacities", "5%,50%", "--jobs", "1", "--json"]
    assert main([*base, "--policies", "lru,fifo", "--results", str(runs)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(runs.read_text().splitlines()) == 4  # one line per run, written as it finished
    assert not (tmp_path / "runs.jsonl.keys").exists()  # finished: its keys are not kept
    assert main([*base, "--policies", "lru,fifo,prefix-chain", "--results", str(runs)]) == 0
    out = capsys.readouterr()
    assert "runs.jsonl: 4 of 6 runs already finished" in out.err
    resumed = json.loads(out.out)
    assert len(runs.read_text().splitlines()) == 6  # only the two new runs were added
    assert main([*base, "--policies", "lru,fifo,prefix-chain"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert resumed == fresh and [r for r in fresh if r["policy"] != "prefix-chain"] == first
    hashed.clear()
    assert main([*base, "--policies", "lru,fifo,prefix-chain", "--results", str(runs)]) == 0
    out = capsys.readouterr()
    assert "6 of 6 runs already finished" in out.err and not hashed  # nothing replayed, nothing hashed
    assert json.loads(out.out) == fresh and len(runs.read_text().splitlines()) == 6


def test_a_sweep_stopped_midway_keeps_its_keys_and_goes_on_without_hashing_again(tmp_path, monkeypatch, capsys):
    """Stopped (Ctrl-C) after its first run, a sweep with ``--results`` leaves its
    hashed keys in ``FILE.keys``; the same command maps them instead of hashing,
    gives the results of a sweep never stopped, and then removes them. Keys of
    another trace are not used."""
    import simulator.cli
    from simulator.generators.openclaw import OpenClawConfig, generate
    from simulator.trace import write_trace

    hashed, reads, requests, trace = _count_hashing(tmp_path, monkeypatch)
    runs, keys_dir = tmp_path / "runs.jsonl", tmp_path / "runs.jsonl.keys"
    command = ["sweep", trace, "--capacities", "5%,50%", "--policies", "lru,prefix-chain", "--jobs", "1", "--json"]
    real_sweep = simulator.cli.sweep

    def stopped_after_one(specs, *, jobs, on_done):
        on_done(simulator.cli.run(specs[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(simulator.cli, "sweep", stopped_after_one)
    assert main([*command, "--results", str(runs)]) == 130  # (Ctrl-C)
    assert len(hashed) == len(requests) and keys_dir.is_dir() and len(runs.read_text().splitlines()) == 1
    monkeypatch.setattr(simulator.cli, "sweep", real_sweep)
    capsys.readouterr()
    hashed.clear()
    assert main([*command, "--results", str(runs)]) == 0
    out = capsys.readouterr()
    assert f"{keys_dir}: keys of this trace reused, nothing to hash" in out.err and not hashed
    assert not keys_dir.exists()
    assert main(command) == 0
    assert json.loads(out.out) == json.loads(capsys.readouterr().out)

    other = str(tmp_path / "other.jsonl")  # another trace under the same results file
    write_trace(other, generate(OpenClawConfig(sessions=3, turns=(2, 3), seed=6)))
    monkeypatch.setattr(simulator.cli, "sweep", stopped_after_one)
    assert main(["sweep", other, *command[2:], "--results", str(runs)]) == 130  # leaves the other trace's keys
    hashed.clear()
    assert main(["sweep", trace, "--capacities", "25%", *command[4:], "--results", str(runs)]) == 130
    assert len(hashed) == len(requests)  # the keys on file were the other trace's


def test_sweep_results_of_another_trace_or_profile_are_kept_but_not_reused(small_trace, tmp_path, capsys):
    runs = tmp_path / "runs.jsonl"
    other = str(tmp_path / "other.jsonl")
    assert main(["generate", "openclaw", "-o", other, "--sessions", "3", "--seed", "99"]) == 0
    base = ["--capacities", "10%", "--policies", "lru,fifo", "--json", "--results", str(runs)]
    assert main(["sweep", small_trace, *base]) == 0
    capsys.readouterr()
    assert main(["sweep", other, *base]) == 0
    assert "0 of 2 runs already finished; 2 lines of other traces or settings kept" in capsys.readouterr().err
    assert main(["sweep", small_trace, *base, "--profile", "qwen7b-laptop"]) == 0
    assert "0 of 2 runs already finished; 4 lines of other traces" in capsys.readouterr().err
    assert main(["sweep", small_trace, *base]) == 0
    assert "2 of 2 runs already finished; 4 lines of other traces" in capsys.readouterr().err
    assert len(runs.read_text().splitlines()) == 6


def test_sweep_results_file_errors_name_the_flag_and_the_line(small_trace, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    for path, words in ((str(bad), f"{bad}:1: not a line of a kvsim results file"),
                        (str(tmp_path / "runs.json"), "--results"),
                        (str(tmp_path / "nope" / "runs.jsonl"), "does not exist")):
        assert main(["sweep", small_trace, "--results", path]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err


def test_a_sweep_killed_midway_goes_on_where_it_stopped(tmp_path):
    """A real sweep, killed (SIGKILL) once some runs are on file: the same
    command finishes the rest, a line cut short by the kill is dropped, and
    the results equal those of a sweep never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    trace = os.path.join(os.path.dirname(__file__), "..", "traces", "openclaw-strip-history.jsonl")
    runs = tmp_path / "runs.jsonl"
    command = [sys.executable, "-m", "simulator.cli", "sweep", trace, "--capacities", "5%,50%", "--jobs", "1",
               "--policies", "lru,fifo,lfu,gdsf,hicache,prefix-chain,marconi,ds4-density", "--json"]
    sweep = subprocess.Popen([*command, "--results", str(runs)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (not runs.exists() or len(runs.read_bytes().splitlines()) < 3) and time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.02)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    with open(runs, "ab") as fh:  # as if the kill came in the middle of a line
        fh.write(b'{"result": {"policy": "lru", "capa')
    on_file = len(runs.read_bytes().splitlines()) - 1
    assert 3 <= on_file < 16
    resumed = subprocess.run([*command, "--results", str(runs)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{on_file} of 16 runs already finished; a last line cut short by a crash dropped" in resumed.stderr
    assert "keys of this trace reused, nothing to hash" in resumed.stderr  # the killed sweep's keys
    clean = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert json.loads(resumed.stdout) == json.loads(clean.stdout)
    lines = [json.loads(line) for line in runs.read_text().splitlines()]
    assert len(lines) == 16 and len({(x["result"]["policy"], x["result"]["capacity"]) for x in lines}) == 16


def _count_hashing(tmp_path, monkeypatch):
    """Count prompts hashed and traces read by the command line."""
    import simulator.cli
    import simulator.prompt_hashing
    import simulator.replay
    from simulator.generators.openclaw import OpenClawConfig, generate
    from simulator.trace import write_trace

    trace = str(tmp_path / "t.jsonl")
    requests = generate(OpenClawConfig(sessions=3, turns=(2, 3), seed=5))
    write_trace(trace, requests)
    hashed, reads = [], []
    real_keys, real_read = simulator.prompt_hashing.PrefixKeys, simulator.cli.read_trace

    class CountingKeys(real_keys):
        def __init__(self, *args, **kwargs):
            hashed.append(1)
            super().__init__(*args, **kwargs)

        @classmethod
        def extending(cls, base, tokens):  # (a prompt keyed by resuming an earlier one's hash)
            hashed.append(1)
            return super().extending(base, tokens)

    def counting_read(path):
        reads.append(path)
        return real_read(path)

    for module in (simulator.prompt_hashing, simulator.replay):
        monkeypatch.setattr(module, "PrefixKeys", CountingKeys)
    monkeypatch.setattr(simulator.cli, "read_trace", counting_read)
    return hashed, reads, requests, trace


@pytest.fixture
def trace_file(tmp_path):
    from simulator.generators.ds4 import Ds4Config, generate
    from simulator.trace import write_trace

    path = str(tmp_path / "ds4.jsonl")
    write_trace(path, generate(Ds4Config(stale_sessions=3, turns=2)))
    return path


@pytest.mark.parametrize("argv, says", [
    (["scenarios", "--profile", "nosuch"], "unknown profile 'nosuch'; available: ds4"),
    (["simulate", "{empty}", "--capacity", "1GiB"], "holds no requests"),
    (["simulate", "{header_only}", "--capacity", "1GiB"], "holds no requests"),
    (["sweep", "{header_only}", "--capacities", "1GiB", "--policies", "lru"], "holds no requests"),
    (["sweep", "{trace}", "--capacities", "5%", "--policies", ""], "--policies names no policy"),
    (["simulate", "{trace}", "--capacity", "abc%"], "--capacity 'abc%': not a percentage"),
    (["sweep", "{trace}", "--capacities", "5%,abc", "--policies", "lru"], "--capacities 'abc': not a size"),
    (["simulate", "{trace}", "--capacity", "-5%"], "--capacity '-5%': capacity percentage must be > 0"),
    (["sweep", "{trace}", "--capacities", "5%", "--jobs", "0"], "argument --jobs: must be >= 1, got 0"),
    (["sweep", "{trace}", "--capacities", "5%", "--jobs", "-3"], "argument --jobs: must be >= 1, got -3"),
    (["sweep", "{trace}", "--capacities", "5%", "--policies", "lru", "--plot", "/nonexistent/x.png"],
     "--plot /nonexistent/x.png: folder /nonexistent does not exist"),
    (["export", "libcachesim", "{trace}", "-o", "{tmp}/x.csv", "--json"], "unrecognized arguments: --json"),
    (["simulate", "{mooncake}", "--capacity", "5%"], "kvsim import mooncake FILE"),
    (["simulate", "{binary}", "--capacity", "1GiB"], "binary.jsonl is not a text trace"),
])
def test_command_line_mistakes_get_one_clear_line_before_any_work(argv, says, trace_file, tmp_path, capsys):
    files = {"trace": trace_file, "tmp": str(tmp_path), "empty": str(tmp_path / "empty.jsonl"),
             "header_only": str(tmp_path / "header.jsonl"), "mooncake": str(tmp_path / "m.jsonl"),
             "binary": str(tmp_path / "binary.jsonl")}
    open(files["empty"], "w").close()
    with open(trace_file) as fh, open(files["header_only"], "w") as out:
        out.write(fh.readline())
    with open(files["mooncake"], "w") as out:
        out.write('{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n')
    with open(files["binary"], "wb") as out:
        out.write(b'{"session": "\xf0\x28\x8c\x28"}\n')
    argv = [a.format(**files) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert "Traceback" not in err and len([l for l in err.splitlines() if "error" in l]) == 1


def test_a_failed_export_leaves_the_output_as_it_was(small_trace, tmp_path, capsys):
    """The export is written under ``OUT.partial`` and renamed once whole: a
    trace that turns out bad half-way neither truncates an earlier export nor
    leaves a part of one."""
    lines = open(small_trace).read().splitlines()
    bad, output = tmp_path / "bad.jsonl", tmp_path / "out.csv"
    bad.write_text("\n".join([*lines[:len(lines) // 2], '{"session": "s0", "t":', *lines[len(lines) // 2:]]) + "\n")
    output.write_text("an earlier export\n")
    assert main(["export", "libcachesim", str(bad), "-o", str(output)]) == 2
    assert f"bad.jsonl: line {len(lines) // 2 + 1}: not valid JSON" in capsys.readouterr().err
    assert output.read_text() == "an earlier export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.csv", "t.jsonl"]
    assert main(["export", "libcachesim", small_trace, "-o", str(output)]) == 0
    assert output.read_text().startswith("time,key,size,request,tokens,")


def test_a_failed_import_leaves_no_output_file(tmp_path, capsys):
    source, output = tmp_path / "bad.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"timestamp": 0, "input_length": 600, "hash_ids": [0, 1]}\n')
    assert main(["import", "mooncake", str(source), "--block-size", "512", "-o", str(output)]) == 2
    assert "bad.jsonl: line 1, field 'output_length'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize("command", [["generate", "openclaw", "--sessions", "2"],
                                     ["generate", "conversation"],
                                     ["import", "mooncake", "IN"],
                                     ["export", "libcachesim", "IN"]])
def test_an_output_in_a_missing_folder_is_a_one_line_error_before_any_work(tmp_path, capsys, command):
    source = tmp_path / "in.jsonl"
    source.write_text('{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n')
    missing = tmp_path / "nowhere" / "out.jsonl"
    args = [str(source) if part == "IN" else part for part in command]
    assert main([*args, "-o", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kvsim: error: -o {missing}: folder {missing.parent} does not exist"
    assert list(tmp_path.iterdir()) == [source]


def test_sweep_report_is_one_well_formed_html_file_with_the_plot_inside(small_trace, tmp_path, capsys):
    import base64
    import re
    from html.parser import HTMLParser

    report = tmp_path / "report.html"
    assert main(["sweep", small_trace, "--capacities", "5%,50%", "--policies", "lru,prefix-chain,belady",
                 "--report", str(report)]) == 0
    text = report.read_text()

    class Balance(HTMLParser):
        VOID = {"meta", "img", "br", "hr", "link", "input"}

        def __init__(self):
            super().__init__()
            self.open = []

        def handle_starttag(self, tag, attrs):
            if tag not in self.VOID:
                self.open.append(tag)

        def handle_endtag(self, tag):
            assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
            self.open.pop()

    checker = Balance()
    checker.feed(text)
    assert checker.open == [] and text.startswith("<!DOCTYPE html>")
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert png and base64.b64decode(png.group(1))[:8] == b"\x89PNG\r\n\x1a\n"  # the plot, embedded
    for must in ("Verdict", "prefix-chain", "5%", "50%", "kvsim sweep", "generator", "prefill_tps",
                 "least recently used"):
        assert must in text, must
    assert "src=\"http" not in text and "href=\"http" not in text  # nothing fetched from elsewhere
    assert main(["sweep", small_trace, "--capacities", "5%", "--report", str(tmp_path / "r.txt")]) == 2
    assert "--report" in capsys.readouterr().err


def test_generate_scale_shrinks_every_span_and_keeps_what_is_shared(tmp_path):
    from simulator.trace import load_trace

    full, small = tmp_path / "full.jsonl", tmp_path / "small.jsonl"
    for path, scale in ((full, "1"), (small, "0.1")):
        assert main(["generate", "openclaw", "-o", str(path), "--sessions", "3", "--seed", "4", "--scale", scale]) == 0
    big, little = load_trace(str(full)), load_trace(str(small))
    assert len(big) == len(little)
    systems = {n for r in little for c, n in r.prompt if c.startswith("system")}
    assert systems and max(systems) <= 1_600 and min(systems) >= 1
    for a, b in zip(big, little):
        assert [c for c, _ in a.prompt] == [c for c, _ in b.prompt]  # the same contents, shared alike
        assert b.prompt_tokens <= a.prompt_tokens // 9
    with pytest.raises(SystemExit):
        main(["generate", "ds4-issue-444", "-o", str(tmp_path / "x.jsonl"), "--scale", "0"])


def test_session_hints_flag_reaches_the_replay(tmp_path, capsys):
    trace = str(tmp_path / "t.jsonl")
    assert main(["generate", "openclaw", "-o", trace, "--sessions", "12", "--session-gap", "45", "--seed", "107"]) == 0
    seconds = {}
    for flag in ([], ["--session-hints"]):
        capsys.readouterr()
        assert main(["simulate", trace, "--capacity", "5%", "--policy", "lru", "--json", *flag]) == 0
        seconds[bool(flag)] = json.loads(capsys.readouterr().out)[0]["reprefill_seconds"]
    assert seconds[True] < seconds[False]  # ended sessions' own checkpoints went first


def test_ctrl_c_ends_a_parallel_sweep_with_one_line_and_no_process_left(tmp_path):
    """Ctrl-C in a terminal interrupts the whole process group (the sweep, its
    hashing and replay workers): the sweep says in one line where the finished
    runs are, exits 130, prints no traceback, and no process of it is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    trace = os.path.join(os.path.dirname(__file__), "..", "traces", "openclaw-strip-history.jsonl")
    runs = tmp_path / "runs.jsonl"
    sweep = subprocess.Popen([sys.executable, "-m", "simulator.cli", "sweep", trace, "--capacities", "5%,50%",
                              "--jobs", "2", "--policies", "lru,fifo,lfu,gdsf,hicache,prefix-chain,marconi",
                              "--results", str(runs)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + 120
    while (not runs.exists() or not runs.read_bytes().count(b"\n")) and time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.02)
    os.killpg(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, err
    assert err.strip().splitlines()[-1] == (f"kvsim: interrupted; the runs finished so far are in {runs}: "
                                            "the same command goes on from there")
    assert "Traceback" not in err, err
    _assert_no_process_left(sweep.pid)


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child, before it runs: SIGINT's default action, as a terminal's
    shell gives it. A suite started in the background (``cmd &`` in a script,
    ``nohup``) passes SIGINT on ignored, and Python then never raises
    ``KeyboardInterrupt``: the sweep would not hear the Ctrl-C at all."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _assert_no_process_left(group: int) -> None:
    """Wait up to 10 s for every process of the process group ``group`` to end."""
    import os
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)  # anything of the sweep's process group still running?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("a process of the stopped sweep is still running")


def test_sigterm_ends_a_parallel_sweep_at_once_and_cleans_up(tmp_path):
    """SIGTERM to the sweep alone (``kill``, a service manager, a job's time
    limit) stops it as Ctrl-C does: exit 143, one line, its temporary keys
    removed. Its workers stop at once too: they neither run on orphaned nor
    keep the sweep waiting for the hundreds of runs still queued."""
    import os
    import signal
    import subprocess
    import sys
    import time

    trace = os.path.join(os.path.dirname(__file__), "..", "traces", "openclaw-strip-history.jsonl")
    temp = tmp_path / "tmp"
    temp.mkdir()
    capacities = ",".join(f"{n}%" for n in range(1, 41))  # 320 runs: minutes of work
    sweep = subprocess.Popen([sys.executable, "-m", "simulator.cli", "sweep", trace, "--capacities", capacities,
                              "--jobs", "2", "--policies", "lru,fifo,lfu,gdsf,hicache,prefix-chain,marconi,random"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "TMPDIR": str(temp)})
    deadline = time.monotonic() + 120
    while not list(temp.glob("kvsim-keys-*/meta.json")) and time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before it could be stopped"
        time.sleep(0.02)
    time.sleep(0.5)  # (the replays under way)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=30)
    assert sweep.returncode == 143, err
    assert err.strip().splitlines()[-1] == "kvsim: terminated", err
    assert "Traceback" not in err, err
    assert not list(temp.glob("kvsim-keys-*"))
    _assert_no_process_left(sweep.pid)


def test_a_stopped_sweep_ends_the_replays_under_way_instead_of_waiting_for_them():
    """The executor alone would let each running replay finish (minutes, on a
    large trace) before the sweep could exit; the sweep ends them."""
    import concurrent.futures
    import multiprocessing
    import signal
    import time

    from simulator.sweep import _stop_workers

    pool = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    futures = [pool.submit(time.sleep, 600) for _ in range(5)]
    deadline = time.monotonic() + 60
    while sum(f.running() for f in futures) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    processes = list(pool._processes.values())
    try:
        assert len(processes) == 2 and all(p.is_alive() for p in processes)
        _stop_workers(pool)
        deadline = time.monotonic() + 30
        while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)  # (the executor's thread may be the one that reaps them)
        assert [p.exitcode for p in processes] == [-signal.SIGTERM] * 2  # ended, not finished
        assert sum(f.cancelled() for f in futures) >= 2  # the queued ones never start (one may be on its way)
    finally:
        for process in processes:
            process.kill()
        pool.shutdown(wait=True)
