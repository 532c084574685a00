"""The store in a hostile environment: an unlucky operator, a hostile local user.

One test per case found by trying to break it; each names the case number of
the issue that listed it. Cases that could hang run in a child process with a
deadline, so a regression fails instead of stalling the suite.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from array import array

import lmdb
import numpy as np
import pytest

from kvstore import CheckpointStore
from kvstore.errors import (CapacityError, ConfigMismatchError, KVStoreError, PinQuotaError,
                            StoreUnavailableError)

from .helpers import run_python, tmpfs, tokens_for

B = 16
MiB = 1 << 20
NOBODY = 65534


def open_store(path, capacity=4 * MiB, **kw):
    kw.setdefault("block_tokens", B)
    kw.setdefault("namespace", "hostile")
    return CheckpointStore(path, capacity_bytes=capacity, **kw)


def payload_file(store, tokens):
    """Path of the payload file that holds the checkpoint of ``tokens``."""
    match = store.lookup(tokens)
    name = store._manager.get(match.key).file
    return store._files.path_of(name)


def two_checkpoints(path):
    """A store holding tokens[:B] and tokens[:2B]; returns the tokens and the deep file."""
    tokens = tokens_for(1, 3 * B)
    with open_store(path) as store:
        store.put(tokens[:B], b"short" * 100)
        store.put(tokens[: 2 * B], b"deep" * 100)
        deep = payload_file(store, tokens[: 2 * B])
    return tokens, deep


def in_child(code, deadline=30):
    """Run ``code`` in a fresh interpreter; fail (instead of hanging) past ``deadline`` s."""
    preamble = "import sys; sys.path.insert(0, %r)\n" % os.getcwd()
    try:
        done = run_python(preamble + textwrap.dedent(code), timeout=deadline)
    except Exception as exc:  # subprocess.TimeoutExpired
        pytest.fail(f"hung for more than {deadline} s: {exc}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# 1 ---------------------------------------------------------------------------
def test_01_a_fifo_in_place_of_a_payload_is_a_miss_not_a_hang(store_dir):
    tokens, deep = two_checkpoints(store_dir)
    with CheckpointStore(store_dir):  # held open here: the child is not alone, so it cannot reconcile first
        os.unlink(deep)
        os.mkfifo(deep, 0o600)
        out = in_child(f"""
            from kvstore import CheckpointStore
            from kvstore.cli import main
            tokens = {tokens!r}
            with CheckpointStore({store_dir!r}, readonly=True) as store:
                print("verify", main(["verify", {store_dir!r}]))
            with CheckpointStore({store_dir!r}) as store:
                n, payload = store.load_longest(tokens)
                print(n, payload == b"short" * 100)
        """)
    assert out.splitlines()[-1] == f"{B} True"  # fell back to the shorter prefix
    with CheckpointStore(store_dir) as store:  # alone now: reopening reconciles without blocking
        assert store.load_longest(tokens)[0] == B


# 2 ---------------------------------------------------------------------------
def test_02_a_directory_in_place_of_a_payload_falls_back_and_never_breaks_eviction(store_dir):
    tokens, deep = two_checkpoints(store_dir)
    os.unlink(deep)
    os.mkdir(deep)
    with CheckpointStore(store_dir), CheckpointStore(store_dir, policy="lru") as store:  # not alone: no reconcile
        assert store.load_longest(tokens) == (B, b"short" * 100)
        store.put(tokens[: 2 * B], b"deep again")  # the bad entry was dropped: writable again
        victim = payload_file(store, tokens[:B])  # never read from here on: eviction meets it first
        os.unlink(victim)
        os.mkdir(victim)
        os.mkdir(os.path.join(victim, "inside"))
        other = tokens_for(2, 20 * B)
        for n in range(B, 20 * B + 1, B):  # fill the store: eviction must not trip over it
            store.put(other[:n], bytes(300_000))
        assert store.lookup(tokens[:B]) is None  # evicted
        store._check()


def test_02_a_payload_the_engine_cannot_read_falls_back_to_a_shorter_prefix(store_dir):
    """Mode 000: the unreadable checkpoint is a miss and the shorter one loads.
    Root reads anything, so as root the engine runs without the capabilities
    that bypass file permissions (``setpriv``, util-linux)."""
    tokens, deep = two_checkpoints(store_dir)
    os.chmod(deep, 0)
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.getcwd()!r})
        from kvstore import CheckpointStore
        with CheckpointStore({store_dir!r}), CheckpointStore({store_dir!r}) as store:
            n, payload = store.load_longest({tokens!r})
            print(n, payload == b"short" * 100)
    """)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    done = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(B), "True"]


# 3 and 11 -------------------------------------------------------------------
def test_03_a_cold_path_that_is_the_store_itself_is_refused(tmp_path, store_dir):
    two_checkpoints(store_dir)
    link = str(tmp_path / "cold-link")
    os.symlink(store_dir, link)
    out = in_child(f"""
        from kvstore import CheckpointStore
        try:
            CheckpointStore({store_dir!r}, cold_path={link!r}, cold_capacity_bytes=1 << 22)
        except ValueError as exc:
            print("refused:", exc)
    """)
    assert out.startswith("refused:") and "cold_path" in out


def test_11_a_cold_path_inside_the_store_is_refused(store_dir):
    two_checkpoints(store_dir)
    for inside in ("quarantine", "quarantine/cold", "data", "."):
        with pytest.raises(ValueError, match="cold_path"):
            CheckpointStore(store_dir, cold_path=os.path.join(store_dir, inside), cold_capacity_bytes=4 * MiB)
    assert os.listdir(os.path.join(store_dir, "quarantine")) == []


# 4 ---------------------------------------------------------------------------
def test_04_a_data_folder_swapped_for_a_symlink_while_open_is_never_followed(tmp_path, store_dir):
    outside = tmp_path / "outside"
    outside.mkdir()
    tokens = tokens_for(3, 4 * B)
    with open_store(store_dir) as store:
        store.put(tokens[:B], b"first")
        key_dir = os.path.dirname(payload_file(store, tokens[:B]))
        shutil.rmtree(key_dir)
        os.symlink(outside, key_dir)  # the attacker's folder, planted while the store is open
        assert store.load_longest(tokens) == (0, None)  # never read through the link
        for n in range(2 * B, 4 * B + 1, B):
            store.put(tokens[:n], b"x" * 50)
        store.put(tokens[:B], b"first again")
        assert store.load_longest(tokens[: B + 1]) == (B, b"first again")
        store._check()
    assert list(outside.iterdir()) == []  # nothing written outside the store


# 5 ---------------------------------------------------------------------------
def test_05_a_world_writable_store_directory_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(path, 0o777)
    with pytest.raises(StoreUnavailableError, match="writable by others") as err:
        open_store(str(path))
    assert str(path) in str(err.value)
    with open_store(str(path), trust_path=True) as store:  # an explicit opt-in
        store.put(tokens_for(1, B), b"ok")


def test_05_a_store_directory_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root) to create a directory owned by another user")
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(StoreUnavailableError, match="owned by uid"):
        open_store(str(path))


def test_05_a_planted_index_symlink_is_refused_and_nothing_is_written_there(tmp_path):
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    target = tmp_path / "attacker"
    target.mkdir()
    os.symlink(target, path / "index")
    with pytest.raises(StoreUnavailableError, match="symlink"):
        open_store(str(path))
    assert list(target.iterdir()) == []


def test_05_a_store_path_that_is_a_symlink_is_refused_and_its_tmp_left_alone(tmp_path):
    real = tmp_path / "elsewhere"
    (real / "tmp").mkdir(parents=True)
    (real / "tmp" / "precious.tmp").write_bytes(b"not yours")
    os.chmod(real, 0o700)
    link = tmp_path / "store"
    os.symlink(real, link)
    with pytest.raises(StoreUnavailableError, match="symlink"):
        open_store(str(link))
    assert (real / "tmp" / "precious.tmp").read_bytes() == b"not yours"


# 6 ---------------------------------------------------------------------------
def test_06_a_full_filesystem_at_the_index_commit_is_an_oserror_naming_the_store(tmp_path):
    mount = str(tmp_path / "small")
    with tmpfs(mount, size="2m"):
        path = os.path.join(mount, "store")
        prompts = [tokens_for(i, B) for i in range(300)]
        with open_store(path, capacity=64 * MiB, index_bytes=8 * MiB) as store:
            for prompt in prompts:
                store.put(prompt, b"")
            filler = os.open(os.path.join(mount, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
            try:  # fill the filesystem
                while True:
                    os.write(filler, b"\0" * 65536)
            except OSError:
                pass
            finally:
                os.close(filler)
            with pytest.raises(OSError) as err:
                for prompt in prompts:  # pins touch only the index: its commit meets the full disk
                    store.pin(prompt)
            assert not isinstance(err.value, lmdb.Error) and err.value.errno == errno.ENOSPC
            assert path in str(err.value)
            os.unlink(os.path.join(mount, "filler"))
            assert store.load_longest(prompts[0]) == (B, b"")  # still serving
            store.pin(prompts[0])
            store._check()


# 7 ---------------------------------------------------------------------------
def test_07_a_full_index_with_everything_pinned_raises_store_errors_not_lmdb_ones(store_dir):
    with open_store(store_dir, capacity=64 * MiB, index_bytes=1 * MiB, pin_quota_bytes=60 * MiB) as store:
        raised = None
        try:
            for session in range(20_000):  # one-block prompts, each pinned: the index fills up
                prompt = tokens_for(session, B)
                store.put(prompt, b"")
                store.pin(prompt)
        except Exception as exc:
            raised = exc
        assert isinstance(raised, (CapacityError, PinQuotaError)), repr(raised)
        with pytest.raises((CapacityError, PinQuotaError)):
            prompt = tokens_for(30_000, B)
            store.put(prompt, b"")
            store.pin(prompt)
        store._check()


# 8 ---------------------------------------------------------------------------
def test_08_reopening_below_the_pinned_bytes_changes_nothing(store_dir):
    tokens = tokens_for(6, 4 * B)
    with open_store(store_dir, capacity=8 * MiB, index_bytes=1 * MiB) as store:
        for n in (B, 2 * B, 3 * B):
            store.put(tokens[:n], bytes(MiB))
            store.pin(tokens[:n])
    with pytest.raises(CapacityError):
        CheckpointStore(store_dir, capacity_bytes=2 * MiB)
    with CheckpointStore(store_dir) as store:  # the old capacity still stands
        assert store.capacity_bytes == 8 * MiB
        assert store.load_longest(tokens)[0] == 3 * B


# 9 ---------------------------------------------------------------------------
def _edit_settings(path, **changes):
    settings_path = os.path.join(path, "settings.json")
    with open(settings_path) as fh:
        settings = json.load(fh)
    settings.update(changes)
    with open(settings_path, "w") as fh:
        json.dump(settings, fh)


@pytest.mark.parametrize("created, edited", [
    ({"layout": "chained"}, {"layout": "snapshot"}),
    ({"layout": "snapshot"}, {"layout": "chained"}),
    ({"block_tokens": 4}, {"block_tokens": 8}),
])
def test_09_edited_settings_never_reinterpret_the_data(tmp_path, created, edited):
    path = str(tmp_path / "store")
    block = created.get("block_tokens", B)
    tokens = tokens_for(7, 4 * block)
    with CheckpointStore(path, capacity_bytes=4 * MiB, namespace="hostile",
                         block_tokens=block, layout=created.get("layout", "snapshot")) as store:
        for n in range(block, 4 * block + 1, block):
            store.put(tokens[:n], f"block {n}".encode())
    _edit_settings(path, **edited)
    with pytest.raises(ConfigMismatchError, match="settings.json"):
        CheckpointStore(path)


@pytest.mark.parametrize("field, value", [
    ("block_tokens", 0), ("block_tokens", -4), ("block_tokens", "16"), ("block_tokens", 2**70),
    ("layout", "sideways"), ("layout", None), ("namespace", 3), ("index_bytes", "big"),
    ("capacity_bytes", -1), ("format", None),
])
def test_09_bad_values_in_settings_name_the_field(store_dir, field, value):
    two_checkpoints(store_dir)
    _edit_settings(store_dir, **{field: value})
    with pytest.raises(KVStoreError, match=field):
        CheckpointStore(store_dir)


def test_09_a_file_written_under_other_settings_is_never_served(tmp_path):
    """Even with matching settings, a payload file records its layout and block
    size; one from a store of another layout is a miss, not a block."""
    snap, chained = str(tmp_path / "snap"), str(tmp_path / "chained")
    tokens = tokens_for(8, 2 * B)
    with open_store(snap) as store:
        store.put(tokens[:B], b"a snapshot")
        planted = payload_file(store, tokens[:B])
    with open_store(chained, layout="chained") as keeper:
        keeper.put(tokens[:B], b"a block...")
        victim = payload_file(keeper, tokens[:B])
        shutil.copyfile(planted, victim)  # same key, namespace and size: only the layout differs
        with CheckpointStore(chained) as store:
            assert store.load_longest(tokens) == (0, None)


# 10 --------------------------------------------------------------------------
def test_10_a_prefix_too_long_for_a_header_is_refused_not_acknowledged(store_dir):
    tokens = np.arange(60_000 * 4, dtype=np.uint32)  # 60,000 blocks of 4 tokens
    with CheckpointStore(store_dir, capacity_bytes=64 * MiB, namespace="hostile", block_tokens=4) as store:
        with pytest.raises(ValueError, match="tokens"):
            store.put(tokens, b"x")
        assert store.put(tokens[:4000], b"fine") is True
        assert store.load_longest(tokens[:4000]) == (4000, b"fine")


def test_10_a_zero_dimensional_array_keeps_its_shape(store_dir):
    tokens = tokens_for(9, B)
    with open_store(store_dir) as store:
        store.put(tokens, np.array(1.5, dtype=np.float32))
        n, payload = store.load_longest(tokens)
        assert payload.shape == () and payload == np.float32(1.5)


# 12 --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"namespace": "\ud800"}, "namespace"),
    ({"pin_quota_bytes": "x"}, "pin_quota_bytes"),
    ({"clock": lambda: "noon"}, "clock"),
])
def test_12_bad_arguments_name_themselves(tmp_path, kwargs, name):
    path = str(tmp_path / "store")
    with pytest.raises((TypeError, ValueError), match=name):
        store = CheckpointStore(path, capacity_bytes=4 * MiB, block_tokens=B,
                                **{"namespace": "hostile", **kwargs})
        store.put(tokens_for(1, B), b"x")  # a clock is first called on a write


def test_12_tokens_of_the_wrong_kind_name_tokens(store_dir):
    with open_store(store_dir) as store:
        with pytest.raises(TypeError, match="tokens"):
            store.put(array("u", "abcdefghijklmnop"), b"x")
        with pytest.raises(TypeError, match="tokens"):
            store.lookup(array("u", "abcdefghijklmnop"))


# 13 --------------------------------------------------------------------------
def test_13_reservations_of_killed_processes_are_reclaimed_while_others_keep_it_open(store_dir):
    with open_store(store_dir, capacity=8 * MiB, index_bytes=1 * MiB) as keeper:
        code = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {os.getcwd()!r})
            from kvstore import CheckpointStore
            store = CheckpointStore({store_dir!r})
            def die(*a, **k):
                os.kill(os.getpid(), signal.SIGKILL)
            store._files.write = die  # killed between reserving room and writing the file
            store.put(list(range({B})), bytes(3 << 20))
        """)
        done = run_python(code, timeout=60)
        assert done.returncode == -9, done.stderr
        with keeper._index.read() as txn:
            assert sum(r["size"] for r in keeper._index.reservations(txn).values()) >= 3 << 20
        tokens = tokens_for(10, 8 * B)
        for n in range(B, 8 * B + 1, B):  # 6 MiB fit only once the dead reservation is reclaimed
            assert keeper.put(tokens[:n], bytes(768 << 10)) is True
        with keeper._index.read() as txn:
            assert keeper._index.reservations(txn) == {}
        assert [keeper.lookup(tokens[:n]).tokens for n in range(B, 8 * B + 1, B)] == \
            list(range(B, 8 * B + 1, B))  # all 6 MiB stored: nothing was evicted for a dead reservation
        keeper._check()
