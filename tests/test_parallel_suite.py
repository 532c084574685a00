"""The suite itself runs on two workers (pytest-xdist): a test marked ``alone``
must run with nothing alongside, every other test alongside the others, and
the fault-injection tally must add up what every worker counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INNER_TESTS = textwrap.dedent('''
    import json, os, time
    import pytest

    def _record(folder, name, seconds):
        start = time.monotonic()
        time.sleep(seconds)
        with open(os.path.join(folder, f"{name}-{os.getpid()}.json"), "w") as f:
            json.dump({"name": name, "start": start, "end": time.monotonic()}, f)

    @pytest.mark.parametrize("i", range(6))
    def test_before(i, tally):
        _record(os.environ["SPANS"], f"before{i}", 0.4)
        tally("things counted", 1)

    @pytest.mark.alone
    def test_timed(tally):
        _record(os.environ["SPANS"], "alone", 1.5)
        tally("things counted", 100)

    @pytest.mark.parametrize("i", range(6))
    def test_after(i):
        _record(os.environ["SPANS"], f"after{i}", 0.4)
''')


def test_an_alone_test_runs_with_no_other_and_the_rest_run_side_by_side(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F401,F403\n"
                                          "from tests.conftest import _alone_or_alongside  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    spans = tmp_path / "spans"
    spans.mkdir()
    env = {**os.environ, "SPANS": str(spans), "PYTHONPATH": ROOT}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "load", "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "13 passed" in run.stdout
    assert "things counted: 106" in run.stdout  # the controller adds up both workers' counts
    records = [json.loads(p.read_text()) for p in spans.iterdir()]
    assert len({r["name"] for r in records}) == 13
    assert len({p.name.rsplit("-", 1)[1] for p in spans.iterdir()}) == 2  # both workers ran tests
    [alone] = [r for r in records if r["name"] == "alone"]
    others = [r for r in records if r["name"] != "alone"]
    for r in others:  # nothing ran while the alone test did
        assert r["end"] <= alone["start"] or r["start"] >= alone["end"], (r, alone)
    overlapping = sum(1 for a in others for b in others if a is not b and a["start"] < b["end"] and b["start"] < a["end"])
    assert overlapping > 0  # the others did run side by side
