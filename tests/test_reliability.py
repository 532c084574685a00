"""Real faults, not mocks: a full filesystem, corrupted and tampered files,
symlinks pointing out of the store. Never wrong bytes, never I/O outside the
store directory, and the store keeps serving what it has."""

import errno
import os
import shutil

import pytest

from kvstore import CheckpointStore, Match

from .helpers import payload_for, tmpfs

B = 4


def key_of(store, tokens):
    return store.lookup(tokens).key


def file_of(store, tokens):
    return store._files.path_of(store._manager.get(key_of(store, tokens)).file)


def test_a_full_filesystem_fails_the_put_cleanly_and_the_store_keeps_serving(tmp_path, tally):
    mount = str(tmp_path / "small")
    with tmpfs(mount, size="4m"):
        path = os.path.join(mount, "store")
        stored = []
        with CheckpointStore(path, capacity_bytes=64 << 20, block_tokens=B, namespace="full") as store:
            with pytest.raises(OSError) as info:
                for i in range(100):
                    tokens = [i, 1, 2, 3]
                    store.put(tokens, payload_for(str(i), 300_000))
                    stored.append(tokens)
            assert info.value.errno == errno.ENOSPC and "writing a checkpoint into" in str(info.value)
            assert os.listdir(os.path.join(path, "tmp")) == []  # no partial file
            assert store.lookup([len(stored), 1, 2, 3]) is None  # no index entry
            store._check()
            for i, tokens in enumerate(stored):
                assert store.load_longest(tokens) == (4, payload_for(str(i), 300_000))
            tally("disk-full puts refused")
            store.put(stored[0][:3] + [9], b"small enough", durable=True)  # what fits still goes in
        with CheckpointStore(path) as store:  # and the full disk did not damage anything on reopen
            store._check()
            assert store.load_longest(stored[-1])[0] == 4


def corrupt_flip_payload(path, other):
    with open(path, "r+b") as fh:
        fh.seek(-7, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-7, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0x40]))


def corrupt_flip_header(path, other):
    with open(path, "r+b") as fh:
        fh.seek(40)
        byte = fh.read(1)
        fh.seek(40)
        fh.write(bytes([byte[0] ^ 1]))


def corrupt_truncate(path, other):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def corrupt_append(path, other):
    with open(path, "ab") as fh:
        fh.write(b"garbage")


def corrupt_swap(path, other):
    tmp = path + ".swap"
    os.rename(path, tmp)
    os.rename(other, path)
    os.rename(tmp, other)


def corrupt_claims_other_key(path, other):
    shutil.copyfile(other, path)


def corrupt_empty(path, other):
    open(path, "wb").close()


CORRUPTIONS = [corrupt_flip_payload, corrupt_flip_header, corrupt_truncate, corrupt_append, corrupt_swap,
               corrupt_claims_other_key, corrupt_empty]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.removeprefix("corrupt_"))
def test_corrupted_files_load_as_misses_never_as_wrong_bytes(store_dir, corrupt, tally):
    a, b = [1, 2, 3, 4, 5, 6, 7, 8], [9, 9, 9, 9, 9, 9, 9, 9]
    with CheckpointStore(store_dir, capacity_bytes=4 << 20, block_tokens=B, namespace="c") as store:
        store.put(a[:4], payload_for("a4", 5000))
        store.put(a, payload_for("a8", 9000))
        store.put(b, payload_for("b8", 9000))
        corrupt(file_of(store, a), file_of(store, b))
        n, payload = store.load_longest(a)
        assert (n, payload) == (4, payload_for("a4", 5000))  # fell back to the shorter prefix
        n, payload = store.load_longest(b)
        assert (n, payload) in ((8, payload_for("b8", 9000)), (0, None))
        store._check()
    with CheckpointStore(store_dir) as store:  # reopening reconciles what is left
        store._check()
        assert store.load_longest(a)[1] in (payload_for("a4", 5000), None)
        assert store.verify()["bad"] == []
    tally("corrupted files tried")


def test_a_file_from_another_namespace_is_never_served(tmp_path):
    tokens = [1, 2, 3, 4]
    with CheckpointStore(str(tmp_path / "m1"), capacity_bytes=4 << 20, block_tokens=B, namespace="m1") as one, \
            CheckpointStore(str(tmp_path / "m2"), capacity_bytes=4 << 20, block_tokens=B, namespace="m2") as two:
        one.put(tokens, b"model one")
        two.put(tokens, b"model two")
        match = one.lookup(tokens)
        # plant m2's file under m1's name for the same tokens: the namespace hash gives it away
        shutil.copyfile(file_of(two, tokens), file_of(one, tokens))
        assert one.load(match) is None


def test_symlinks_never_lead_reads_or_deletes_outside_the_store(tmp_path, tally):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(b"not yours")
    path = str(tmp_path / "store")
    tokens = [1, 2, 3, 4]
    with CheckpointStore(path, capacity_bytes=4 << 20, block_tokens=B, namespace="s") as store:
        store.put(tokens, b"real")
        victim = file_of(store, tokens)
        os.unlink(victim)
        os.symlink(secret, victim)  # the payload file now points outside
        assert store.load(store.lookup(tokens)) is None
        os.symlink(outside, os.path.join(path, "data", "zz"))  # a data subfolder pointing outside
    with CheckpointStore(path) as store:
        store._check()
        assert store.lookup(tokens) is None
    assert secret.read_bytes() == b"not yours" and sorted(os.listdir(outside)) == ["secret.bin"]
    assert not os.path.islink(os.path.join(path, "data", "zz"))
    tally("corrupted files tried", 2)


def test_loads_are_verified_even_for_a_bit_flip_in_the_middle_of_a_large_payload(store_dir):
    tokens = list(range(8))
    big = payload_for("big", 20 << 20)  # spans several read chunks
    with CheckpointStore(store_dir, capacity_bytes=64 << 20, block_tokens=B, namespace="big") as store:
        store.put(tokens, big)
        with open(file_of(store, tokens), "r+b") as fh:
            fh.seek(10 << 20)
            byte = fh.read(1)
            fh.seek(10 << 20)
            fh.write(bytes([byte[0] ^ 0x80]))
        assert store.load(Match(tokens=8, key=key_of(store, tokens))) is None
