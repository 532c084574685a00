"""A trace's keys computed once (``simulator.keyed``) against the store's keys of each prompt."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kvstore.keys import Namespace, PrefixKeys
from simulator import keyed
from simulator.generators.openclaw import OpenClawConfig, generate as generate_openclaw
from simulator.keyed import KeyedTrace
from simulator.prompt_hashing import hash_batches
from simulator.tokens import TokenMaterializer
from simulator.trace import Request

_SPAN = st.tuples(st.sampled_from("abcde"), st.integers(0, 9))


@st.composite
def _traces(draw) -> list[Request]:
    """Prompts that mostly grow out of an earlier one (any session's): a prefix of
    its spans, the last of them cut or grown, then new spans. So the same content
    recurs at the same position, at other positions, whole and cut short."""
    prompts: list[tuple] = []
    for _ in range(draw(st.integers(1, 12))):
        spans: list = []
        if prompts and draw(st.booleans()):
            base = draw(st.sampled_from(prompts))
            spans = list(base[:draw(st.integers(0, len(base)))])
            if spans and draw(st.booleans()):
                content, n = spans[-1]
                spans[-1] = (content, max(0, n + draw(st.integers(-3, 3))))
        spans += draw(st.lists(_SPAN, max_size=3))
        if sum(n for _, n in spans):
            prompts.append(tuple(spans))
    return [Request(draw(st.sampled_from(["s1", "s2", "s3"])), float(t), prompt) for t, prompt in enumerate(prompts)]


def _store_tails(requests: list[Request], block: int) -> list[set[int]]:
    """Per request, the prompt-end lengths it has a key for by the store's own
    keys: each earlier end whose key its prefix of that length has, and its own."""
    ns, tokens_of = Namespace("kvsim"), TokenMaterializer()
    ends: dict[int, set[str]] = {}  # length -> keys of the prompt ends seen there
    out = []
    for request in requests:
        prefix = PrefixKeys(ns, tokens_of.tokens(request.prompt), block)
        total = len(prefix)
        known = {n for n, keys in ends.items() if n <= total and n % block and prefix.key(n) in keys}
        if total % block:
            known.add(total)
            ends.setdefault(total, set()).add(prefix.key(total))
        out.append(known)
    return out


@settings(max_examples=200, deadline=None)
@given(_traces(), st.sampled_from([1, 3, 4, 8]))
def test_each_prompt_knows_exactly_the_earlier_ends_whose_store_key_it_has(requests, block):
    keys = KeyedTrace.build(requests, block_tokens=block)
    expected = _store_tails(requests, block)
    assert [set(keys.prompt(i).known_tails()) for i in range(len(requests))] == expected
    # and one id per distinct store key: two prompts share an end's id exactly when they share its key
    ns, tokens_of = Namespace("kvsim"), TokenMaterializer()
    id_of: dict[str, int] = {}
    for i, request in enumerate(requests):
        prefix = PrefixKeys(ns, tokens_of.tokens(request.prompt), block)
        for n, key_id in keys.prompt(i).known_tails().items():
            assert id_of.setdefault(prefix.key(n), key_id) == key_id
    assert len(set(id_of.values())) == len(id_of)


def test_hashing_in_worker_processes_gives_the_same_arrays():
    """Two processes hash a trace of several batches (sessions split between
    them, each resuming from its own earlier prompts): every array is the one
    this process computes alone."""
    requests = generate_openclaw(OpenClawConfig(sessions=150, session_gap_s=20, seed=31))
    assert len(requests) > 2 * keyed._BATCH  # (so the workers are used, and batches wait in line)
    alone = KeyedTrace.build(requests, block_tokens=1024)
    shared = KeyedTrace.build(requests, block_tokens=1024, jobs=2)
    assert alone._a.keys() == shared._a.keys()
    for name, array in alone._a.items():
        assert array.dtype == shared._a[name].dtype and np.array_equal(array, shared._a[name]), name
    assert alone.sessions == shared.sessions


def test_a_hashing_process_that_fails_is_an_error_naming_it():
    batches = [[("s", (("sys", 9),), [])], [("s", None, [])], [("s", (("sys", 9),), [])]]
    with pytest.raises(RuntimeError, match=r"(?s)hashing process kvsim-hash-\d failed:\n.*TypeError"):
        for _ in hash_batches(batches, "kvsim", 4, jobs=2):
            pass


_ENDLESS_HASHING = """
import multiprocessing, sys
from simulator.prompt_hashing import hash_batches

def batches():
    for i in range(10 ** 9):
        yield [(f"s{i % 7}", ((f"c{i}", 3000),), [])]

if __name__ == "__main__":
    digests = hash_batches(batches(), "kvsim", 1024, jobs=2)
    next(digests)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    for _ in digests:
        pass
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[:2] == ["State:", "Z"] for line in status)  # (exited, not reaped)
    except FileNotFoundError:
        return True


def test_hashing_processes_stop_when_their_parent_is_killed(tmp_path):
    """A sweep killed while it hashes (SIGKILL: no clean-up runs) leaves no
    hashing process behind: each notices its parent is gone within seconds."""
    script = tmp_path / "endless.py"
    script.write_text(_ENDLESS_HASHING)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and not any(_gone(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in workers)
    finally:
        parent.kill()
