"""Real Redis servers for the tests: a 3-master cluster or a single server on
loopback, in a temporary directory, started and stopped by the test run.

Needs ``redis-server`` and ``redis-cli`` on PATH (``.ci/run`` installs the
Debian package ``redis-server`` when they are missing).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisCluster", "RedisServer", "have_redis"]


def have_redis() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _free_port() -> int:
    """A loopback port free for the server and for its cluster bus (port + 10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536:
            try:
                with socket.socket() as bus:
                    bus.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue
    raise RuntimeError("no free loopback port pair for a Redis node")


def _cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=30).stdout


class RedisServer:
    """One ``redis-server`` on loopback; ``cluster=True`` starts it as a cluster node."""

    def __init__(self, folder: Path, *, cluster: bool = False, port: int | None = None,
                 extra: tuple[str, ...] = (), persist: bool = True) -> None:
        self.folder = folder
        self.extra = extra
        self.persist = persist
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self._moves_left = 0 if port else 3  # a port we chose may be taken before the server binds it
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        log_path = self.folder / "redis.log"
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
                "--protected-mode", "no",
                "--logfile", str(log_path)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.folder / "nodes.conf"),
                     "--cluster-node-timeout", "2000"]
        args += list(self.extra)
        seen = log_path.stat().st_size if log_path.exists() else 0  # a restart appends to the same log
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (self._ready(log_path, seen) and self.answers()):  # its own log: not another server's reply
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self._log_since(log_path, seen)
                if self.process.poll() is not None and self._moves_left and "Address already in use" in log:
                    # another process (a parallel test run) bound the port between our probe and the
                    # server's bind: take another pair of ports, while the server never ran
                    self._moves_left -= 1
                    self.port = _free_port()
                    return self.start()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log[-2000:]}")
            time.sleep(0.05)
        self._moves_left = 0  # it ran on this port: a restart must come back on it

    @staticmethod
    def _log_since(log_path: Path, offset: int) -> str:
        if not log_path.exists():
            return ""
        with open(log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _ready(self, log_path: Path, offset: int) -> bool:
        return self.process is not None and self.process.poll() is None and \
            "Ready to accept connections" in self._log_since(log_path, offset)

    def answers(self) -> bool:
        reply = _cli(self.port, "ping")
        return "PONG" in reply or "NOAUTH" in reply

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisCluster:
    """Three masters, no replicas, on loopback; ``url`` names the first.
    ``persist`` keeps an append-only file fsynced on every write (a killed
    master comes back with its data); without it nothing touches the disk."""

    def __init__(self, folder: Path, masters: int = 3, *, persist: bool = True) -> None:
        self.nodes = [RedisServer(folder / f"node{i}", cluster=True, persist=persist) for i in range(masters)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> "RedisCluster":
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        out = subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
                              "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in _cli(n.port, "cluster", "info") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def node_of(self, key: str) -> RedisServer:
        """The master serving ``key``'s hash slot."""
        slot = int(_cli(self.nodes[0].port, "cluster", "keyslot", key).strip())
        for node in self.nodes:
            myself = _cli(node.port, "cluster", "myid").strip()
            for row in _cli(node.port, "cluster", "nodes").splitlines():
                fields = row.split()
                if fields and fields[0] == myself:
                    for span in fields[8:]:
                        lo, _, hi = span.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return node
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def scan_bytes(url: str, pattern: str, *, frozen_with: str | None = None) -> int | tuple[int, int]:
    """Bytes of every key matching ``pattern`` on every master (STRLEN), for budget checks.

    With ``frozen_with`` (a hash field ``key field``), every master first stops
    taking writes (``CLIENT PAUSE ... WRITE``), so the count is one instant of
    the whole cluster, and the field is read in that same instant:
    ``(bytes, int(field))``.
    """
    import redis
    from redis.cluster import RedisCluster as Client

    probe = redis.Redis.from_url(url)
    clustered = int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    probe.close()
    client = Client.from_url(url) if clustered else redis.Redis.from_url(url)
    try:
        nodes = client.get_primaries() if clustered else [None]
        conns = [client.get_redis_connection(node) if clustered else client for node in nodes]
        if frozen_with is not None:
            for conn in conns:
                conn.client_pause(2000, all=False)
        try:
            total = 0
            for conn in conns:
                for key in conn.scan_iter(match=pattern, count=1000):
                    total += conn.strlen(key) or 0
            if frozen_with is None:
                return total
            key, field = frozen_with.split()
            return total, int(client.hget(key, field) or 0)
        finally:
            if frozen_with is not None:
                for conn in conns:
                    conn.client_unpause()
    finally:
        client.close()

