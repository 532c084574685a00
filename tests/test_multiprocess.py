"""Several processes share one store: writers, a reader, and an inspecting CLI.

While they run, the parent samples the bytes on disk (payload files plus
files being written) and checks they never exceed the payload budget. It
samples while holding the index's writer lock, so no process can evict,
reserve or commit during a scan (a scan spread over time could otherwise
count a victim and the file that replaced it); files renamed from ``tmp/`` to
``data/`` meanwhile are counted once, by inode. Every
load any process makes must return exactly the bytes written; all finish in
bounded time (no deadlock).
"""

import os
import subprocess
import sys
import time

from kvstore import CheckpointStore, Match
from kvstore.errors import StoreUnavailableError

from .helpers import payload_for

WORKER = r"""
import os, random, sys
sys.path.insert(0, {root!r})
from tests.helpers import payload_for
from kvstore import CheckpointStore
from kvstore.keys import Namespace, PrefixKeys
path, seed, ops, writer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "w"
rng = random.Random(seed)
ns = Namespace("shared")
loads = 0
with CheckpointStore(path, block_tokens=8, namespace="shared", policy="lru") as store:
    for _ in range(ops):
        session = rng.randrange(30)
        tokens = [session * 100 + i for i in range(8 * rng.randint(1, 4))]
        if writer:
            key = PrefixKeys(ns, tokens, 8).key(len(tokens))
            store.put(tokens, payload_for(key, rng.choice([1000, 50_000, 150_000])))
        n, payload = store.load_longest(tokens)
        if n:
            key = PrefixKeys(ns, tokens, 8).key(n)
            assert payload == payload_for(key, len(payload)), "wrong bytes"
            loads += 1
print(loads)
"""


def disk_bytes(path):
    sizes = {}
    for folder in ("tmp", "data"):
        for root, _, names in os.walk(os.path.join(path, folder)):
            for name in names:
                try:
                    info = os.lstat(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                sizes[info.st_ino] = max(sizes.get(info.st_ino, 0), info.st_size)
    return sum(sizes.values())


def test_concurrent_writers_and_readers_share_one_store(tmp_path, thorough, tally):
    path = str(tmp_path / "store")
    capacity = 2 << 20
    CheckpointStore(path, capacity_bytes=capacity, block_tokens=8, namespace="shared").close()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ops = 400 if thorough else 120
    roles = ["w", "w", "w", "r"]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(root=root), path, str(i), str(ops), role],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, role in enumerate(roles)]
    budget = capacity - (1 << 20)
    peak = 0
    deadline = time.monotonic() + 120
    observer = CheckpointStore(path)
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "workers did not finish: deadlock?"
        with observer._index.write():  # nobody evicts, reserves or commits meanwhile
            peak = max(peak, disk_bytes(path))
        subprocess.run([sys.executable, "-m", "kvstore.cli", "stats", path, "--json"],
                       check=True, capture_output=True)
        time.sleep(0.01)
    observer.close()
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err[-3000:]
    assert peak <= budget, f"disk held {peak} bytes, budget {budget}"
    with CheckpointStore(path) as store:
        store._check()
        assert disk_bytes(path) == store.stats()["tiers"]["disk"]["bytes"]
        for key in list(store._manager):
            entry = store._manager.get(key)
            payload = store.load(Match(tokens=entry.tokens, key=key))
            assert payload == payload_for(key, len(payload))
    tally("concurrent operations (4 processes)", ops * len(roles))


def test_a_forked_child_opens_the_index_afresh_and_both_keep_working(tmp_path):
    """LMDB environments must not be used across fork(): the child opens its own."""
    path = str(tmp_path / "s")
    tokens = list(range(32))
    with CheckpointStore(path, capacity_bytes=4 << 20, block_tokens=16, namespace="fork") as store:
        store.put(tokens[:16], b"parent")
        pid = os.fork()
        if pid == 0:  # the child: a store of its own on the same directory
            code = 1
            try:
                try:  # the inherited store refuses to work: its LMDB environment is the parent's
                    store.lookup(tokens)
                    code = 3
                except StoreUnavailableError:
                    pass
                with CheckpointStore(path) as child:
                    child.put(tokens, b"child")
                    if code == 1:
                        code = 0 if child.load_longest(tokens[:20]) == (16, b"parent") else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.load_longest(tokens) == (32, b"child")  # the parent's environment still works
