"""CheckpointStore: the public API, its errors, and what survives a reopen."""

import logging
import os
import stat

import numpy as np
import pytest

from kvstore import CheckpointStore, Match
from kvstore.errors import (CapacityError, ConfigMismatchError, KVStoreError, PolicyError,
                            StoreUnavailableError)
from policies import LRUPolicy

from .helpers import remount, tmpfs, tokens_for

B = 16
MiB = 1 << 20


def open_store(path, capacity=4 * MiB, **kw):
    kw.setdefault("block_tokens", B)
    kw.setdefault("namespace", "test-model")
    return CheckpointStore(path, capacity_bytes=capacity, **kw)


def test_put_lookup_load_round_trip_for_every_payload_kind(store_dir):
    tokens = tokens_for(1, 100)
    payloads = {16: b"bytes", 32: bytearray(b"bytearray"), 48: memoryview(b"view"),
                64: np.arange(24, dtype=np.float16).reshape(2, 3, 4)}
    with open_store(store_dir) as store:
        for n, payload in payloads.items():
            assert store.put(tokens[:n], payload) is True
        for n, payload in payloads.items():
            match = store.lookup(tokens[:n + 5])
            assert match == Match(tokens=n, key=match.key, tier="disk", is_tail=False)
            got = store.load(match)
            if isinstance(payload, np.ndarray):
                assert got.dtype == payload.dtype and got.shape == payload.shape
                np.testing.assert_array_equal(got, payload)
            else:
                assert got == bytes(payload)


def test_lookup_returns_the_longest_stored_prefix_only(store_dir):
    a = tokens_for(1, 80)
    b = a[:40] + tokens_for(2, 40)  # diverges at token 40
    with open_store(store_dir) as store:
        for n in (16, 32, 48, 64, 80):
            store.put(a[:n], f"a{n}".encode())
        assert store.lookup(a).tokens == 80
        assert store.lookup(b).tokens == 32  # 48 would cover the divergence
        assert store.load_longest(b) == (32, b"a32")
        assert store.lookup(a[:15]) is None
        assert store.lookup([]) is None
        assert store.load_longest(tokens_for(3, 80)) == (0, None)


def test_tail_checkpoints_are_found_through_their_aligned_anchor(store_dir):
    prompt = tokens_for(1, 50)
    with open_store(store_dir) as store:
        store.put(prompt[:32], b"aligned")
        store.put(prompt, b"tail-50", tail=True)
        store.put(prompt[:7], b"tail-7", tail=True)  # shorter than one block: anchored at the root
        assert store.lookup(prompt + [1, 2]).tokens == 50
        assert store.lookup(prompt[:49]).tokens == 32
        assert store.lookup(prompt[:10]).tokens == 7
        assert store.load(store.lookup(prompt)) == b"tail-50"
        assert store.lookup(prompt).is_tail
        other = prompt[:45] + [7] * 5
        assert store.lookup(other).tokens == 32
        assert store.stats()["tiers"]["disk"]["tail_entries"] == 2


def test_put_rejects_bad_arguments_with_errors_naming_them(store_dir):
    with open_store(store_dir) as store:
        with pytest.raises(ValueError, match=r"len\(tokens\)=20 is not a multiple of block_tokens=16"):
            store.put(list(range(20)), b"x")
        with pytest.raises(ValueError, match="tokens must not be empty"):
            store.put([], b"x", tail=True)
        with pytest.raises(TypeError, match="payload must be bytes"):
            store.put(list(range(16)), "text")
        with pytest.raises(TypeError, match="priority must be an int"):
            store.put(list(range(16)), b"x", priority="high")
        with pytest.raises(TypeError, match="tail must be a bool"):
            store.put(list(range(16)), b"x", tail=1)
        with pytest.raises(TypeError, match="tokens must be integers"):
            store.lookup([1.5] * 16)
        with pytest.raises(TypeError, match="match must be a Match"):
            store.load((16, "abc"))


def test_constructor_rejects_bad_arguments(store_dir):
    with pytest.raises(ValueError, match="capacity_bytes must be > 0"):
        CheckpointStore(store_dir, capacity_bytes=0, namespace="m")
    with pytest.raises(TypeError, match="capacity_bytes must be an int"):
        CheckpointStore(store_dir, capacity_bytes="1G", namespace="m")
    with pytest.raises(ValueError, match="layout must be one of"):
        CheckpointStore(store_dir, capacity_bytes=4 * MiB, namespace="m", layout="tree")
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        CheckpointStore(store_dir, capacity_bytes=4 * MiB, namespace="m", policy="nope")
    with pytest.raises(ValueError, match="namespace is required"):
        CheckpointStore(store_dir, capacity_bytes=4 * MiB)
    with pytest.raises(ValueError, match="too small"):
        CheckpointStore(store_dir, capacity_bytes=MiB, namespace="m")


def test_a_payload_larger_than_capacity_is_refused_and_nothing_is_lost(store_dir):
    tokens = tokens_for(1, 32)
    with open_store(store_dir, capacity=2 * MiB) as store:
        store.put(tokens[:16], b"keep me")
        with pytest.raises(CapacityError, match="exceeds the store's payload budget"):
            store.put(tokens, bytes(2 * MiB))
        assert store.load_longest(tokens) == (16, b"keep me")
        store._check()


def test_eviction_keeps_the_store_within_capacity(store_dir):
    capacity = 2 * MiB  # 1 MiB index slice + 1 MiB of payloads
    with open_store(store_dir, capacity=capacity, policy="lru") as store:
        for session in range(12):
            store.put(tokens_for(session, 16), bytes(200_000))
        stats = store.stats()
        assert stats["bytes"] <= capacity and stats["evictions"] == 7 and stats["entries"] == 5
        assert store.lookup(tokens_for(0, 16)) is None  # oldest went first
        assert store.lookup(tokens_for(11, 16)) is not None
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store_dir) for f in fs
                   if "/data/" in os.path.join(d, f))
        assert disk == stats["tiers"]["disk"]["bytes"]
        store._check()


def test_put_of_a_stored_prefix_is_a_no_op(store_dir):
    with open_store(store_dir) as store:
        assert store.put(list(range(16)), b"first") is True
        assert store.put(list(range(16)), b"second") is False
        assert store.load(store.lookup(list(range(16)))) == b"first"


def test_entries_hits_and_policy_order_survive_a_reopen(store_dir):
    t = [tokens_for(i, 16) for i in range(3)]
    clock = iter(range(100)).__next__
    with open_store(store_dir, capacity=2 * MiB, clock=clock) as store:
        for tokens in t:
            store.put(tokens, bytes(300_000))
        store.lookup(t[0])  # t[1] is now least recently used
    with CheckpointStore(store_dir, policy="lru", clock=clock) as store:
        assert store.stats()["hits"] == 1
        assert store.load_longest(t[2])[0] == 16
        store.put(tokens_for(9, 16), bytes(300_000))
        assert store.lookup(t[1]) is None and store.lookup(t[0]) is not None


@pytest.mark.parametrize("name, value", [("namespace", "other"), ("block_tokens", 32), ("layout", "chained")])
def test_reopening_with_other_settings_is_refused(store_dir, name, value):
    open_store(store_dir).close()
    kwargs = {"namespace": "test-model", "block_tokens": B, name: value}
    with pytest.raises(ConfigMismatchError, match=f"created with {name}="):
        CheckpointStore(store_dir, **kwargs)


def test_another_namespace_never_matches(tmp_path):
    tokens = tokens_for(1, 16)
    with open_store(str(tmp_path / "a"), namespace="m1") as a, open_store(str(tmp_path / "b"), namespace="m2") as b:
        a.put(tokens, b"x")
        b.put(tokens, b"x")
        assert a.lookup(tokens).key != b.lookup(tokens).key


def test_missing_parent_and_non_directory_paths_are_clear_errors(tmp_path):
    with pytest.raises(StoreUnavailableError, match="parent .* does not exist"):
        open_store(str(tmp_path / "no" / "such" / "store"))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreUnavailableError, match="not a directory"):
        open_store(str(tmp_path / "file"))
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        CheckpointStore(str(tmp_path / "absent"), readonly=True)


def test_read_only_directory_is_a_clear_error_and_readonly_mode_still_serves(tmp_path):
    mount = str(tmp_path / "ro")
    tokens = tokens_for(1, 32)
    with tmpfs(mount, size="8m"):
        with open_store(os.path.join(mount, "s")) as store:
            store.put(tokens, b"served")
        remount(mount, "ro")
        with pytest.raises(StoreUnavailableError, match="not writable.*readonly=True"):
            open_store(os.path.join(mount, "s"))
        with CheckpointStore(os.path.join(mount, "s"), readonly=True) as store:
            assert store.load_longest(tokens) == (32, b"served")
            with pytest.raises(KVStoreError, match="read-only"):
                store.put(tokens[:16], b"x")


def test_files_are_private(store_dir):
    with open_store(store_dir) as store:
        store.put(list(range(16)), b"secret")
    for folder, _, names in os.walk(store_dir):
        for name in names:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))


def test_corrupted_payload_loads_as_none_and_falls_back_to_a_shorter_prefix(store_dir):
    tokens = tokens_for(1, 32)
    with open_store(store_dir) as store:
        store.put(tokens[:16], b"short" * 100)
        store.put(tokens, b"long" * 100)
        match = store.lookup(tokens)
        path = store._files.path_of(store._manager.get(match.key).file)
        with open(path, "r+b") as fh:
            fh.seek(-10, os.SEEK_END)
            fh.write(b"XXXX")
        assert store.load(match) is None
        assert store.load_longest(tokens) == (16, b"short" * 100)
        assert store.stats()["quarantined"] == 1
        assert os.listdir(os.path.join(store_dir, "quarantine"))
        store._check()


def test_a_vanished_file_is_a_miss(store_dir):
    tokens = tokens_for(1, 16)
    with open_store(store_dir) as store:
        store.put(tokens, b"x")
        match = store.lookup(tokens)
        os.unlink(store._files.path_of(store._manager.get(match.key).file))
        assert store.load(match) is None
        assert store.lookup(tokens) is None


def test_open_reconciles_temp_files_orphans_and_garbage(store_dir):
    tokens = tokens_for(1, 32)
    with open_store(store_dir) as store:
        store.put(tokens[:16], b"indexed")
        store.put(tokens, b"orphan")
        orphan = store._manager.get(store.lookup(tokens).key).file
        with store._disk._write() as txn:  # a crash between rename and index commit looks like this
            store._index.delete_entry(txn, store.lookup(tokens).key)
    open(os.path.join(store_dir, "tmp", "dead.tmp"), "wb").write(b"partial")
    garbage = os.path.join(store_dir, "data", "ab", "ab" * 20 + ".00000000.kv")
    os.makedirs(os.path.dirname(garbage), exist_ok=True)
    open(garbage, "wb").write(b"not a checkpoint")
    with open_store(store_dir) as store:
        assert os.listdir(os.path.join(store_dir, "tmp")) == []
        assert store.load_longest(tokens) == (32, b"orphan")  # adopted
        assert store._manager.get(store.lookup(tokens).key).file == orphan
        assert os.listdir(os.path.join(store_dir, "quarantine")) == [os.path.basename(garbage)]
        store._check()


def test_reopening_with_a_smaller_capacity_evicts_down_to_it(store_dir):
    with open_store(store_dir, capacity=4 * MiB) as store:
        for session in range(10):
            store.put(tokens_for(session, 16), bytes(250_000))
    with open_store(store_dir, capacity=2 * MiB) as store:
        assert store.stats()["bytes"] <= 2 * MiB
        store._check()
    with CheckpointStore(store_dir) as store:
        assert store.capacity_bytes == 2 * MiB


def test_pin_keeps_a_prefix_through_eviction(store_dir):
    system = tokens_for(0, 16)
    with open_store(store_dir, capacity=2 * MiB, policy="lru") as store:  # lru: unpinned, it goes
        store.put(system, bytes(200_000))
        assert store.pin(system + [1, 2, 3]).tokens == 16
        for session in range(1, 10):
            store.put(tokens_for(session, 16), bytes(200_000))
        assert store.lookup(system) is not None
        store.unpin(system)
        for session in range(10, 20):
            store.put(tokens_for(session, 16), bytes(200_000))
        assert store.lookup(system) is None
        with pytest.raises(ValueError, match="no prefix of tokens is stored"):
            store.pin(tokens_for(99, 16))


class ExplodingPolicy(LRUPolicy):
    def victim(self, now):
        raise RuntimeError("boom")


def test_a_broken_policy_fails_the_put_and_leaves_the_store_consistent(store_dir):
    with open_store(store_dir, capacity=2 * MiB, policy=ExplodingPolicy()) as store:
        for session in range(3):
            store.put(tokens_for(session, 16), bytes(300_000))
        with pytest.raises(PolicyError, match="raised in victim"):
            store.put(tokens_for(5, 16), bytes(300_000))
        store._check()
        assert all(store.load_longest(tokens_for(s, 16))[0] == 16 for s in range(3))
        assert os.listdir(os.path.join(store_dir, "tmp")) == []


def test_closed_store_refuses_work_and_close_is_idempotent(store_dir):
    store = open_store(store_dir)
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.lookup([1] * 16)


def test_the_library_logs_and_never_prints(store_dir, capsys, caplog):
    caplog.set_level(logging.INFO, logger="kvstore")
    with open_store(store_dir) as store:
        store.put(list(range(16)), b"x")
    open(os.path.join(store_dir, "tmp", "x.tmp"), "wb").close()
    open_store(store_dir).close()
    assert capsys.readouterr() == ("", "")
    assert any("temp file" in r.message for r in caplog.records)


def test_two_store_objects_in_one_process_share_the_index(store_dir):
    with open_store(store_dir) as a, open_store(store_dir) as b:
        a.put(list(range(16)), b"from a")
        assert b.load_longest(list(range(16))) == (16, b"from a")


def test_an_ended_sessions_own_checkpoints_go_first_and_shared_ones_stay(store_dir):
    system = tokens_for(0, B)
    a = system + tokens_for(1, B)  # session "a": the system prompt, then its own block
    b = system + tokens_for(2, B)
    c = system + tokens_for(3, B)
    size = 200_000
    with open_store(store_dir, capacity=1 * MiB + 4 * size + 8192, index_bytes=1 * MiB,
                    policy="lru") as store:
        store.put(system, bytes(size), session="a")
        store.put(a, bytes(size), session="a")
        store.put(b, bytes(size), session="b")
        assert store.load_longest(b + [7], session="b")[0] == 2 * B  # b also uses the system prompt's prefix
        assert store.lookup(system, session="b").tokens == B
        store.put(c, bytes(size), session="c")  # full now
        assert store.end_session("c") == 1  # its own block; nothing of it is shared
        assert store.end_session("a") == 1  # its block only: b used the system prompt too
        store.put(system + tokens_for(4, B), bytes(size))  # LRU alone would evict "a"'s block, then system
        assert store.lookup(c).tokens == B  # c's block went first
        assert store.lookup(a).tokens == 2 * B and store.lookup(system).tokens == B
        with pytest.raises(TypeError, match="session"):
            store.put(a, b"x", session=3)
