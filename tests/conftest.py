"""Shared fixtures and hypothesis profiles.

Profiles: ``ci`` (default, quick) and ``thorough`` (``--thorough`` or
``KVSTORE_THOROUGH=1``), which runs many more examples and longer soaks.
"""

from __future__ import annotations

import itertools
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
    return f"{name}-{next(_namespaces)}-{time.time_ns()}"
