"""The shared tier on a real Redis Cluster (three masters on loopback, started
here) and on a single real Redis server: engines in separate processes share
checkpoints, the fleet's budget holds with four writers, a killed master
turns into misses and counted drops, corruption is a miss, namespaces never
match. No mock Redis anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from kvstore import CheckpointStore
from kvstore.keys import Namespace, PrefixKeys
from kvstore.testing import check_tier
from kvstore.tiers import SharedTier
from kvstore.tiers.shared_index import chunk_key, index_keys
from kvstore.testing.redis_servers import RedisCluster, RedisServer, have_redis, scan_bytes
from tests.conftest import fresh

BLOCK = 256


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not have_redis():
        raise RuntimeError("redis-server and redis-cli are needed: apt-get install -y redis-server")
    single = RedisServer(tmp_path_factory.mktemp("single"))
    single.start()
    yield single
    single.stop()


def open_store(path, url, namespace, *, shared_capacity=64 << 20, shared_timeout=5.0, **kwargs):
    """A store on the shared tier at ``url``. The tests check behaviour, not latency: a 2-core machine
    running the whole suite can take longer than the 0.2 s default, so they wait up to 5 s unless a
    test is about the timeout itself."""
    return CheckpointStore(path, 256 << 20, block_tokens=BLOCK, namespace=namespace, shared_url=url,
                           shared_capacity_bytes=shared_capacity, shared_timeout=shared_timeout, **kwargs)


def redis_client(url):
    import redis
    from redis.cluster import RedisCluster as Client

    probe = redis.Redis.from_url(url)
    clustered = int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    probe.close()
    return Client.from_url(url) if clustered else redis.Redis.from_url(url)


# ----------------------------------------------------------------- protocol
def test_shared_tier_keeps_the_tier_protocol_on_a_cluster_and_on_a_single_server(cluster, server):
    for url in (cluster.url, server.url):
        check_tier(lambda: SharedTier(url, 1 << 20, namespace=Namespace(fresh()), block_tokens=4, timeout=5.0))


def test_longest_match_takes_tails_and_the_deepest_block_and_ignores_other_prompts(cluster):
    ns = Namespace(fresh())
    tier = SharedTier(cluster.url, 8 << 20, namespace=ns, block_tokens=4, timeout=5.0)
    try:
        tokens = list(range(100, 120))
        prefix = PrefixKeys(ns, tokens, 4)
        from kvstore.testing.tiers import _header
        for n in (4, 8, 11):
            assert tier.write(_header(ns, prefix, n, b"x" * n, 0.0), b"x" * n)
        assert tier.longest_match(prefix) == (11, prefix.key(11))
        assert tier.longest_match(PrefixKeys(ns, tokens[:10], 4)) == (8, prefix.key(8))
        assert tier.longest_match(PrefixKeys(ns, tokens[:11] + [0], 4)) == (11, prefix.key(11))
        assert tier.longest_match(PrefixKeys(ns, [1] + tokens[1:], 4)) is None
        assert tier.tails_at(prefix.key(8)) == {prefix.key(11): 11}
    finally:
        tier.close()


# ------------------------------------------------------ engines share prefixes
ENGINE = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    from kvstore import CheckpointStore
    role, path, url, namespace = sys.argv[1:5]
    tokens = list(range(7, 7 + 5000))
    store = CheckpointStore(path, 256 << 20, block_tokens=256, namespace=namespace, shared_url=url,
                            shared_capacity_bytes=64 << 20, shared_timeout=5.0)
    out = {}
    if role == "write":
        rng = np.random.default_rng(5)
        for n in range(256, 4097, 256):
            state = rng.standard_normal((n, 64)).astype(np.float16)
            store.put(tokens[:n], state, session="s1")
            out[n] = hashlib.sha256(state.tobytes()).hexdigest()
        store.put(tokens[:4200], b"tail state", tail=True)
        store.flush()
        out["shared"] = store.stats()["tiers"]["shared"]
    else:
        match = store.lookup(tokens[:4150])
        n, state = store.load_longest(tokens[:4150])
        again = store.lookup(tokens[:4150])
        out = {"tier": match.tier, "tokens": n, "sha": hashlib.sha256(state.tobytes()).hexdigest(),
               "dtype": str(state.dtype), "shape": list(state.shape), "again": again.tier}
    store.close()
    print(json.dumps(out))
""")


def run_engine(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", ENGINE, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_engine_in_another_process_reloads_the_longest_prefix_with_exact_bytes(cluster, tmp_path):
    namespace = fresh()
    wrote = run_engine("write", str(tmp_path / "a"), cluster.url, namespace)
    assert wrote["shared"]["entries"] == 17 and wrote["shared"]["local"]["drops"] == 0
    read = run_engine("read", str(tmp_path / "b"), cluster.url, namespace)
    assert read["tier"] == "shared" and read["tokens"] == 4096
    assert read["sha"] == wrote["4096"] and read["dtype"] == "float16" and read["shape"] == [4096, 64]
    assert read["again"] == "disk"  # promoted: the next turn is local


def test_two_namespaces_never_match(cluster, tmp_path):
    tokens = list(range(3000))
    with open_store(tmp_path / "a", cluster.url, fresh("llama")) as a:
        a.put(tokens[:2048], b"llama kv")
        a.flush()
        with open_store(tmp_path / "b", cluster.url, fresh("qwen")) as b:
            assert b.lookup(tokens) is None
            assert b.stats()["tiers"]["shared"]["entries"] == 0
        with open_store(tmp_path / "c", cluster.url, a.namespace.name) as c:
            assert c.load_longest(tokens) == (2048, b"llama kv")


def test_a_single_server_with_a_password_in_the_url_works_and_stats_hide_the_password(tmp_path):
    guarded = RedisServer(tmp_path / "auth", extra=("--requirepass", "s3cret"))
    guarded.start()
    try:
        url = f"redis://default:s3cret@127.0.0.1:{guarded.port}"
        tokens = list(range(1000))
        with open_store(tmp_path / "a", url, "m") as a:
            a.put(tokens[:512], b"state")
            a.flush()
            shared = a.stats()["tiers"]["shared"]
            assert shared["entries"] == 1 and "s3cret" not in shared["url"]
        with open_store(tmp_path / "b", url, "m") as b:
            assert b.load_longest(tokens) == (512, b"state")
        wrong = f"redis://default:nope@127.0.0.1:{guarded.port}"
        with open_store(tmp_path / "c", wrong, "m") as c:  # refused: a miss, never an exception
            assert c.lookup(tokens) is None
            assert c.stats()["tiers"]["shared"]["reachable"] is False
    finally:
        guarded.stop()


def test_tls_and_an_acl_user_in_the_url_work(tmp_path):
    """``rediss://`` with the server's CA in the URL, and an ACL user that is not ``default``."""
    ca_key, ca_crt, key, csr, crt = (str(tmp_path / n) for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt"))
    openssl = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
         "-days", "1", "-subj", "/CN=kvstore test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
         "-days", "1", "-extfile", "/dev/stdin"],
    ]
    for command in openssl:
        made = subprocess.run(command, input="subjectAltName=IP:127.0.0.1", capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    from kvstore.testing.redis_servers import _free_port

    tls_port = _free_port()
    server = RedisServer(tmp_path / "tls", extra=(
        "--tls-port", str(tls_port), "--tls-cert-file", crt, "--tls-key-file", key, "--tls-ca-cert-file", ca_crt,
        "--tls-auth-clients", "no", "--user", "default", "off", "--user", "engine", "on", ">pw", "~*", "&*",
        "+@all"))
    server.start()
    try:
        url = f"rediss://engine:pw@127.0.0.1:{tls_port}?ssl_ca_certs={ca_crt}"
        tokens = list(range(1000))
        with open_store(tmp_path / "a", url, "m") as a:
            assert a.put(tokens[:512], b"over tls")
            a.flush()
            assert a.stats()["tiers"]["shared"]["entries"] == 1
        with open_store(tmp_path / "b", url, "m") as b:
            assert b.load_longest(tokens) == (512, b"over tls")
        with open_store(tmp_path / "c", f"rediss://engine:pw@127.0.0.1:{tls_port}", "m") as c:  # CA unknown
            assert c.lookup(tokens) is None and c.stats()["tiers"]["shared"]["reachable"] is False
    finally:
        server.stop()


# --------------------------------------------------------------- corruption
@pytest.mark.parametrize("damage", ["flip a byte", "delete a chunk", "truncate a chunk"])
def test_a_damaged_chunk_is_a_miss_never_wrong_bytes(cluster, tmp_path, damage):
    namespace = fresh()
    tokens = list(range(4000))
    state = np.arange(3 * 1024 * 1024, dtype=np.uint8)  # 3 MiB: one chunk of the two we damage
    with open_store(tmp_path / "a", cluster.url, namespace) as a:
        a.put(tokens[:1024], b"short state")
        a.put(tokens[:2048], state)
        a.flush()
    client = redis_client(cluster.url)
    ns = Namespace(namespace)
    key = PrefixKeys(ns, tokens, BLOCK).key(2048)
    manifest = json.loads(client.hget(index_keys(ns.digest8.hex())[0], key))
    chunk = chunk_key(ns.digest8.hex(), key, manifest["token"], 0)
    if damage == "flip a byte":
        byte = client.getrange(chunk, 1000, 1000)
        client.setrange(chunk, 1000, bytes([byte[0] ^ 0x40]))
    elif damage == "delete a chunk":
        client.delete(chunk)
    else:
        client.set(chunk, client.getrange(chunk, 0, 99))
    with open_store(tmp_path / "b", cluster.url, namespace) as b:
        assert b.lookup(tokens).tokens == 2048  # the manifest is still there...
        assert b.load_longest(tokens) == (1024, b"short state")  # ...its bytes are not: the shorter one
        shared = b.stats()["tiers"]["shared"]
        assert shared["corrupt"] == 1 and shared["entries"] == 1  # dropped for the whole fleet
        assert client.hget(index_keys(ns.digest8.hex())[0], key) is None
    assert scan_bytes(cluster.url, f"kvs:{ns.digest8.hex()}:chunk:*") == len(b"short state")
    client.close()


# ------------------------------------------------------------------- budget
WRITER = textwrap.dedent("""
    import random, sys
    from kvstore.keys import Namespace, PrefixKeys
    from kvstore.testing.tiers import _header
    from kvstore.tiers import SharedTier
    url, namespace, capacity, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ns = Namespace(namespace)
    rng = random.Random(seed)
    # (a budget test, not a latency test: on a loaded 2-core machine a 5 s call is possible)
    tier = SharedTier(url, capacity, namespace=ns, block_tokens=16, chunk_bytes=64 << 10, timeout=30.0,
                      connect_timeout=30.0)
    system = [1] * 16
    written = total = 0
    while total < 3 * capacity:
        session = system + [rng.randrange(1 << 30) for _ in range(16 * rng.randrange(1, 4))]
        prefix = PrefixKeys(ns, session, 16)
        for n in range(16, len(session) + 1, 16):
            payload = rng.randbytes(rng.randrange(1 << 10, 200 << 10))
            if tier.write(_header(ns, prefix, n, payload, 0.0), payload):
                written += 1
                total += len(payload)
    tier.close()
    print(written, total, tier.counters["faults"])
    print(tier.last_fault, file=sys.stderr)
""")


def test_four_writers_at_three_times_the_capacity_never_exceed_the_budget(cluster):
    capacity = 4 << 20
    namespace = fresh()
    ns = Namespace(namespace).digest8.hex()
    stats_key = index_keys(ns)[9]
    client = redis_client(cluster.url)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, cluster.url, namespace, str(capacity), str(seed)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(4)]
    samples, worst_used, worst_held = 0, 0, 0
    while any(w.poll() is None for w in writers):  # each sample: the whole cluster frozen for an instant
        held, used = scan_bytes(cluster.url, f"kvs:{ns}:chunk:*", frozen_with=f"{stats_key} used")
        assert held <= used  # chunks are written after their bytes are reserved, deleted before release
        worst_used, worst_held = max(worst_used, used), max(worst_held, held)
        samples += 1
        time.sleep(0.02)
    outputs = [w.communicate() for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    written = [list(map(int, out.split())) for out, _ in outputs]
    assert all(total >= 3 * capacity and faults == 0 for _, total, faults in written), \
        [(counts, err.strip()) for counts, (_, err) in zip(written, outputs)]
    assert samples >= 5
    assert worst_used <= capacity and worst_held <= capacity
    fleet = {k.decode(): int(v) for k, v in client.hgetall(stats_key).items()}
    held = scan_bytes(cluster.url, f"kvs:{ns}:chunk:*")
    manifests = client.hgetall(index_keys(ns)[0])
    assert fleet["used"] == held == sum(json.loads(m)["size"] for m in manifests.values())  # no leak
    assert fleet["entries"] == len(manifests) and fleet["evictions"] > 0 and fleet["doomed_bytes"] == 0
    # leaf-first: the one-block system prompt every session extends is still there
    system_key = PrefixKeys(Namespace(namespace), [1] * 16, 16).key(16)
    assert system_key.encode() in manifests
    client.close()


# ------------------------------------------------------------------- faults
def test_a_master_killed_mid_run_gives_misses_and_drops_then_sharing_resumes(tmp_path):
    fleet = RedisCluster(tmp_path / "cluster").start()
    try:
        namespace = fresh()
        index_node = fleet.node_of(index_keys(Namespace(namespace).digest8.hex())[0])
        rng = np.random.default_rng(0)
        sessions = [list(rng.integers(0, 50_000, 3 * BLOCK)) for _ in range(45)]
        errors: list[BaseException] = []
        with open_store(tmp_path / "a", fleet.url, namespace, shared_timeout=0.5) as a:
            for tokens in sessions[:10]:
                a.put(tokens[:BLOCK], b"before" * 100)
            a.flush()
            for tokens in sessions[40:45]:  # 4 MiB each: the publisher is mid-write when the master dies
                a.put(tokens[:BLOCK], np.ones(1 << 20, dtype=np.float32))
            index_node.kill()  # SIGKILL, mid-run
            waits = []
            for tokens in sessions[10:30]:
                try:
                    started = time.monotonic()
                    found = a.lookup(tokens)  # asks the shared tier: nothing local is that long
                    waits.append(time.monotonic() - started)
                    assert found is None
                    assert a.put(tokens[:BLOCK], b"during" * 100)  # local service continues
                    assert a.lookup(tokens).tier in ("ram", "disk")
                except BaseException as exc:
                    errors.append(exc)
            a.flush()
            during = a.stats()["tiers"]["shared"]
            assert not errors
            assert max(waits) < 5.0  # bounded (the timeout is 0.5 s here; this only rules out hanging)
            assert during["reachable"] is False and during["local"]["drops"] >= 1
            assert during["local"]["faults"] >= 1

            index_node.start()
            fleet.wait_ok()
            time.sleep(1.5)  # the tier is skipped for a second after a fault
            deadline = time.monotonic() + 30
            while not a.stats()["tiers"]["shared"]["reachable"]:
                assert time.monotonic() < deadline, "sharing did not resume after the master came back"
                time.sleep(0.5)
            for tokens in sessions[30:]:
                a.put(tokens[:BLOCK], b"after" * 100)
            a.flush()
        with open_store(tmp_path / "b", fleet.url, namespace) as b:
            assert b.load_longest(sessions[35]) == (BLOCK, b"after" * 100)  # published after the restart
            assert b.load_longest(sessions[5]) == (BLOCK, b"before" * 100)  # kept by the master's AOF
            assert b.lookup(sessions[15]) is None  # dropped while the master was down
    finally:
        fleet.stop()


def test_nothing_listening_is_a_miss_and_a_counted_drop_not_an_exception(tmp_path):
    from kvstore.testing.redis_servers import _free_port

    url = f"redis://127.0.0.1:{_free_port()}"
    tokens = list(range(600))
    with open_store(tmp_path / "a", url, "m", shared_timeout=0.2) as a:
        assert a.put(tokens[:512], b"local")
        assert a.load_longest(tokens) == (512, b"local")
        assert a.lookup(list(range(1, 600))) is None
        a.flush()
        shared = a.stats()["tiers"]["shared"]
        assert shared["reachable"] is False and shared["local"]["drops"] == 1


def test_publishing_runs_in_the_background_and_a_full_queue_drops_the_oldest(cluster, tmp_path):
    namespace = fresh()
    tokens = list(range(20 * BLOCK))
    gate = threading.Event()
    with open_store(tmp_path / "a", cluster.url, namespace, max_pending_publishes=2) as a:
        shared = a._stack.shared
        original = shared._write
        shared._write = lambda *args: (gate.wait(10), original(*args))[1]  # hold the publisher thread
        for n in range(BLOCK, 6 * BLOCK + 1, BLOCK):
            assert a.put(tokens[:n], b"s" * n)  # returns although nothing was published yet
        gate.set()
        a.flush()
        stats = a.stats()["tiers"]["shared"]
    # one in flight, two waiting, three dropped (the oldest waiting ones)
    assert stats["local"]["drops"] == 3 and stats["local"]["publishes"] == 3
    assert stats["drops"] == 3 and stats["entries"] == 3
    with open_store(tmp_path / "b", cluster.url, namespace) as b:
        assert b.load_longest(tokens)[0] == 6 * BLOCK  # the newest ones were kept


# ---------------------------------------------------------------- arguments
def test_shared_arguments_are_checked_before_anything_opens(tmp_path):
    path = tmp_path / "s"
    cases = {
        "shared_capacity_bytes is required": dict(shared_url="redis://127.0.0.1:6379"),
        "pass shared_url too": dict(shared_capacity_bytes=1 << 20),
        "shared_url must start with": dict(shared_url="http://x", shared_capacity_bytes=1 << 20),
        "snapshot layout only": dict(shared_url="redis://x:1", shared_capacity_bytes=1 << 20, layout="chained"),
        "shared_timeout must be": dict(shared_url="redis://x:1", shared_capacity_bytes=1, shared_timeout=0),
        "shared_capacity_bytes must be": dict(shared_url="redis://x:1", shared_capacity_bytes=-1),
    }
    for message, kwargs in cases.items():
        with pytest.raises(ValueError, match=message):
            CheckpointStore(path, 1 << 30, block_tokens=BLOCK, namespace="m", **kwargs)
    assert not path.exists()


def test_shared_hits_and_misses_are_counted_for_the_fleet(cluster, tmp_path):
    namespace = fresh()
    tokens = list(range(2000))
    with open_store(tmp_path / "a", cluster.url, namespace) as a:
        a.put(tokens[:1024], b"state")
        a.flush()
    with open_store(tmp_path / "b", cluster.url, namespace) as b:
        assert b.lookup(tokens).tier == "shared"
        assert b.lookup(list(range(1, 2000))) is None
        stats = b.stats()["tiers"]["shared"]
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["local"]["hits"] == 1


# --------------------------------------------------------------- command line
def test_kvstore_stats_shows_the_fleets_shared_tier(cluster, tmp_path):
    namespace = fresh()
    tokens = list(range(3000))
    with open_store(tmp_path / "a", cluster.url, namespace) as a:
        a.put(tokens[:1024], b"x" * 5000)
        a.put(tokens[:2048], b"y" * 7000)
        a.flush()
    with open_store(tmp_path / "b", cluster.url, namespace) as b:
        b.lookup(tokens)
        b.lookup([5] * 600)
    cli = [sys.executable, "-m", "kvstore.cli", "stats", str(tmp_path / "a"), "--shared", cluster.url]
    shown = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    shared = json.loads(shown.stdout)["tiers"]["shared"]
    assert (shared["entries"], shared["bytes"], shared["capacity_bytes"]) == (2, 12000, 64 << 20)
    assert (shared["hits"], shared["misses"], shared["evictions"], shared["drops"]) == (1, 1, 0, 0)
    table = subprocess.run(cli, capture_output=True, text=True, timeout=60, env={"COLUMNS": "80", "PATH": ""})
    assert table.returncode == 0 and "shared" in table.stdout and "publishes 2" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    from kvstore.testing.redis_servers import _free_port

    down = subprocess.run([*cli[:-1], f"redis://127.0.0.1:{_free_port()}"], capture_output=True, text=True,
                          timeout=60)
    assert down.returncode == 2 and "--shared redis://127.0.0.1:" in down.stderr and "does not answer" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_a_buffer_changed_after_put_publishes_what_was_stored(cluster, tmp_path):
    namespace = fresh()
    tokens = list(range(2000))
    state = np.arange(100_000, dtype=np.float32)
    with open_store(tmp_path / "a", cluster.url, namespace) as a:
        assert a.put(tokens[:1024], state)
        state[:] = -1  # the engine reuses its buffer at once; the publisher has not run yet
        a.flush()
    with open_store(tmp_path / "b", cluster.url, namespace) as b:
        n, loaded = b.load_longest(tokens)
    assert n == 1024 and np.array_equal(loaded, np.arange(100_000, dtype=np.float32))


def test_shared_gc_deletes_the_chunks_an_emptied_index_no_longer_names(cluster, tmp_path):
    namespace = fresh()
    tokens = list(range(3000))
    with open_store(tmp_path / "a", cluster.url, namespace) as a:
        a.put(tokens[:1024], b"kept" * 1000)
        a.flush()
        ns = a.namespace.digest8.hex()
        client = redis_client(cluster.url)
        client.delete(*index_keys(ns))  # the index's master came back empty
        a.put(tokens[:2048], b"new" * 1000)  # published after: the index names it
        a.flush()
    assert scan_bytes(cluster.url, f"kvs:{ns}:chunk:*") == 7000
    cli = [sys.executable, "-m", "kvstore.cli", "shared-gc", str(tmp_path / "a"), cluster.url]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 orphaned chunks" in done.stdout
    assert scan_bytes(cluster.url, f"kvs:{ns}:chunk:*") == 3000
    with open_store(tmp_path / "b", cluster.url, namespace) as b:
        assert b.load_longest(tokens) == (2048, b"new" * 1000)
    client.close()


def test_a_hung_server_costs_a_lookup_one_timeout_then_is_skipped_until_it_answers(tmp_path):
    """SIGSTOP: the server keeps its sockets open and answers nothing (a node mid-failover)."""
    import os
    import signal

    frozen = RedisServer(tmp_path / "hung")
    frozen.start()
    try:
        tokens = list(range(3 * BLOCK))
        with open_store(tmp_path / "a", frozen.url, "m", shared_timeout=0.2) as a:
            a.put(tokens[:BLOCK], b"shared")
            a.flush()
            os.kill(frozen.process.pid, signal.SIGSTOP)
            started = time.monotonic()
            assert a.lookup([7] * 600) is None  # waits for the timeout, then misses
            first = time.monotonic() - started
            started = time.monotonic()
            for i in range(20):  # skipped meanwhile: no waiting at all
                assert a.lookup([8 + i] * 600) is None
                assert a.put([8 + i] * BLOCK, b"local")
            skipped = time.monotonic() - started
            assert a.stats()["tiers"]["shared"]["local"]["skipped"] >= 20
            assert first < 3.0 and skipped < 3.0  # bounded (0.2 s each at most); this rules out hanging
            os.kill(frozen.process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while not a.stats()["tiers"]["shared"]["reachable"]:
                assert time.monotonic() < deadline, "sharing did not resume after SIGCONT"
                time.sleep(0.3)
        with open_store(tmp_path / "b", frozen.url, "m") as b:
            assert b.load_longest(tokens) == (BLOCK, b"shared")
    finally:
        if frozen.process is not None:
            os.kill(frozen.process.pid, signal.SIGCONT)
        frozen.stop()


def test_a_checkpoint_larger_than_the_shared_budget_is_declined_and_counted(cluster, tmp_path):
    tokens = list(range(2 * BLOCK))
    with open_store(tmp_path / "a", cluster.url, fresh(), shared_capacity=1 << 20) as a:
        assert a.put(tokens[:BLOCK], b"x" * (2 << 20))  # stored locally all the same
        a.flush()
        shared = a.stats()["tiers"]["shared"]
    assert shared["entries"] == 0 and shared["bytes"] == 0
    assert shared["local"]["declined"] == 1 and shared["local"]["drops"] == 0


def test_a_test_server_whose_chosen_port_was_taken_moves_and_one_given_that_port_says_why(tmp_path):
    """Parallel test workers pick loopback ports at once: a server whose own
    chosen port is bound by another before it binds it takes another pair, and
    is never fooled by the other server answering on its old port."""
    first = RedisServer(tmp_path / "first")
    first.start()
    try:
        second = RedisServer(tmp_path / "second")
        second.port = first.port  # as if another worker had bound it between the probe and the bind
        second.start()
        try:
            assert second.port != first.port and second.answers()
            moved_to = second.port
            second.kill()
            second.start()  # a restart comes back on the port it ran on
            assert second.port == moved_to and second.answers()
        finally:
            second.stop()
        with pytest.raises(RuntimeError, match="Address already in use"):
            RedisServer(tmp_path / "given", port=first.port).start()  # a port the caller chose stays
    finally:
        first.stop()
