"""Shared fixtures and hypothesis profiles.

Profiles: ``ci`` (default, quick) and ``thorough`` (``--thorough`` or
``KVSTORE_THOROUGH=1``), which runs many more examples and longer soaks.

The README's test command runs the suite on every core (``-n auto``, with
pytest-xdist); without ``-n`` it runs in one process. A test marked ``alone``
times a real engine: no other test runs while it does (see
:func:`_alone_or_alongside`).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import random
import time

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--thorough", action="store_true", help="many more hypothesis examples and crash points")


def pytest_configure(config: pytest.Config) -> None:
    thorough = config.getoption("--thorough") or os.environ.get("KVSTORE_THOROUGH") == "1"
    settings.load_profile("thorough" if thorough else "ci")
    config.kvstore_thorough = thorough  # type: ignore[attr-defined]
    config.addinivalue_line("markers", "alone: runs with no other test alongside (it times a real engine)")


@pytest.fixture(autouse=True)
def _alone_or_alongside(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Under pytest-xdist, a test marked ``alone`` waits until no other test runs
    and holds the others off until it ends; every other test runs alongside any
    but those. A readers-writer lock across the workers, made of two ``flock``s
    in the run's shared temporary folder: the turnstile lets a waiting ``alone``
    test in before tests that come later, the room holds the running ones. In one
    process there is nothing to wait for."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # one folder per run, above each worker's own
    alone = request.node.get_closest_marker("alone") is not None
    with open(shared / "kvstore-turnstile.lock", "a") as turnstile, open(shared / "kvstore-room.lock", "a") as room:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.fixture
def thorough(request: pytest.FixtureRequest) -> bool:
    return request.config.kvstore_thorough  # type: ignore[attr-defined]


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def store_dir(tmp_path):
    return str(tmp_path / "store")


_COUNTS_KEY = pytest.StashKey[dict]()


@pytest.fixture
def tally(request: pytest.FixtureRequest):
    """``tally(name, n)`` adds to a count printed at the end of the run
    (crash points tried, concurrent operations, corrupted files...)."""
    counts = request.config.stash.setdefault(_COUNTS_KEY, {})

    def add(name: str, n: int = 1) -> None:
        counts[name] = counts.get(name, 0) + n

    return add


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands its counts to the controller (see :func:`pytest_testnodedown`)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["kvstore_tally"] = json.dumps(session.config.stash.get(_COUNTS_KEY, {}))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """The controller adds up what each worker counted."""
    counts = node.config.stash.setdefault(_COUNTS_KEY, {})
    for name, n in json.loads(getattr(node, "workeroutput", {}).get("kvstore_tally", "{}")).items():
        counts[name] = counts.get(name, 0) + n


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    counts = config.stash.get(_COUNTS_KEY, {})
    if counts:
        terminalreporter.section("fault injection tally")
        for name, n in sorted(counts.items()):
            terminalreporter.write_line(f"{name}: {n}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real 3-master Redis Cluster on loopback for the whole run (``redis-server``
    must be installed; ``.ci/run`` installs it). Tests keep apart by namespace: :func:`fresh`."""
    from kvstore.testing.redis_servers import RedisCluster, have_redis

    if not have_redis():
        raise RuntimeError("redis-server and redis-cli are needed: apt-get install -y redis-server")
    servers = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield servers
    servers.stop()


_namespaces = itertools.count()


def fresh(name: str = "model") -> str:
    """A namespace no other test used: its own shared index and budget."""
    return f"{name}-{os.getpid()}-{next(_namespaces)}-{time.time_ns()}"
