"""``kvstore``: inspect, verify and repair a checkpoint store from the shell.

Examples::

    kvstore stats /var/cache/kv            # entries, bytes per tier, hits, evictions
    kvstore stats /var/cache/kv --json     # the same, machine-readable
    kvstore stats /var/cache/kv --cold /mnt/slow/kv   # with its cold tier
    kvstore verify /var/cache/kv           # re-read every file, check every checksum
    kvstore verify /var/cache/kv --repair  # quarantine bad files, rebuild a damaged index

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
from .units import human_bytes

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


def _cmd_stats(args: argparse.Namespace) -> int:
    with CheckpointStore(args.path, readonly=True, cold_path=args.cold) as store:
        stats = store.stats()
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (KVStoreError, ValueError, OSError) as exc:
        print(f"kvstore: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
