"""``kvstore``: inspect, verify and repair a checkpoint store from the shell.

Examples::

    kvstore stats /var/cache/kv            # entries, bytes per tier, hits, evictions
    kvstore stats /var/cache/kv --json     # the same, machine-readable
    kvstore stats /var/cache/kv --cold /mnt/slow/kv   # with its cold tier
    kvstore stats /var/cache/kv --shared redis://10.0.0.5:7000   # with the fleet's shared tier
    kvstore shared-gc /var/cache/kv redis://10.0.0.5:7000        # delete chunks no index entry names
    kvstore verify /var/cache/kv           # re-read every file, check every checksum
    kvstore verify /var/cache/kv --repair  # quarantine bad files, rebuild a damaged index
    kvstore ls /var/cache/kv               # every checkpoint: tokens, size, age, hits, pin
    kvstore pin /var/cache/kv --tokens system-prompt.json   # keep a prefix out of eviction
    kvstore unpin /var/cache/kv --tokens system-prompt.json
    kvstore evict /var/cache/kv --to 100GiB                 # shrink now, the policy choosing

Exit status: 0 when everything checked out, 1 when ``verify`` found problems
(without ``--repair``), 2 on bad usage or an unusable store.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence

from .errors import KVStoreError
from .store import CheckpointStore
from .units import human_bytes, parse_size

__all__ = ["main", "rebuild_index"]

log = logging.getLogger(__name__)


def rebuild_index(path: str) -> str:
    """Move a damaged LMDB index aside (into ``quarantine/``); the next open
    rebuilds it from the payload files' headers. Returns where it went."""
    index_dir = os.path.join(path, "index")
    target = os.path.join(path, "quarantine", f"index-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    shutil.move(index_dir, target)
    return target


def _open_shared(url: str, store: CheckpointStore):
    """The shared tier at ``url`` for ``store``'s namespace, to inspect (its capacity is the fleet's)."""
    from .tiers.shared import SharedTier, check_url

    check_url(url)
    return SharedTier(url, 1, namespace=store.namespace, block_tokens=store.block_tokens, timeout=2.0)


def _not_answering(flag: str, tier) -> KVStoreError:
    from .tiers.shared import _redacted

    return KVStoreError(f"{flag}{_redacted(tier.url)}: Redis does not answer ({tier.last_fault})")


def _shared_stats(url: str, store: CheckpointStore) -> dict:
    """The fleet's shared tier of ``store``'s namespace at ``url``; ``KVStoreError`` when it does not answer."""
    tier = _open_shared(url, store)
    try:
        shared = tier.stats()
    finally:
        tier.close()
    if not shared["reachable"]:
        raise _not_answering("--shared ", tier)
    del shared["local"]  # this process's own counters: nothing happened in it
    return shared


def _cmd_stats(args: argparse.Namespace) -> int:
    with CheckpointStore(args.path, readonly=True, cold_path=args.cold) as store:
        stats = store.stats()
        if args.shared is not None:
            stats["tiers"]["shared"] = _shared_stats(args.shared, store)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{stats['path']}[/]  namespace={stats['namespace']!r}  "
                  f"block_tokens={stats['block_tokens']}  layout={stats['layout']}")
    console.print(f"capacity {human_bytes(stats['capacity_bytes'])}, used {human_bytes(stats['bytes'])} "
                  f"(index slice {human_bytes(stats['index_bytes'])})")
    table = Table("tier", "entries", "bytes", "capacity", "hits", "misses", "promotions",
                  "demotions", "evictions", "compression")
    for name, tier in stats["tiers"].items():
        if "dropped_writes" in tier:
            continue  # the queue of writes of this process; a separate process never has any
        table.add_row(name, str(tier["entries"]), human_bytes(tier["bytes"]),
                      human_bytes(tier["capacity_bytes"]), str(tier["hits"]), str(tier["misses"]),
                      str(tier.get("promotions", 0)), str(tier.get("demotions", 0)), str(tier["evictions"]),
                      f"{tier.get('compression_ratio', 1.0):.2f}x")
    console.print(table)
    disk = stats["tiers"]["disk"]
    console.print(f"disk: pinned {human_bytes(disk['pinned_bytes'])}, {disk['tail_entries']} tails"
                  + (f", {human_bytes(disk['snapshot_equivalent_bytes'])} as snapshots"
                     if "snapshot_equivalent_bytes" in disk else ""))
    console.print(f"hits {stats['hits']}  misses {stats['misses']}  puts {stats['puts']}  "
                  f"declined {stats['declined']}  evictions {stats['evictions']}  "
                  f"quarantined {stats['quarantined']}")
    shared = stats["tiers"].get("shared")
    if shared is not None:
        console.print(f"shared ({shared['url']}, every engine of this namespace): publishes "
                      f"{shared['publishes']}  drops {shared['drops']}  corrupt {shared['corrupt']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        store = CheckpointStore(args.path, readonly=not args.repair)
    except KVStoreError as exc:
        if not args.repair or not os.path.isdir(os.path.join(args.path, "index")):
            raise
        moved = rebuild_index(args.path)
        print(f"index could not be opened ({exc}); moved it to {moved} and rebuilt it from the files")
        store = CheckpointStore(args.path)
    with store:
        report = store.verify(repair=args.repair)
    problems = len(report["bad"]) + len(report["missing"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(report['ok'])} ok, {len(report['bad'])} bad, {len(report['missing'])} missing")
        for kind in ("bad", "missing"):
            for key in report[kind]:
                print(f"  {kind}: {key}" + ("  (repaired)" if args.repair else ""))
    return 0 if args.repair or problems == 0 else 1


def _read_tokens(path: str) -> list[int]:
    """Token ids from a file: a JSON list, or integers separated by spaces or newlines."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ValueError(f"--tokens {path}: {exc.strerror}") from None
    try:
        tokens = json.loads(text) if text.lstrip().startswith("[") else [int(t) for t in text.split()]
    except ValueError:
        raise ValueError(f"--tokens {path}: expected a JSON list of token ids or whitespace-separated "
                         f"integers") from None
    if not tokens or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise ValueError(f"--tokens {path}: expected a non-empty list of integer token ids")
    return tokens


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(0.0, seconds):.0f}s"


def _cmd_ls(args: argparse.Namespace) -> int:
    with CheckpointStore(args.path, readonly=True) as store:
        rows = store.checkpoints()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    now = time.time()
    table = Table("tokens", "size", "age", "idle", "hits", "pinned", "tail", "key")
    for r in rows:
        table.add_row(f"{r['tokens']:,}", human_bytes(r["bytes"]), _age(now - r["inserted_at"]),
                      _age(now - r["last_use"]), str(r["hits"]), "yes" if r["pinned"] else "",
                      "yes" if r["tail"] else "", r["key"][:12])
    console = Console()
    console.print(table)
    console.print(f"{len(rows)} checkpoints, {human_bytes(sum(r['bytes'] for r in rows))}")
    return 0


def _cmd_pin(args: argparse.Namespace) -> int:
    tokens = _read_tokens(args.tokens)
    with CheckpointStore(args.path) as store:
        if args.command == "unpin":
            store.unpin(tokens)
            print(f"unpinned every stored prefix of the {len(tokens):,} tokens")
        else:
            match = store.pin(tokens)
            print(f"pinned the stored prefix of {match.tokens:,} tokens (key {match.key[:12]})")
    return 0


def _cmd_evict(args: argparse.Namespace) -> int:
    try:
        target = parse_size(args.to)
    except ValueError as exc:
        raise ValueError(f"--to: {exc}") from None
    with CheckpointStore(args.path) as store:
        gone = store.evict_to(target)
        left = store.stats()["tiers"]["disk"]["bytes"]
    print(f"evicted {gone} checkpoints; {human_bytes(left)} of checkpoints left"
          + ("" if left <= target else " (the rest is pinned)"))
    return 0


def _cmd_shared_gc(args: argparse.Namespace) -> int:
    with CheckpointStore(args.path, readonly=True) as store:
        tier = _open_shared(args.url, store)
    try:
        if not tier.available:
            raise _not_answering("", tier)
        chunks, nbytes = tier.collect_orphans()
    finally:
        tier.close()
    print(f"deleted {chunks} orphaned chunks ({human_bytes(nbytes)}) of namespace {store.namespace.name!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvstore", description=__doc__.split("\n\n")[0],
        epilog="Run 'kvstore COMMAND --help' for each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the store does")
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="entries, bytes, hits and evictions of a store",
                           description="Print a store's counts and bytes per tier (opens it read-only).")
    stats.add_argument("path", help="the store directory")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--cold", metavar="COLD_PATH", default=None,
                       help="also report the store's cold tier in COLD_PATH (the RAM tier lives "
                            "inside each process and is not visible from here)")
    stats.add_argument("--shared", metavar="URL", default=None,
                       help="also report the shared tier this store's engines use: the fleet's entries, "
                            "bytes, capacity, hits, misses, evictions and drops for the store's namespace "
                            "(redis://host:port of any cluster node; needs kvstore[shared])")
    stats.set_defaults(func=_cmd_stats)
    verify = sub.add_parser(
        "verify", help="re-read every payload and check its checksum",
        description="Re-read every indexed payload file and check header, length and checksum. "
                    "Without --repair the store is opened read-only and nothing changes; exit 1 "
                    "if anything is wrong. With --repair bad files are quarantined and dropped, "
                    "temp files removed, unindexed valid files adopted, and a damaged index "
                    "rebuilt from the files' headers.")
    verify.add_argument("path", help="the store directory")
    verify.add_argument("--repair", action="store_true", help="fix what is wrong instead of only reporting it")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_cmd_verify)
    ls = sub.add_parser("ls", help="list the checkpoints of a store",
                        description="One line per checkpoint on disk, shortest prefix first: tokens, size, "
                                    "age, time since its last hit, hits, pinned, tail (opens it read-only).")
    ls.add_argument("path", help="the store directory")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_cmd_ls)
    for name, what in (("pin", "keep the longest stored prefix of some tokens out of eviction"),
                       ("unpin", "release the pins on the stored prefixes of some tokens")):
        cmd = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        cmd.add_argument("path", help="the store directory")
        cmd.add_argument("--tokens", required=True, metavar="FILE",
                         help="the prompt's token ids: a JSON list, or integers separated by whitespace")
        cmd.set_defaults(func=_cmd_pin)
    evict = sub.add_parser("evict", help="evict now until the checkpoints fit a size",
                           description="Evict the checkpoints the store's policy names until those on disk "
                                       "take at most --to bytes (pinned ones stay). Safe while engines "
                                       "have the store open.")
    evict.add_argument("path", help="the store directory")
    evict.add_argument("--to", required=True, metavar="SIZE", help="e.g. 100GiB, 64MiB, 4096")
    evict.set_defaults(func=_cmd_evict)
    gc = sub.add_parser("shared-gc", help="delete shared-tier chunks that no index entry names",
                        description="Delete the chunks of the store's namespace in the shared tier that no "
                                    "manifest, reservation or deletion names: what is left when the master "
                                    "holding the index came back without its data. Safe while engines run.")
    gc.add_argument("path", help="a store directory of the fleet (for its namespace)")
    gc.add_argument("url", help="redis://host:port of any cluster node (or the single server)")
    gc.set_defaults(func=_cmd_shared_gc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # a shared tier that does not answer is reported once, as the error
        logging.getLogger("kvstore.tiers.shared").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (KVStoreError, ValueError, OSError, ImportError) as exc:
        print(f"kvstore: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
