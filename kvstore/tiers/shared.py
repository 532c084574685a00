"""The shared tier: checkpoints a fleet of engines publishes to, and finds in,
one Redis Cluster (or a single Redis server).

One class on the :class:`~kvstore.tiers.Tier` protocol. The engine that
computed a prefix publishes it in the background; any engine of the same
namespace (model) finds it when its own tiers hold nothing as long.

- **Layout in Redis.** A checkpoint is up to 8 MiB chunks, each under its own
  hash tag so they spread over the cluster's slots, plus a manifest (the
  checkpoint's header, each chunk's length and CRC-32) in the namespace's
  index (:mod:`kvstore.tiers.shared_index`). Chunks are written first; the
  manifest is what makes them visible, so a reader never assembles a partial
  or mixed write; a missing, short or corrupted chunk is a miss (and the
  entry is dropped from the index), never wrong bytes.
- **Budget.** ``capacity_bytes`` bounds the payload bytes held, fleet-wide:
  bytes are reserved by a server-side script before a chunk is written and
  released only after the chunks are deleted. Redis' ``maxmemory`` plays no
  part.
- **Faults.** Every lookup waits at most ``timeout`` seconds (a read also
  gets ``timeout`` plus its size at ``min_read_bps``); a fault turns into a
  miss, and the tier is skipped for ``retry_after`` seconds (lookups miss at
  once, publishes are dropped and counted), then tried again. Nothing the
  shared tier does raises into the engine.

It is a tier of copies (``caches = True``): what it holds other engines may
evict at any time, and what this engine's disk evicts is not handed to it
(it got its copy when the checkpoint was written).

>>> from kvstore.keys import Namespace, PrefixKeys
>>> tier = SharedTier("redis://127.0.0.1:1", 1 << 30, namespace=Namespace("demo"), block_tokens=4)
>>> tier.longest_match(PrefixKeys(Namespace("demo"), range(9), 4)) is None  # nobody listens: a miss
True
>>> tier.counters["faults"], tier.available  # skipped for a second, then tried again
(1, False)
>>> tier.close()
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from ..fileformat import Header, payload_descriptor, payload_view
from ..keys import Namespace, PrefixKeys
from . import shared_index as index
from .publisher import Publisher

__all__ = ["SharedTier", "CHUNK_BYTES", "connect", "check_url", "check_shared_arguments"]

log = logging.getLogger(__name__)

#: the largest chunk a checkpoint is split into
CHUNK_BYTES = 8 << 20

_SCHEMES = ("redis", "rediss", "unix")


def connect(url: str, timeout: float) -> Any:
    """A redis-py client for ``url``: ``RedisCluster`` when the node reports
    cluster mode, else ``Redis``. Every socket operation waits at most ``timeout``.

    Raises ``ImportError`` (with the extra to install) when redis-py is missing
    and redis-py's ``ConnectionError`` when nothing answers.
    """
    try:
        import redis
        from redis.cluster import RedisCluster
    except ImportError:
        raise ImportError("the shared tier needs redis-py: pip install 'kvstore[shared]'") from None
    options = {"socket_timeout": timeout, "socket_connect_timeout": max(timeout, 1.0)}
    probe = redis.Redis.from_url(url, **options)
    try:
        clustered = int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        probe.close()
    if not clustered:
        return redis.Redis.from_url(url, **options, retry_on_timeout=False)
    return RedisCluster.from_url(url, **options, require_full_coverage=False,
                                 retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))


def check_shared_arguments(url: object, capacity_bytes: object, timeout: object, max_pending: object) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad argument of a shared tier
    (as ``CheckpointStore`` calls them: ``shared_url``, ``shared_capacity_bytes``...)."""
    check_url(url)
    for name, value in (("shared_capacity_bytes", capacity_bytes), ("max_pending_publishes", max_pending)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ValueError(f"shared_timeout must be seconds in (0, 60], got {timeout!r}")


def check_url(url: object) -> str:
    """``url`` if it names a Redis server (``redis://``, ``rediss://`` or ``unix://``), else ``ValueError``."""
    if not isinstance(url, str):
        raise TypeError(f"shared_url must be a str like 'redis://host:port', not {type(url).__name__}")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ValueError(f"shared_url must start with redis://, rediss:// or unix://, got {url!r}")
    return url


class SharedTier:
    """Checkpoints shared by every engine of one namespace, on Redis.

    :param url: ``redis://[user:password@]host:port``, ``rediss://…`` (TLS) or
        ``unix://path``; a cluster node or a single server.
    :param capacity_bytes: most payload bytes the fleet keeps there (every
        engine should pass the same value; the latest reservation's value rules).
    :param namespace: the store's namespace: engines of other models never match.
    :param block_tokens: the store's block size.
    :param timeout: longest wait of a lookup, in seconds (default 0.2).
    :param max_pending: most checkpoints waiting to be published; past it the oldest is dropped.
    :param retry_after: seconds a fault keeps the tier skipped before it is tried again.
    :param protect_tokens: checkpoints this short are evicted after every longer leaf
        (default: one block — the system prompt and tools every session starts with).
    :param chunk_bytes: largest chunk (default 8 MiB).
    :param min_read_bps: a read of ``n`` bytes may take ``timeout + n / min_read_bps`` seconds.
    :param ttl: seconds after which a reservation or deletion whose engine died is reclaimed.
    :param connect_timeout: how long opening waits for the first connection (made in the
        background; when it is not ready in time, lookups miss until it is).
    """

    name = "shared"
    caches = True

    def __init__(self, url: str, capacity_bytes: int, *, namespace: Namespace, block_tokens: int,
                 timeout: float = 0.2, max_pending: int = 16, retry_after: float = 1.0,
                 protect_tokens: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                 min_read_bps: float = 50e6, ttl: float = 60.0, connect_timeout: float = 2.0) -> None:
        check_shared_arguments(url, capacity_bytes, timeout, max_pending)
        self.url = url
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or not 0 < chunk_bytes <= CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be an int in [1, {CHUNK_BYTES}], got {chunk_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self.namespace = namespace.digest8.hex()
        self.block_tokens = block_tokens
        self.timeout = float(timeout)
        self.retry_after = float(retry_after)
        self.protect_tokens = block_tokens if protect_tokens is None else int(protect_tokens)
        self.chunk_bytes = chunk_bytes
        self.min_read_bps = float(min_read_bps)
        self.ttl = float(ttl)
        self.below = None
        self._keys = index.index_keys(self.namespace)
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self.last_fault: str | None = None  #: what went wrong last, for messages
        self._healthy = True
        self.counters = {"hits": 0, "misses": 0, "publishes": 0, "drops": 0, "declined": 0, "faults": 0,
                         "corrupt": 0, "skipped": 0}
        self._unsent = {"hits": 0, "misses": 0, "drops": 0}  # not yet added to the fleet's counters
        self._count_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="kvstore-shared")
        self._publisher = Publisher(self._publish_one, max_items=max_pending, name="kvstore-shared-publish",
                                    idle=self._send_counters, on_drop=self._dropped)
        self._closed = False
        self._guarded("connect", self._redis, None, timeout=connect_timeout)

    # ----------------------------------------------------------- plumbing
    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                client = connect(self.url, self.timeout)
                self._scripts = {}
                for name in ("RESERVE", "COMMIT", "RELEASE", "ABORT", "FORGET", "PROBE", "TOUCH", "COUNT"):
                    script = self._scripts[name] = client.register_script(getattr(index, name))
                    client.script_load(script.script)  # every master has it before the first lookup
                self._client = client
            return self._client

    def _script(self, name: str, *args: Any) -> Any:
        self._redis()
        return self._scripts[name](keys=self._keys, args=list(args))

    @property
    def available(self) -> bool:
        """False while a recent fault keeps the tier skipped."""
        return time.monotonic() >= self._retry_at

    def _fault(self, what: str, exc: BaseException | str) -> None:
        self._count("faults")
        self._retry_at = time.monotonic() + self.retry_after
        self.last_fault = f"{what} failed: {exc}"
        # one warning per outage; the rest, while it lasts, at debug level
        log.log(logging.WARNING if self._healthy else logging.DEBUG,
                "shared tier %s: %s failed (%s); lookups miss and publishes are dropped until it answers",
                _redacted(self.url), what, exc)
        self._healthy = False
        self._disconnect()

    def _disconnect(self) -> None:
        """Drop the client (the next call connects again)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken connection may fail to close: it is gone either way
                pass

    def _guarded(self, what: str, call: Callable[[], Any], default: Any, timeout: float | None = None) -> Any:
        """``call()`` on a worker thread, waiting at most ``timeout``; ``default`` on a fault or while skipped."""
        if self._closed or not self.available:
            self._count("skipped")
            return default
        future = self._pool.submit(call)
        try:
            result = future.result(self.timeout if timeout is None else timeout)
            if not self._healthy:
                log.warning("shared tier %s answers again", _redacted(self.url))
                self._healthy = True
            return result
        except concurrent.futures.TimeoutError:
            self._fault(what, "timed out")
        except Exception as exc:  # every fault of the shared tier is a miss
            self._fault(what, exc)
        return default

    # ------------------------------------------------------------- lookups
    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return bool(self._guarded("contains", lambda: self._redis().hexists(self._keys[0], key), False))

    def longest_match(self, prefix: PrefixKeys) -> tuple[int, str] | None:
        """``(tokens, key)`` of the longest checkpoint held that is a prefix of
        ``prefix``, tails included; ``None`` on a miss or a fault. One round trip
        (a script reads every aligned key and its tails), plus hashing of tail candidates."""
        if prefix is None or len(prefix) == 0:
            return None
        total = len(prefix)
        lengths = list(range(prefix.anchor(total), -1, -self.block_tokens))
        keys = prefix.keys_at(lengths)
        found = self._guarded("lookup", lambda: self._script("PROBE", *keys), None)
        if found is None:
            return None
        held = {key for i, key in enumerate(keys) if int(found[2 * i])}
        tails = {key: json.loads(found[2 * i + 1]) for i, key in enumerate(keys) if found[2 * i + 1]}
        return prefix.longest_held(tails.get, held.__contains__)

    def tails_at(self, anchor: str) -> dict[str, int]:
        raw = self._guarded("tails", lambda: self._redis().hget(self._keys[3], anchor), None)
        return {} if not raw else {k: int(v) for k, v in json.loads(raw).items()}

    def read(self, key: str) -> tuple[Header, Any] | None:
        """``(header, payload)`` of ``key`` with every chunk verified; ``None`` when
        it is not held, a chunk is missing or corrupt (the entry is then dropped
        fleet-wide), or Redis does not answer in time. O(payload bytes)."""
        manifest = self._guarded("read", lambda: self._redis().hget(self._keys[0], key), None)
        if manifest is None:
            return None
        try:
            meta = json.loads(manifest)
            size = int(meta["size"])
        except (ValueError, KeyError, TypeError):
            return None
        budget = self.timeout + size / self.min_read_bps
        return self._guarded("read", lambda: self._read_chunks(key, meta), None, timeout=budget)

    def _read_chunks(self, key: str, meta: dict[str, Any]) -> tuple[Header, Any] | None:
        client = self._redis()
        pipe = client.pipeline(transaction=False)
        names = [index.chunk_key(self.namespace, key, meta["token"], i) for i in range(len(meta["chunks"]))]
        for name in names:
            pipe.get(name)
        chunks = pipe.execute()
        good = all(c is not None and len(c) == length and zlib.crc32(c) == crc
                   for c, (length, crc) in zip(chunks, meta["chunks"]))
        header = None
        if good:
            try:
                header = Header.decode(bytes.fromhex(meta["header"]))
            except ValueError:
                header = None
        if header is None or header.key != key or header.payload_len != meta["size"]:
            self._count("corrupt")
            log.warning("shared tier: checkpoint %s is incomplete or corrupt; dropped", key)
            self._forget(key, meta["token"])
            return None
        return header, payload_view(b"".join(chunks), header)

    def _forget(self, key: str, token: str) -> None:
        entry = self._script("FORGET", key, token, self.ttl)
        if entry:
            self._delete_and_release([entry])

    # -------------------------------------------------------------- writes
    def publish(self, header: Header, payload: Any) -> None:
        """Queue ``payload`` for publishing; never waits. O(1). ``payload`` is
        what nobody may modify any more, or a function returning ``(header,
        payload)`` (or ``None`` when it is gone), called in the background."""
        if self._closed or not self.available:
            self._count("drops")
            return
        self._publisher.submit(("publish", header, payload))

    def _dropped(self, item: tuple) -> None:
        if item[0] == "publish":  # a lost touch only costs its checkpoint some recency
            self._count("drops")

    def _publish_one(self, item: tuple) -> None:
        """The background thread's work: ``("publish", header, payload)`` or ``("touch", key)``,
        in the order the engine asked (a touch lands before the publishes that follow it)."""
        if not self.available:
            self._dropped(item)
            return
        if item[0] == "touch":
            try:
                self._script("TOUCH", item[1])
            except Exception as exc:
                self._fault("touch", exc)
            return
        _, header, payload = item
        if callable(payload):
            found = payload()
            if found is None:  # evicted before its turn came
                self._count("drops")
                return
            header, payload = found
        self.write(header, payload)
        self._send_counters()

    def write(self, header: Header, payload: Any, *, now: float = 0.0) -> bool:
        """Publish now, in this thread: ``True`` when it became visible, ``False``
        when it was already held, could not fit, or Redis failed (counted as a drop)."""
        if self._closed or not self.available:
            return False
        try:
            return self._write(header, payload)
        except Exception as exc:
            self._count("drops")
            self._fault("publish", exc)
            return False

    def _write(self, header: Header, payload: Any) -> bool:
        view = payload_descriptor(payload)[0].cast("B")
        size = view.nbytes
        token = uuid.uuid4().hex[:16]
        bounds = [(i, min(i + self.chunk_bytes, size)) for i in range(0, size, self.chunk_bytes)] or [(0, 0)]
        for _ in range(64):
            reply = self._script("RESERVE", header.key, size, token, len(bounds), self.capacity_bytes, self.ttl,
                                 self.protect_tokens)
            verdict = _text(reply[0])
            if verdict == "ok":
                break
            if verdict == "exists":  # another engine published it
                return False
            if verdict in ("too_big", "full"):
                self._count("declined")
                return False
            if verdict == "evict":
                self._delete_and_release([_text(r) for r in reply[1:]])
            else:  # 'wait': another engine is deleting what makes room
                time.sleep(0.005)
        else:  # other engines kept taking the room first
            self._count("declined")
            return False
        names = [index.chunk_key(self.namespace, header.key, token, i) for i in range(len(bounds))]
        chunks = [view[a:b] for a, b in bounds]
        manifest = {"v": 1, "token": token, "size": size, "tokens": header.tokens,
                    "header": header.encode().hex(), "chunks": [[len(c), zlib.crc32(c)] for c in chunks]}
        if header.parent is not None:
            manifest["parent"] = header.parent
        if header.anchor is not None:
            manifest["anchor"] = header.anchor
        try:
            pipe = self._redis().pipeline(transaction=False)
            for name, chunk in zip(names, chunks):
                pipe.set(name, chunk)
            pipe.execute()
            verdict = _text(self._script("COMMIT", header.key, token, json.dumps(manifest), header.tokens,
                                         self.ttl))
        except Exception:
            self._abort(header.key, token)
            raise
        if verdict == "ok":
            self._count("publishes")
            return True
        if verdict == "exists":  # another engine published it first: ours goes
            self._delete_and_release([f"{header.key}:{token}={size},{len(bounds)}"])
        else:  # 'expired': our reservation was reclaimed; whoever reclaimed it releases the bytes
            self._delete(names)
        return False

    def _abort(self, key: str, token: str) -> None:
        try:
            entry = self._script("ABORT", key, token, self.ttl)
            if entry:
                self._delete_and_release([_text(entry)])
        except Exception:  # the reservation expires and the next reserve reclaims it
            pass

    def _delete(self, names: list[str]) -> None:
        pipe = self._redis().pipeline(transaction=False)
        for name in names:
            pipe.delete(name)
        pipe.execute()

    def _delete_and_release(self, entries: list[str]) -> None:
        """Delete the chunks of doomed ``key:token=size,n`` entries, then release their bytes."""
        names, ids = [], []
        for entry in entries:
            entry = _text(entry)
            ident, info = entry.split("=")
            key, token = ident.split(":")
            n = int(info.split(",")[1])
            names.extend(index.chunk_key(self.namespace, key, token, i) for i in range(n))
            ids.append(ident)
        if names:
            self._delete(names)
        self._script("RELEASE", *ids)

    def remove(self, key: str) -> None:
        """Drop ``key`` from the fleet's shared tier (for everyone)."""
        def forget() -> None:
            manifest = self._redis().hget(self._keys[0], key)
            if manifest is not None:
                self._forget(key, json.loads(manifest)["token"])
        self._guarded("remove", forget, None, timeout=self.timeout * 5)

    # ---------------------------------------------------------- statistics
    def record_hit(self, key: str, now: float = 0.0, session: str | None = None) -> None:
        """Record the use in the fleet's LRU order, in the background (a lookup
        waits for one round trip only, the probe). O(1)."""
        if not self._closed and self.available:
            self._publisher.submit(("touch", key))

    def count_lookup(self, hit: bool) -> None:
        self._count("hits" if hit else "misses")

    def _count(self, name: str) -> None:
        with self._count_lock:
            self.counters[name] += 1
            if name in self._unsent:
                self._unsent[name] += 1

    def _send_counters(self) -> None:
        """Add this engine's new hits, misses and drops to the fleet's counters (background thread)."""
        with self._count_lock:
            pending = {k: v for k, v in self._unsent.items() if v}
        if not pending or not self.available:
            return
        args = [x for k, v in pending.items() for x in (k, v)]
        try:
            self._script("COUNT", *args)
        except Exception as exc:
            self._fault("counters", exc)
            return
        with self._count_lock:
            for k, v in pending.items():
                self._unsent[k] -= v

    def fleet(self) -> dict[str, int] | None:
        """The fleet's counters as Redis holds them, or ``None`` when it does not answer."""
        def read() -> Any:
            self._send_counters()
            return self._redis().hgetall(self._keys[9])
        raw = self._guarded("stats", read, None, timeout=self.timeout * 5)
        if raw is None:
            return None
        return {_text(k): int(v) for k, v in raw.items()}

    def collect_orphans(self) -> tuple[int, int]:
        """Delete chunks no manifest, reservation or deletion in the index names
        (left behind when the index's master came back without its data); return
        ``(chunks, bytes)`` deleted. Safe while engines write: a chunk is written
        only after its reservation is in the index. O(keys of the namespace);
        raises what redis-py raises when Redis does not answer."""
        client = self._redis()
        clustered = hasattr(client, "get_primaries")
        nodes = [client.get_redis_connection(n) for n in client.get_primaries()] if clustered else [client]
        pattern = f"kvs:{self.namespace}:chunk:*"
        found = [name for node in nodes for name in node.scan_iter(match=pattern, count=1000)]
        manifests = client.hgetall(self._keys[0])
        live = {f"{_text(k)}:{json.loads(v)['token']}" for k, v in manifests.items()}
        live.update(_text(i) for i in client.hkeys(self._keys[6]))  # reservations being written
        live.update(_text(i) for i in client.hkeys(self._keys[8]))  # deletions under way
        orphans = [name for name in found if _text(name).split("{", 1)[1].rsplit(":", 1)[0] not in live]
        sizes = [client.strlen(name) for name in orphans]
        if orphans:
            self._delete(orphans)
        return len(orphans), sum(sizes)

    def refresh(self) -> None:
        """Nothing to refresh: every lookup asks Redis."""

    def stats(self) -> dict[str, Any]:
        """The fleet's ``entries``, ``bytes`` (reserved, held and being deleted),
        ``capacity_bytes``, ``evictions``, ``hits``, ``misses`` and ``drops``, and
        this engine's own counters under ``local``; ``reachable`` says whether Redis answered."""
        fleet = self.fleet()
        local = {**self.counters, "queued": len(self._publisher)}
        out = {"url": _redacted(self.url), "reachable": fleet is not None, "entries": 0, "bytes": 0,
               "capacity_bytes": self.capacity_bytes, "evictions": 0, "hits": 0, "misses": 0, "drops": 0,
               "publishes": 0, "corrupt": 0, "local": local}
        if fleet is not None:
            out.update(entries=fleet.get("entries", 0), bytes=fleet.get("used", 0),
                       capacity_bytes=fleet.get("capacity", self.capacity_bytes),
                       **{k: fleet.get(k, 0) for k in ("evictions", "hits", "misses", "drops", "publishes",
                                                        "corrupt")})
        return out

    # --------------------------------------------------------------- close
    def flush(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` seconds) until every queued checkpoint is published or dropped."""
        self._publisher.flush(timeout)
        self._send_counters()

    def close(self) -> None:
        """Publish what waits (at most 5 s), then disconnect. Idempotent."""
        if self._closed:
            return
        self._publisher.close()
        self._send_counters()
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._disconnect()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
