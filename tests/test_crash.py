"""SIGKILL a writing process at random moments and at chosen I/O steps;
the reopened store must hold only complete, correct entries.

Checks after every kill: every indexed entry loads with exactly the bytes
written, no temp file survives the reopen, the capacity holds, index and
eviction manager agree, and (when nothing could have been evicted) every put
the writer saw succeed is still there.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from kvstore import CheckpointStore, Match

from .helpers import payload_for

WRITER = r"""
import os, random, signal, sys
sys.path.insert(0, {root!r})
from tests.helpers import payload_for
from kvstore import CheckpointStore
from kvstore.keys import Namespace, PrefixKeys
import kvstore.diskfiles as diskfiles, kvstore.index as index

path, capacity, seed, crash_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
counter = {{}}
def die_at(name, call_real, *args, after=False, **kwargs):
    counter[name] = counter.get(name, 0) + 1
    hit = crash_at == f"{{name}}:{{counter[name]}}"
    if hit and not after:
        os.kill(os.getpid(), signal.SIGKILL)
    result = call_real(*args, **kwargs)
    if hit and after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

real_fsync, real_rename, real_write, real_unlink = os.fsync, os.rename, os.write, os.unlink
diskfiles.os = type(sys)("os_proxy")
diskfiles.os.__dict__.update(os.__dict__)
diskfiles.os.fsync = lambda fd: die_at("fsync", real_fsync, fd)
diskfiles.os.write = lambda fd, b: die_at("write", real_write, fd, b)
diskfiles.os.rename = lambda a, b, **kw: die_at("rename-after", lambda: die_at("rename", real_rename, a, b, **kw),
                                               after=True)
diskfiles.os.unlink = lambda p, **kw: die_at("unlink", real_unlink, p, **kw)
real_bump = index.Index.bump_generation
index.Index.bump_generation = lambda self, txn: die_at("commit", real_bump, self, txn)

log = open(os.path.join(os.path.dirname(path), "acked.log"), "a", buffering=1)
# LRU keeps evicting under this load (240 keys); prefix-chain settles on the small
# files and stops writing, and the crash points need writes and unlinks to go on
with CheckpointStore(path, capacity_bytes=capacity, block_tokens=8, namespace="crash", policy="lru") as store:
    ns = Namespace("crash")
    while True:
        session = rng.randrange(40)
        length = 8 * rng.randint(1, 6)
        tokens = [session * 1000 + i for i in range(length)]
        key = PrefixKeys(ns, tokens, 8).key(length)
        size = rng.choice([10, 5000, 60_000, 200_000])
        if store.put(tokens, payload_for(key, size)):
            log.write(key + "\n")
        if rng.random() < 0.3:
            store.load_longest(tokens)
"""

CAPACITY_SMALL = 2 << 20  # 1 MiB of payloads: constant eviction
CAPACITY_LARGE = 512 << 20  # nothing is ever evicted


def run_writer(path, capacity, seed, crash_at="none", kill_after=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=root), path, str(capacity),
                             str(seed), crash_at], stderr=subprocess.PIPE)
    try:
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]


def check_store(path, capacity, *, expect_all_acked):
    acked_log = os.path.join(os.path.dirname(path), "acked.log")
    if not os.path.exists(os.path.join(path, "settings.json")):
        # killed before the store was created: nothing may have been acknowledged
        assert not os.path.exists(acked_log) or not open(acked_log).read().split()
        return 0
    with CheckpointStore(path) as store:
        store._check()
        assert os.listdir(os.path.join(path, "tmp")) == []
        assert store.stats()["bytes"] <= capacity
        for key in list(store._manager):
            entry = store._manager.get(key)
            payload = store.load(Match(tokens=entry.tokens, key=key))
            assert payload is not None, f"committed entry {key} does not load"
            assert payload == payload_for(key, len(payload))
        if expect_all_acked:
            acked = open(acked_log).read().split()
            missing = set(acked) - set(store._manager)
            assert not missing, f"{len(missing)} acknowledged puts were lost"
        return len(store._manager)


@pytest.mark.parametrize("capacity", [CAPACITY_SMALL, CAPACITY_LARGE])
def test_sigkill_at_random_moments(tmp_path, capacity, thorough, tally):
    rng = random.Random(capacity)
    path = str(tmp_path / "store")
    rounds = 300 if thorough else 70
    for round_ in range(rounds):
        run_writer(path, capacity, seed=round_, kill_after=rng.uniform(0.3, 0.8))
        check_store(path, capacity, expect_all_acked=capacity == CAPACITY_LARGE)
        tally("crash points tried (SIGKILL at random moments)")


STEPS = ["write", "fsync", "rename", "rename-after", "commit", "unlink"]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_io_step(tmp_path, step, thorough, tally):
    capacity = CAPACITY_SMALL if step == "unlink" else CAPACITY_LARGE
    path = str(tmp_path / "store")
    for nth in (range(1, 120) if thorough else [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]):
        run_writer(path, capacity, seed=nth, crash_at=f"{step}:{nth}")
        check_store(path, capacity, expect_all_acked=capacity == CAPACITY_LARGE)
        tally("crash points tried (SIGKILL at a chosen I/O step)")
