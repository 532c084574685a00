"""The README's examples run as written."""

import importlib.util
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_the_ten_line_policy_example_passes_the_kit():
    spec = importlib.util.spec_from_file_location("my_policy_test", EXAMPLES / "my_policy_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_my_policy()


def test_quickstart_runs(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), str(tmp_path / "qs")],
                         capture_output=True, text=True, check=True).stdout
    assert "next turn: reloaded 8192 tokens" in out


def test_the_llama_agent_example_reloads_the_previous_turn(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "llama_agent.py"), str(tmp_path / "agent"),
                          "--turns", "2"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    first_prompt = int(rows[0][1])
    assert int(rows[1][5]) == first_prompt  # turn 2 reloads all of turn 1's prompt
