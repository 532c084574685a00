"""RAM tier, zstd cold tier, background writes and the chained layout, through the real store.

The state machine in ``kvstore.testing`` (run in ``test_conformance.py`` on
tiered and chained configurations) checks the invariants at random; these
tests pin down each behaviour on its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from kvstore import CheckpointStore
from kvstore.cli import main as kvstore_main

BLOCK = 4
MiB = 1 << 20


def prompt(i: int, blocks: int = 1) -> list[int]:
    return [i] * (BLOCK * blocks)


def kv(i: int, nbytes: int = 30_000) -> np.ndarray:
    """A compressible stand-in for an fp16 KV tensor."""
    values = np.zeros(nbytes // 2, dtype=np.float16)
    values[:: 3] = np.float16(i % 1000) / 8
    return values


def open_store(root, **kwargs) -> CheckpointStore:
    config = dict(capacity_bytes=MiB + (256 << 10), index_bytes=MiB, block_tokens=BLOCK,
                  namespace="tiers", policy="lru")
    config.update(kwargs)
    return CheckpointStore(os.path.join(root, "disk"), **config)


# ------------------------------------------------------------------ RAM tier
def test_ram_tier_serves_what_was_just_written_and_promotes_on_a_disk_hit(tmp_path):
    with open_store(tmp_path, ram_bytes=70_000) as store:  # room for two payloads
        for i in range(4):
            store.put(prompt(i), kv(i))
        assert store.lookup(prompt(3)).tier == "ram"
        assert store.lookup(prompt(0)).tier == "disk"  # pushed out of RAM, still on disk
        loaded = store.load(store.lookup(prompt(0)))
        assert np.array_equal(loaded, kv(0)) and loaded.flags.writeable  # disk loads are the caller's
        again = store.load(store.lookup(prompt(0)))
        assert store.lookup(prompt(0)).tier == "ram"
        assert np.array_equal(again, kv(0)) and not again.flags.writeable  # RAM copies are shared
        ram = store.stats()["tiers"]["ram"]
        assert ram["promotions"] == 1 and ram["evictions"] >= 2 and ram["bytes"] <= 70_000
        assert ram["hits"] >= 2 and ram["misses"] >= 1


def test_the_ram_copy_is_immune_to_the_caller_changing_its_buffer(tmp_path):
    with open_store(tmp_path, ram_bytes=MiB) as store:
        buffer = bytearray(b"kv state" * 100)
        store.put(prompt(1), buffer)
        buffer[:8] = b"XXXXXXXX"
        assert store.load(store.lookup(prompt(1))) == b"kv state" * 100


# ----------------------------------------------------------------- cold tier
def test_disk_evictions_are_demoted_to_cold_and_a_cold_hit_is_promoted(tmp_path):
    with open_store(tmp_path, cold_path=tmp_path / "cold", cold_capacity_bytes=MiB + MiB) as store:
        for i in range(20):  # 20 x 30 kB through a 256 KiB disk tier
            store.put(prompt(i), kv(i))
        stats = store.stats()["tiers"]
        assert stats["disk"]["demotions"] == stats["disk"]["evictions"] > 0
        assert stats["cold"]["entries"] == stats["disk"]["demotions"]
        assert stats["cold"]["compression_ratio"] > 5  # checksummed before compression
        assert stats["disk"]["entries"] + stats["cold"]["entries"] == 20  # nothing lost
        match = store.lookup(prompt(0))
        assert match.tier == "cold"
        assert np.array_equal(store.load(match), kv(0))
        assert store.lookup(prompt(0)).tier == "disk"
        after = store.stats()["tiers"]
        assert after["disk"]["promotions"] == 1 and after["cold"]["hits"] == 1
        store._check()
        store._cold._check()


def test_a_damaged_cold_file_is_a_miss_never_wrong_bytes(tmp_path):
    cold = tmp_path / "cold"
    with open_store(tmp_path, cold_path=cold, cold_capacity_bytes=2 * MiB) as store:
        for i in range(12):
            store.put(prompt(i), kv(i))
        assert store.lookup(prompt(0)).tier == "cold"
    for folder, _, names in os.walk(cold / "data"):
        for name in names:  # flip a byte in the middle of every compressed payload
            path = os.path.join(folder, name)
            data = bytearray(open(path, "rb").read())
            data[len(data) - 40] ^= 0xFF
            open(path, "wb").write(bytes(data))
    with open_store(tmp_path, cold_path=cold) as store:
        assert store.load(store.lookup(prompt(0))) is None
        assert store.stats()["tiers"]["cold"]["entries"] < store.stats()["tiers"]["disk"]["demotions"] + 12


def test_the_cold_tier_is_a_store_of_its_own(tmp_path, capsys):
    cold = tmp_path / "cold"
    with open_store(tmp_path, cold_path=cold, cold_capacity_bytes=2 * MiB, compression_level=9) as store:
        for i in range(12):
            store.put(prompt(i), kv(i))
    assert kvstore_main(["verify", str(cold)]) == 0
    capsys.readouterr()
    assert kvstore_main(["stats", str(tmp_path / "disk"), "--cold", str(cold), "--json"]) == 0
    tiers = json.loads(capsys.readouterr().out)["tiers"]
    assert tiers["cold"]["entries"] == tiers["disk"]["demotions"] == 4
    assert tiers["cold"]["compression_ratio"] > 5
    assert kvstore_main(["stats", str(cold)]) == 0  # on its own, too


@pytest.mark.parametrize("kwargs, message", [
    ({"compression_level": 3}, "cold_path"),
    ({"cold_capacity_bytes": MiB}, "cold_path"),
    ({"ram_bytes": -1}, "ram_bytes"),
    ({"cold_path": "COLD"}, "cold_capacity_bytes"),
    ({"cold_path": "COLD", "cold_capacity_bytes": 2 * MiB, "compression_level": 99}, "compression_level"),
    ({"max_pending_writes": 0}, "max_pending_writes"),
])
def test_bad_tier_arguments_name_the_argument(tmp_path, kwargs, message):
    if kwargs.get("cold_path") == "COLD":
        kwargs["cold_path"] = tmp_path / "cold"
    with pytest.raises(ValueError, match=message):
        open_store(tmp_path, **kwargs)


def test_the_cold_tier_cannot_be_the_store_itself(tmp_path):
    with pytest.raises(ValueError, match="cold_path"):
        open_store(tmp_path, cold_path=tmp_path / "disk", cold_capacity_bytes=2 * MiB)


# --------------------------------------------------------- background writes
def test_a_non_durable_put_is_served_at_once_and_written_by_flush(tmp_path):
    with open_store(tmp_path) as store:
        assert store.put(prompt(1), kv(1), durable=False) is True
        assert store.lookup(prompt(1)) is not None
        store.flush()
        assert store.lookup(prompt(1)).tier == "disk"
        assert store.stats()["tiers"]["pending"]["entries"] == 0
    with open_store(tmp_path) as store:
        assert np.array_equal(store.load(store.lookup(prompt(1))), kv(1))


def test_close_waits_for_pending_writes(tmp_path):
    with open_store(tmp_path, max_pending_writes=64) as store:
        for i in range(6):
            store.put(prompt(i), kv(i, 3000), durable=False)
    with open_store(tmp_path) as store:
        assert all(store.lookup(prompt(i)).tier == "disk" for i in range(6))


def test_a_full_queue_drops_the_oldest_pending_write_without_blocking(tmp_path):
    with open_store(tmp_path, max_pending_writes=2) as store:
        started, release = threading.Event(), threading.Event()
        write = store._disk._store_file

        def slow_write(*args, **kwargs):
            started.set()
            release.wait(30)
            return write(*args, **kwargs)

        store._disk._store_file = slow_write
        assert store.put(prompt(0), kv(0, 3000), durable=False)
        assert started.wait(30)
        for i in range(1, 4):  # 0 is being written, 1 and 2 queue, 3 pushes 1 out
            assert store.put(prompt(i), kv(i, 3000), durable=False)
        release.set()
        store.flush()
        assert store.stats()["tiers"]["pending"]["dropped_writes"] == 1
        assert store.lookup(prompt(1)) is None
        assert [store.lookup(prompt(i)).tier for i in (0, 2, 3)] == ["disk"] * 3


CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from kvstore import CheckpointStore
    store = CheckpointStore(sys.argv[1], capacity_bytes=64 << 20, block_tokens=4, namespace="crash",
                            max_pending_writes=64)
    for i in range(20):
        store.put([i] * 4, np.full(50_000, i, np.uint8), durable=False)
    store.flush()
    print("flushed", flush=True)
    for i in range(20, 60):
        store.put([i] * 4, np.full(50_000, i, np.uint8), durable=False)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_crash_loses_only_pending_writes(tmp_path):
    path = str(tmp_path / "store")
    child = subprocess.run([sys.executable, "-c", CRASHING_WRITER, path], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL and "flushed" in child.stdout
    with CheckpointStore(path) as store:
        for i in range(20):  # everything flushed survived, byte for byte
            assert np.array_equal(store.load(store.lookup([i] * 4)), np.full(50_000, i, np.uint8))
        for i in range(20, 60):  # a pending write is either whole or absent
            match = store.lookup([i] * 4)
            assert match is None or np.array_equal(store.load(match), np.full(50_000, i, np.uint8))
        store._check()
        assert os.listdir(os.path.join(path, "tmp")) == []


# ------------------------------------------------------------ chained layout
def test_chained_load_assembles_the_blocks_in_order_and_saves_space(tmp_path):
    tokens = list(range(BLOCK * 4 + 2))
    blocks = [np.full(1000, i, np.float16) for i in range(5)]
    with open_store(tmp_path, layout="chained", capacity_bytes=4 * MiB) as store:
        for i, end in enumerate([4, 8, 12, 16]):
            store.put(tokens[:end], blocks[i])
        store.put(tokens, blocks[4], tail=True)
        n, parts = store.load_longest(tokens)
        assert n == len(tokens) and len(parts) == 5
        assert all(np.array_equal(got, want) for got, want in zip(parts, blocks))
        n, parts = store.load_longest(tokens[:10] + [999] * 8)  # diverges inside block 3
        assert n == 8 and len(parts) == 2
        disk = store.stats()["tiers"]["disk"]
        assert disk["snapshot_equivalent_bytes"] > 2.5 * disk["bytes"]


def test_chained_put_refuses_a_block_whose_parent_is_missing(tmp_path):
    with open_store(tmp_path, layout="chained") as store:
        with pytest.raises(ValueError, match="in order"):
            store.put(list(range(8)), b"second block")


def test_a_block_after_a_gap_is_never_readable_as_a_prefix(tmp_path):
    tokens = list(range(BLOCK * 3))
    with open_store(tmp_path, layout="chained", ram_bytes=MiB) as store:
        for end in (4, 8, 12):
            store.put(tokens[:end], bytes([end]) * 100)
        first = store.lookup(tokens[:4]).key
        store._disk.remove(first)   # the first block leaves the disk...
        store._ram.discard(first)   # ...and RAM; blocks 2 and 3 are still stored
        assert store.lookup(tokens) is None
        assert store.load_longest(tokens) == (0, None)


def test_chained_blocks_demote_leaf_first_and_load_across_tiers(tmp_path):
    tokens = list(range(BLOCK * 6))
    with open_store(tmp_path, layout="chained", cold_path=tmp_path / "cold",
                    cold_capacity_bytes=4 * MiB) as store:
        for end in range(BLOCK, len(tokens) + 1, BLOCK):
            store.put(tokens[:end], kv(end, 40_000))
        for i in range(6):  # other prompts push this chain's deep blocks to cold
            store.put(prompt(1000 + i), kv(i, 40_000))
        tiers = {end: store._stack.tier_of(store._prefix_keys(tokens).key(end)).name
                 for end in range(BLOCK, len(tokens) + 1, BLOCK)}
        assert "cold" in tiers.values()
        order = list(tiers.values())
        assert order == sorted(order, key=["disk", "cold"].index), tiers  # deep blocks went first
        n, parts = store.load_longest(tokens)
        assert n == len(tokens)
        assert all(np.array_equal(p, kv(end, 40_000)) for p, end in zip(parts, tiers))


def test_a_read_only_array_is_queued_without_a_copy_and_a_writable_one_is_copied(tmp_path):
    with open_store(tmp_path, ram_bytes=MiB) as store:
        owned = kv(1)
        owned.flags.writeable = False
        store.put(prompt(1), owned, durable=False)
        writable = kv(2)
        store.put(prompt(2), writable, durable=False)
        assert store.load(store.lookup(prompt(1))) is owned
        served = store.load(store.lookup(prompt(2)))
        assert served is not writable and np.array_equal(served, writable)
        store.flush()
        assert np.array_equal(store._disk.read(store.lookup(prompt(1)).key)[1], owned)
