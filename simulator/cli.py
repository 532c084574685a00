"""kvsim: replay LLM agent traces through kvstore's eviction policies.

Typical session:

    kvsim generate openclaw --sessions 40 -o my.jsonl      # a workload
    kvsim sweep traces/openclaw-strip-history.jsonl --capacities 5%,10%,25%,50% \\
          --policies all --plot sweep.png                    # which policy wins
    kvsim simulate my.jsonl --capacity 64GiB --policy prefix-chain --requests per-request.jsonl
    kvsim simulate my.jsonl --engines 4 --capacity 5% --shared-capacity 20%   # what a shared tier saves
    kvsim scenarios                                          # the OpenClaw report, call by call

Capacities are bytes (4096, 64MiB, 256GiB) or a percentage of the trace's
working set (every distinct checkpoint it would write, at the profile's sizes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence

from policies.registry import BUILTIN, available, is_offline

from .collector import rarer_collections
from .costmodel import PROFILES, get_profile, load_profiles
from .interrupts import Terminated, terminate_as_interrupt
from .keyed import KeyedTrace
from .replay import ReplayConfig, working_set_bytes
from .sweep import RunSpec, parse_policies, parse_size, resolve_capacity, run, sweep
from .trace import TraceError, no_requests, read_trace, scaled, write_trace

__all__ = ["main"]

METRICS_HELP = ("Metrics: requests, prompt_tokens, loaded_tokens, prefill_tokens, reprefill_seconds, "
                "token_hit_rate, ttft_p50, ttft_p99, full_misses, bytes_written, evictions, "
                "blend_potential_tokens (tokens seen earlier at another position, which a CacheBlend-style "
                "engine could reuse).")


def _progress_runner(total: int, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                        disable=not sys.stderr.isatty(), console=None)
    return progress, progress.add_task(description, total=total)


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _capacity(flag: str, text: str, working_set: int | None) -> int:
    try:
        return resolve_capacity(text, working_set)
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: {exc}") from None


def _check_writable(flag: str, path: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Fail before any work when an output file could not be written (or, given
    ``suffixes``, has another suffix)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: folder {folder} is not writable")
    if suffixes is not None and os.path.splitext(path)[1].lower() not in suffixes:
        raise ValueError(f"{flag} {path}: use a file name ending in {' or '.join(suffixes)}")


@contextlib.contextmanager
def _partial_output(path: str) -> Iterator[str]:
    """The name to write ``path``'s content under (``path.partial``): renamed to
    ``path`` when the body succeeds, deleted when it fails, so a file there is
    always whole."""
    partial = f"{path}.partial"
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _check_output_path(flag: str, path: str, suffixes: tuple[str, ...]) -> None:
    """Fail before any work when a plot or report could not be written."""
    _check_writable(flag, path, suffixes)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"{flag} needs matplotlib: pip install 'kvstore[plot]'") from None


def _add_replay_options(p: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    p.add_argument("trace", help="a trace file (JSON Lines, format v1; see README)")
    p.add_argument("--profile", default="ds4", help=f"cost profile: {', '.join(PROFILES)} or one from --profiles-file")
    p.add_argument("--profiles-file", help="TOML file with [profiles.NAME] tables")
    p.add_argument("--layout", choices=["snapshot", "chained"], default="snapshot",
                   help="snapshot: each checkpoint holds the whole state; chained: one block each")
    p.add_argument("--block-tokens", type=int, default=4096, help="checkpoint every N tokens (default 4096)")
    p.add_argument("--no-tail", action="store_true", help="do not write a checkpoint at the exact end of a prompt")
    p.add_argument("--index-bytes", type=parse_size, default=None, metavar="SIZE",
                   help="the store's index slice of the capacity (default: the store's, 1/64 of it "
                        "between 1 MiB and 1 GiB); checkpoint files get the rest")
    p.add_argument("--session-hints", action="store_true",
                   help="tell the store each request's session and when a session ends "
                        "(put(session=), end_session): an ended session's own checkpoints go first")
    if json_output:
        p.add_argument("--json", action="store_true", help="print a JSON list of results instead of a table")


def _replay_config(args) -> ReplayConfig:
    """The replay settings of the command line (capacity not yet known)."""
    extra = load_profiles(args.profiles_file) if args.profiles_file else None
    return ReplayConfig(capacity_bytes=1, policy="lru", profile=get_profile(args.profile, extra),
                        layout=args.layout, block_tokens=args.block_tokens, write_tail=not args.no_tail)


def _count_requests(path: str) -> int:
    """Lines of a trace file (an upper bound of its requests, for a progress bar)."""
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _keys(args) -> KeyedTrace:
    """The trace's keys, hashed once for every run of the command, streaming
    the file (memory: the compact keys, not the requests), in ``--jobs``
    processes where the command has it; progress on stderr."""
    config = _replay_config(args)
    progress, task = _progress_runner(_count_requests(args.trace), "hashing prompts")
    with progress, rarer_collections():
        keys = KeyedTrace.build(read_trace(args.trace), block_tokens=config.block_tokens,
                                namespace=config.namespace, write_tail=config.write_tail, source=args.trace,
                                progress=lambda n: progress.update(task, completed=n), jobs=getattr(args, "jobs", 1))
    if not len(keys):
        raise no_requests(args.trace)
    return keys


def _spec(args, policy: str, capacity: str, working_set: int | None, keys_dir: str | None = None) -> RunSpec:
    flag = "--capacity" if hasattr(args, "capacity") else "--capacities"
    return RunSpec(trace=args.trace, policy=policy, capacity_bytes=_capacity(flag, capacity, working_set),
                   capacity_label=capacity, profile=args.profile, layout=args.layout,
                   block_tokens=args.block_tokens, write_tail=not args.no_tail, profiles_file=args.profiles_file,
                   session_hints=args.session_hints, index_bytes=args.index_bytes, keys_dir=keys_dir)


def _public(result: dict) -> dict:
    """A result as JSON: the capacity as the user wrote it is ``capacity_label``."""
    return {("capacity_label" if k == "capacity" else k): v for k, v in result.items()}


def cmd_simulate(args) -> int:
    if args.engines > 1 or args.shared_capacity is not None:
        return _simulate_fleet(args)
    backend = None
    if args.backend == "store":
        if not args.store_dir:
            raise SystemExit("kvsim simulate: --backend store needs --store-dir DIR (an empty or new directory)")
        from .store_backend import StoreBackend
        if os.path.exists(args.store_dir) and os.listdir(args.store_dir):
            raise SystemExit(f"kvsim simulate: --store-dir {args.store_dir} is not empty; "
                             f"the replay needs a fresh store")
        backend = StoreBackend.at(args.store_dir)
    elif args.store_dir:
        raise SystemExit("kvsim simulate: --store-dir goes with --backend store")
    keys = None if backend is not None else _keys(args)  # hashed once, the working set included
    if keys is None and not any(True for _ in read_trace(args.trace)):
        raise no_requests(args.trace)
    working_set = None
    if args.capacity.strip().endswith("%"):
        working_set = (keys.working_set_bytes(_replay_config(args).entry_bytes) if keys is not None
                       else working_set_bytes(read_trace(args.trace), _replay_config(args)))
    spec = _spec(args, args.policy, args.capacity, working_set)
    total = len(keys) if keys is not None else _count_requests(args.trace)
    sink = open(args.requests, "w", encoding="utf-8") if args.requests else None

    def on_request(r):
        sink.write(json.dumps(r.to_json()) + "\n")

    progress, task = _progress_runner(total, f"replaying {args.policy}")
    try:
        with progress:
            result = run(spec, on_request=on_request if sink else None,
                         progress=lambda n: progress.update(task, completed=n), backend=backend,
                         keys=keys)
        if backend is not None and result.get("index_room_evictions"):
            print(f"note: the store evicted {result['index_room_evictions']} checkpoints to keep its index "
                  f"from filling, which the simulator does not model; give it a larger --index-bytes",
                  file=sys.stderr)
    finally:
        if sink:
            sink.close()
    if args.json:
        print(json.dumps([_public(result)], indent=2))
    else:
        from .report import print_table
        print_table([result], title=f"{args.trace} — profile {args.profile}")
    return 0


def _simulate_fleet(args) -> int:
    """``--engines N [--shared-capacity X]``: the fleet without, then with, the shared tier."""
    from .fleet import fleet

    if args.backend == "store" or args.store_dir:
        raise ValueError("--engines/--shared-capacity: a fleet is simulated with --backend manager only")
    if args.layout != "snapshot":
        raise ValueError("--engines/--shared-capacity: a fleet models the snapshot layout only")
    shared_text = args.shared_capacity
    if shared_text is not None:
        _capacity("--shared-capacity", shared_text, 1 if shared_text.strip().endswith("%") else None)
    config = _replay_config(args)
    if is_offline(args.policy):
        raise ValueError(f"--policy {args.policy}: an offline reference cannot run in a fleet; "
                         f"pick an online policy (kvsim policies)")
    keys = _keys(args)
    working_set = keys.working_set_bytes(config.entry_bytes)
    spec = _spec(args, args.policy, args.capacity, working_set)
    shared_bytes = None if shared_text is None else _capacity("--shared-capacity", shared_text, working_set)
    sink = open(args.requests, "w", encoding="utf-8") if args.requests else None
    variants = [(None, f"{args.engines} engines")]
    if shared_bytes is not None:
        variants.append((shared_bytes, f"+ shared {shared_text}"))
    results = []
    progress, task = _progress_runner(len(keys) * len(variants), "replaying the fleet")
    try:
        with progress:
            for done, (shared, label) in enumerate(variants):
                report: dict = {}
                last = done == len(variants) - 1
                backend = fleet(engines=args.engines, shared_bytes=shared, report=report, route=args.route)
                result = run(spec, keys=keys, backend=backend,
                             on_request=(lambda r: sink.write(json.dumps(r.to_json()) + "\n")) if sink and last
                             else None,
                             progress=lambda n, base=done * len(keys): progress.update(task, completed=base + n))
                results.append({**result, "policy_label": label, **report})
    finally:
        if sink:
            sink.close()
    if args.json:
        print(json.dumps([_public(r) for r in results], indent=2))
        return 0
    from .report import print_fleet
    print_fleet(results, title=f"{os.path.basename(args.trace)}: {args.policy}, {args.capacity} per engine")
    per_engine = results[0]["requests_per_engine"]
    routing = {"session": "sessions hashed to engines", "request": "every request to any engine"}[args.route]
    print(f"routing: {'engine tags' if keys.engines else routing}; requests per engine "
          f"{', '.join(map(str, per_engine))}")
    if shared_bytes is not None:
        before, after = results
        saved = before["reprefill_seconds"] - after["reprefill_seconds"]
        share = saved / before["reprefill_seconds"] if before["reprefill_seconds"] else 0.0
        print(f"shared tier {shared_text} ({after['shared_capacity_bytes'] / 2**30:.1f} GiB): served "
              f"{after['shared_hits']} lookups ({after['shared_loaded_tokens']:,} tokens), "
              f"{after['shared_evictions']} evictions")
        print(f"re-prefill without it {before['reprefill_seconds']:,.0f} s, with it {after['reprefill_seconds']:,.0f} s: "
              f"{saved:,.0f} s saved ({share:.1%})")
    return 0


def _results_log(args, config: ReplayConfig):
    """The ``--results`` file of a sweep: the runs it already holds for this
    trace and these settings are not replayed again."""
    from dataclasses import asdict

    from .results_log import ResultsLog, file_sha1

    _check_writable("--results", args.results, (".jsonl",))
    settings = {"profile": asdict(config.profile), "layout": args.layout, "block_tokens": args.block_tokens,
                "write_tail": not args.no_tail, "session_hints": args.session_hints,
                "index_bytes": args.index_bytes}
    return ResultsLog(args.results, trace_sha1=file_sha1(args.trace), settings=settings)


def _key_cache(args, config: ReplayConfig, log):
    """Where a sweep with ``--results FILE`` keeps its hashed keys: ``FILE.keys``."""
    from .key_cache import KeyCache

    return KeyCache(args.results + ".keys", trace_sha1=log.trace_sha1, block_tokens=config.block_tokens,
                    namespace=config.namespace, write_tail=config.write_tail)


def cmd_sweep(args) -> int:
    policies = parse_policies(args.policies)
    capacities = [c.strip() for c in args.capacities.split(",") if c.strip()]
    if not capacities:
        raise ValueError("--capacities needs at least one size or percentage")
    if args.plot:
        _check_output_path("--plot", args.plot, (".png", ".svg", ".pdf"))
    if args.report:
        _check_output_path("--report", args.report, (".html", ".htm"))
    for capacity in capacities:  # every flag checked before any work
        _capacity("--capacities", capacity, 1 if capacity.endswith("%") else None)
    config = _replay_config(args)  # an unknown profile: one line, before any work
    cells = [(p, c) for c in capacities for p in policies]
    shares = any(c.endswith("%") for c in capacities)  # some capacity is a share of the working set
    log, finished = None, {}
    if args.results:
        log = _results_log(args, config)
        wanted = set(cells)
        finished = {cell: result for cell, result in log.finished().items() if cell in wanted}
        print(log.describe(len(finished), len(cells)), file=sys.stderr)
    working_set = None
    todo = [cell for cell in cells if cell not in finished]
    if todo:
        with contextlib.ExitStack() as cleanup:
            # hashed once; every run maps the same arrays. Beside a results file the keys
            # outlive a crash, and a resumed sweep maps them instead of hashing again
            cache = _key_cache(args, config, log) if log is not None else None
            keys = cache.load() if cache is not None else None
            if keys is not None:
                print(f"{cache.directory}: keys of this trace reused, nothing to hash", file=sys.stderr)
            else:
                keys = _keys(args)
                if cache is not None:
                    cache.save(keys)
            working_set = keys.working_set_bytes(config.entry_bytes) if shares else None
            if cache is not None:
                keys_dir = cache.directory
            else:
                keys_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="kvsim-keys-"))
                keys.save(keys_dir)
            del keys
            specs = [_spec(args, p, c, working_set, keys_dir) for p, c in todo]
            progress, task = _progress_runner(len(specs), "sweeping")

            def done(result: dict) -> None:
                if log is not None:
                    log.append(result, working_set)
                progress.advance(task)

            with progress:
                finished.update(zip(todo, sweep(specs, jobs=args.jobs, on_done=done)))
        if cache is not None:  # every run asked for is on file: the results are all it needs now
            cache.remove()
    elif shares:  # every run was on file: its working set too
        working_set = log.working_set_bytes
    results = [finished[cell] for cell in cells]
    if args.json:
        print(json.dumps([_public(r) for r in results], indent=2))
    else:
        from .report import print_matrix, print_table
        print_table(results, title=f"{args.trace} — profile {args.profile}, working set "
                    f"{working_set / 2**30:.1f} GiB" if working_set else args.trace)
        print_matrix(results)
    title = f"{args.trace.rsplit('/', 1)[-1]} ({args.profile})"
    if args.plot:
        from .report import plot_sweep
        plot_sweep(results, args.plot, title=title)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.report:
        from .html_report import write_report
        from .report import plot_sweep
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "plot.png")
            plot_sweep(results, png, title=title)
            with open(png, "rb") as fh:
                plot_png = fh.read()
        extra = load_profiles(args.profiles_file) if args.profiles_file else None
        write_report(args.report, results, trace=args.trace, profile=get_profile(args.profile, extra),
                     command=" ".join(["kvsim", *map(shlex.quote, args.argv)]),
                     plot_png=plot_png, working_set=working_set)
        print(f"report written to {args.report}", file=sys.stderr)
    return 0


def cmd_generate(args) -> int:
    _check_writable("-o", args.output)
    command = "kvsim " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("kvsim") else None
    if args.workload == "openclaw":
        from .generators.openclaw import OpenClawConfig, iter_generate

        cfg = OpenClawConfig(sessions=args.sessions, turns=(args.min_turns, args.max_turns), client=args.client,
                             tool_calls=(0, args.max_tool_calls), retrieval_rate=args.retrieval_rate,
                             splice_rate=args.splice_rate, compact_at=args.compact_at,
                             session_gap_s=args.session_gap, think_time_s=args.think_time, seed=args.seed)
        requests = iter_generate(cfg)  # streamed: memory holds the running sessions, not the trace
    elif args.workload == "conversation":
        from .generators.conversation import ConversationConfig, generate_mooncake_lines

        cfg = ConversationConfig(conversations=args.conversations, seed=args.seed)
        with _partial_output(args.output) as partial, open(partial, "w", encoding="utf-8") as sink:
            count = 0
            for doc in generate_mooncake_lines(cfg):
                sink.write(json.dumps(doc) + "\n")
                count += 1
        print(f"wrote {count} Mooncake-format requests to {args.output}; "
              f"replay them after: kvsim import mooncake {args.output} -o TRACE", file=sys.stderr)
        return 0
    else:
        from .generators.ds4 import Ds4Config, generate as generate_ds4

        requests = generate_ds4(Ds4Config(stale_sessions=args.stale_sessions, turns=args.turns, seed=args.seed))
    scale = getattr(args, "scale", 1.0)
    if scale != 1.0:
        requests = scaled(requests, scale)
    provenance = {"generator": args.workload, "seed": args.seed, **({"scale": scale} if scale != 1.0 else {})}
    if command:
        provenance["command"] = command
    with _partial_output(args.output) as partial:
        count = write_trace(partial, requests, **provenance)
    print(f"wrote {count} requests to {args.output}", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    from .interop import import_mooncake

    _check_writable("-o", args.output)
    with _partial_output(args.output) as partial, open(args.file, encoding="utf-8") as fh:
        try:
            count = write_trace(partial, import_mooncake(fh, block_size=args.block_size),
                                generator="mooncake-import", source=args.file, block_size=args.block_size)
        except UnicodeDecodeError:
            raise TraceError(f"{args.file} is not a text file (not UTF-8)") from None
        except TraceError as exc:
            raise TraceError(f"{args.file}: {exc}") from None
    print(f"wrote {count} requests to {args.output}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from .interop import export_libcachesim

    _check_writable("-o", args.output)
    config = _replay_config(args)
    with _partial_output(args.output) as partial, open(partial, "w", encoding="utf-8", newline="") as sink:
        rows = export_libcachesim(read_trace(args.trace), sink, config)
    print(f"wrote {rows} object requests to {args.output}", file=sys.stderr)
    return 0


def cmd_profiles(args) -> int:
    table = dict(PROFILES)
    if args.file:
        table.update(load_profiles(args.file))
    if args.json:
        print(json.dumps({n: p.as_dict() for n, p in table.items()}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("profile", "prefill tok/s (0 ctx)", "halves at", "decode tok/s", "disk MiB/s", "KV B/token",
              "fixed MiB", "description")
    for p in table.values():
        t.add_row(p.name, f"{p.prefill_tps:g}", f"{p.context_halving:,.0f}", f"{p.decode_tps:g}",
                  f"{p.disk_read_bps / 2**20:,.0f}", f"{p.kv_bytes_per_token:,.0f}",
                  f"{p.fixed_bytes / 2**20:g}", p.description)
    Console().print(t)
    return 0


def cmd_policies(args) -> int:
    names = available()
    if args.json:
        print(json.dumps(names, indent=2))
        return 0
    for name, description in names.items():
        cls = BUILTIN.get(name)
        print(f"{name:14} {description}{'  [offline]' if cls is not None and cls.offline else ''}")
    return 0


def cmd_scenarios(args) -> int:
    from .scenarios import run_scenarios

    get_profile(args.profile)  # an unknown name: one line naming the available ones
    results = run_scenarios(args.profile)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "expected"} for r in results], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("#", "scenario", "calls (outcome, TTFT s)", "report says")
    for r in results:
        calls = "  ".join(f"{c['outcome']} {c['ttft']:.1f}" for c in r["calls"])
        t.add_row(str(r["scenario"]), r["name"], calls, r["expected"])
    Console().print(t)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="replay a trace with one policy at one capacity",
                       description="Replay TRACE through the store's eviction manager. " + METRICS_HELP)
    _add_replay_options(p)
    p.add_argument("--capacity", required=True, help="bytes (64GiB) or share of the working set (10%%)")
    p.add_argument("--policy", default="prefix-chain", help="a name from 'kvsim policies'")
    p.add_argument("--requests", metavar="FILE.jsonl", help="also write one line per request")
    p.add_argument("--backend", choices=["manager", "store"], default="manager",
                   help="manager: the store's eviction manager counting bytes (fast); store: a real "
                        "CheckpointStore in --store-dir, writing payload files of the profile's sizes "
                        "(proves the simulator makes the store's decisions; disk speed)")
    p.add_argument("--store-dir", metavar="DIR", help="with --backend store: an empty or new directory")
    p.add_argument("--engines", type=_positive_int, default=1, metavar="N",
                   help="a fleet of N engines, each with --capacity of its own; a request goes to the engine "
                        "its 'engine' tag names, else to the one its session hashes to (default 1)")
    p.add_argument("--route", choices=["session", "request"], default="session",
                   help="without engine tags: 'session' sends a session's requests to one engine (affinity); "
                        "'request' sends each request to an engine of its own (a load balancer without "
                        "affinity, sessions moving between machines)")
    p.add_argument("--shared-capacity", metavar="SIZE", default=None,
                   help="add one shared tier of SIZE (bytes or share of the working set) that every engine "
                        "publishes to and looks up in; prints the fleet without it and with it")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("sweep", help="replay a trace for every policy x capacity",
                       description="Replay TRACE for each policy at each capacity, print a table (best online "
                                   "policy per capacity in bold) and optionally plot re-prefill time vs "
                                   "capacity. " + METRICS_HELP)
    _add_replay_options(p)
    p.add_argument("--capacities", default="5%,10%,25%,50%", help="comma-separated sizes or percentages")
    p.add_argument("--policies", default="all", help="'all' (online policies + belady) or a comma list")
    p.add_argument("--jobs", type=_positive_int, default=1, help="processes to run in parallel (>= 1): the replays, and "
                   "before them the hashing of the trace's prompts")
    p.add_argument("--plot", metavar="FILE.png", help="write a plot of re-prefill time vs capacity")
    p.add_argument("--report", metavar="FILE.html",
                   help="write one self-contained HTML report (plot embedded, matrix, verdict, every metric, "
                        "the policies, the trace's provenance, the profile, this command line)")
    p.add_argument("--results", metavar="FILE.jsonl",
                   help="append each run to FILE as it finishes (synced to disk) and skip the runs FILE "
                        "already holds for this trace and these settings: a long sweep that crashed or was "
                        "stopped goes on where it stopped when run again with the same command (its hashed "
                        "keys wait in FILE.keys until every run is on file, so it does not hash again)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("generate", help="write a synthetic trace",
                       description="Generate a seeded, reproducible workload as a trace file.")
    gen = p.add_subparsers(dest="workload", required=True)
    g = gen.add_parser("openclaw", help="multi-session agent workload shaped like the OpenClaw reports",
                       description="Interleaved agent sessions: shared 12-16k system prompt, growing message "
                                   "tapes, tool calls extending the prompt, retrieval in the user message or "
                                   "spliced into the system message, metadata handling by client version, "
                                   "auto-compaction, think times.")
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--sessions", type=int, default=20)
    g.add_argument("--min-turns", type=int, default=4)
    g.add_argument("--max-turns", type=int, default=12)
    g.add_argument("--client", choices=["strip-history", "tail-carrier", "append-only"], default="strip-history",
                   help="strip-history: metadata on the active user message, stripped in history (diverge at "
                        "the previous user message); tail-carrier: metadata in a runtime-context message at "
                        "the tail; append-only: a well-behaved client")
    g.add_argument("--max-tool-calls", type=int, default=5, help="tool calls per turn drawn from 0..N")
    g.add_argument("--retrieval-rate", type=float, default=0.3, help="share of turns with retrieved text")
    g.add_argument("--splice-rate", type=float, default=0.05,
                   help="share of turns whose retrieval is spliced into the system message")
    g.add_argument("--compact-at", type=int, default=40_000, help="history tokens that trigger compaction")
    g.add_argument("--session-gap", type=float, default=600.0, help="mean seconds between session starts")
    g.add_argument("--think-time", type=float, default=60.0, help="mean user think time between turns (s)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scale", type=_scale, default=1.0, metavar="F",
                   help="multiply every span's tokens by F (0.1: 1.2-1.6k-token system prompts, for a small model)")
    g.set_defaults(func=cmd_generate)
    g = gen.add_parser("ds4-issue-444", help="the DS4 #444 scenario: full store, tail rewritten each turn")
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--stale-sessions", type=int, default=150)
    g.add_argument("--turns", type=int, default=8)
    g.add_argument("--seed", type=int, default=444)
    g.add_argument("--scale", type=_scale, default=1.0, metavar="F", help="multiply every span's tokens by F")
    g.set_defaults(func=cmd_generate)
    g = gen.add_parser("conversation", help="multi-turn chat conversations in the Mooncake/FAST'25 format",
                       description="Writes Mooncake JSONL (timestamp, input_length, output_length, hash_ids "
                                   "of 512-token blocks), shaped like the public conversation trace; "
                                   "convert it with 'kvsim import mooncake'.")
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--conversations", type=int, default=400)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_generate)

    p = sub.add_parser("import", help="convert a public trace to trace format v1")
    imp = p.add_subparsers(dest="format", required=True)
    m = imp.add_parser("mooncake", help="Mooncake/FAST'25 JSONL: timestamp, input_length, output_length, hash_ids")
    m.add_argument("file")
    m.add_argument("--block-size", type=int, default=512, help="tokens per hash id (default 512)")
    m.add_argument("-o", "--output", required=True)
    m.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="export a trace for another simulator")
    exp = p.add_subparsers(dest="format", required=True)
    e = exp.add_parser("libcachesim", help="CSV time,key,size: one object request per checkpoint lookup")
    _add_replay_options(e, json_output=False)
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(func=cmd_export)

    from .engine_cli import add_engine_commands
    add_engine_commands(sub)

    p = sub.add_parser("profiles", help="list cost profiles")
    p.add_argument("--file", help="also list the profiles of this TOML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("policies", help="list eviction policies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policies)

    p = sub.add_parser("scenarios", help="replay the eight scenarios of the OpenClaw turn report")
    p.add_argument("--profile", default="qwen7b-laptop")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scenarios)
    return parser


def _attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--capacity -5%`` would read as a missing value: pass it as
    ``--capacity=-5%`` so that the value itself gets a clear error."""
    out: list[str | None] = list(argv)
    for i, arg in enumerate(out[:-1]):
        nxt = out[i + 1]
        if arg in ("--capacity", "--capacities", "--jobs") and nxt and nxt[:1] == "-" and nxt[1:2].isdigit():
            out[i], out[i + 1] = f"{arg}={nxt}", None
    return [a for a in out if a is not None]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_attach_negative_values(argv))
    args.argv = argv  # for reports: the command line as typed
    try:
        with terminate_as_interrupt():  # (SIGTERM cleans up as Ctrl-C does)
            return args.func(args)
    except (TraceError, ValueError, OSError) as exc:
        print(f"kvsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # (Ctrl-C or SIGTERM: one line, and where the work done so far is)
        kept, terminated = getattr(args, "results", None), isinstance(exc, Terminated)
        print(f"kvsim: {'terminated' if terminated else 'interrupted'}" + (
            f"; the runs finished so far are in {kept}: the same command goes on from there" if kept else ""),
            file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
