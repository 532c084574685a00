"""A real engine next to the simulator: replay a trace on llama.cpp, and
calibrate a cost profile on it.

:func:`engine_replay` drives a ``llama_cpp.Llama`` through a trace's prompts in
order, through :class:`kvstore.adapters.llama_cpp.CachedLlama` and a real
:class:`kvstore.CheckpointStore` whose clock is the trace's time, and measures
what :func:`simulator.replay.replay` predicts: seconds spent prefilling, TTFT,
tokens reloaded per request. Prompts are the trace's spans made real tokens
of the model's vocabulary (:func:`engine_tokens`): two prompts share exactly
the tokens the trace says they share, so the store sees the same prefixes the
simulator does.

:func:`calibrate_llama` measures, on this machine, what a
:class:`simulator.costmodel.Profile` needs — prefill speed and its fall with
context, bytes of a checkpoint, load time, decode speed — and
:func:`profile_toml` writes it as a ``[profiles.NAME]`` table for
``--profiles-file``, with the measured points in comments.

Both need ``pip install 'kvstore[llama]'`` and a GGUF model.
"""

from __future__ import annotations

import datetime
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kvstore.accounting import file_bytes, payload_file_bytes
from kvstore.adapters.llama_cpp import CachedLlama, kv_state, open_store
from kvstore.pagecache import drop_page_cache

from .blend import BlendTracker, reusable_tokens
from .costmodel import Profile
from .replay import Metrics, RequestResult
from .tokens import TokenMaterializer
from .trace import Request

__all__ = ["engine_tokens", "engine_replay", "EngineRun", "calibrate_llama", "Calibration", "profile_toml",
           "measure_state_bytes", "FIRST_TOKEN_ID"]

#: token ids below this are left out of prompts (special and control tokens sit there)
FIRST_TOKEN_ID = 256


def engine_tokens(spans: Sequence[tuple[str, int]], n_vocab: int, materializer: TokenMaterializer) -> list[int]:
    """The prompt of ``spans`` as token ids in ``[FIRST_TOKEN_ID, n_vocab)``.

    >>> m = TokenMaterializer()
    >>> a = engine_tokens((("sys", 6), ("u1", 2)), 1000, m)
    >>> b = engine_tokens((("sys", 6), ("u2", 2)), 1000, m)
    >>> a[:6] == b[:6], len(a), min(a) >= FIRST_TOKEN_ID
    (True, 8, True)
    """
    if n_vocab <= FIRST_TOKEN_ID:
        raise ValueError(f"n_vocab must be > {FIRST_TOKEN_ID}, got {n_vocab}")
    raw = materializer.tokens(tuple(spans))
    return (raw % np.uint32(n_vocab - FIRST_TOKEN_ID) + np.uint32(FIRST_TOKEN_ID)).tolist()


@dataclass
class EngineRun:
    """What :func:`engine_replay` measured: the metrics ``kvsim simulate``
    reports, and per request (warm-up ones too) the tokens the store matched."""

    metrics: Metrics
    matched: list[int] = field(default_factory=list)
    store_stats: dict = field(default_factory=dict)


def engine_replay(requests: Iterable[Request], *, llama, store_dir: str, capacity_bytes: int, policy: str,
                  block_tokens: int, index_bytes: int | None = None,
                  on_request: Callable[[RequestResult], None] | None = None,
                  progress: Callable[[int], None] | None = None) -> EngineRun:
    """Run every request of ``requests`` on ``llama`` with a fresh store in
    ``store_dir`` (created; must be empty) and return what was measured.

    Per request: the store's clock is set to the request's time, then
    ``CachedLlama.prefill`` reloads the longest stored prefix, evaluates the
    rest and saves a checkpoint at every block boundary past what it loaded
    and at the end of the prompt (durably, as the simulator assumes). Measured
    re-prefill seconds are the model's evaluation time; TTFT adds the load.
    Requests tagged warm-up fill the store but stay out of the metrics.
    """
    if os.path.exists(store_dir) and os.listdir(store_dir):
        raise ValueError(f"store_dir {store_dir} is not empty: the replay needs a fresh store")
    now = [0.0]
    materializer = TokenMaterializer()
    blend = BlendTracker()
    metrics = Metrics()
    run = EngineRun(metrics)
    n_ctx, n_vocab = llama.n_ctx(), llama.n_vocab()
    with open_store(llama, store_dir, capacity_bytes=capacity_bytes, block_tokens=block_tokens, policy=policy,
                    index_bytes=index_bytes, clock=lambda: now[0]) as store:
        cached = CachedLlama(llama, store, durable=True)
        for done, request in enumerate(requests, 1):
            if request.prompt_tokens > n_ctx:
                raise ValueError(f"request {done - 1} (session {request.session!r}) has {request.prompt_tokens} "
                                 f"tokens, more than the model's context n_ctx={n_ctx}: raise --n-ctx or "
                                 f"scale the trace down (kvsim generate ... --scale)")
            now[0] = request.t
            tokens = engine_tokens(request.prompt, n_vocab, materializer)
            result = cached.prefill(tokens)
            total = len(tokens)
            matched = result.matched_tokens
            run.matched.append(matched)
            candidates = blend.candidates(request.prompt)
            if not request.tags.get("warmup"):
                ttft = result.load_seconds + result.eval_seconds
                metrics.add(prompt=total, loaded=matched, prefill_seconds=result.eval_seconds, ttft=ttft,
                            written=result.saved_bytes, blend_tokens=reusable_tokens(candidates, matched))
                if on_request is not None:
                    on_request(RequestResult(request.session, request.t, total, matched, total - matched, ttft,
                                             "disk" if matched else None))
            if progress is not None:
                progress(done)
        run.store_stats = store.stats()
    metrics.evictions = run.store_stats.get("evictions", 0)
    metrics.finish()
    return run


# ------------------------------------------------------------- calibration
def state_file_bytes(llama) -> int:
    """Bytes ``llama``'s current state adds to its checkpoint file, as the store
    counts them: the data and the record of its numpy dtype and shape. A
    profile's ``checkpoint_bytes`` must be this, so that the simulator sizes
    files exactly as the store does."""
    return (payload_file_bytes(kv_state(llama), tokens=0, block_tokens=1)
            - file_bytes(payload_len=0, tokens=0, block_tokens=1))


def _linear_bytes(points: Sequence[tuple[int, int]]) -> tuple[int | float, int | float]:
    """``(bytes per token, fixed bytes)`` through the first and last ``(tokens, bytes)`` point
    (ints when exact, as they are for llama.cpp states)."""
    (n0, b0), (n1, b1) = points[0], points[-1]
    per_token = (b1 - b0) / (n1 - n0)
    fixed = b0 - n0 * per_token
    if float(per_token).is_integer() and float(fixed).is_integer():
        return int(per_token), int(fixed)
    return per_token, fixed


def measure_state_bytes(llama) -> tuple[int | float, int | float]:
    """``(bytes per token, fixed bytes)`` of ``llama``'s checkpoints, from two
    short prompts (exact: the state grows linearly)."""
    sizes = []
    prompt = list(range(FIRST_TOKEN_ID, FIRST_TOKEN_ID + 32))
    for n in (16, 32):
        llama.reset()
        llama._ctx.kv_cache_clear()
        llama.eval(prompt[:n])
        sizes.append((n, state_file_bytes(llama)))
    llama.reset()
    llama._ctx.kv_cache_clear()
    return _linear_bytes(sizes)


@dataclass
class Calibration:
    """A profile fitted on this machine, with the points it was fitted to."""

    profile: Profile
    #: (start, end, measured seconds) of each prefill from ``start`` to ``end`` context
    prefill: list[tuple[int, int, float]]
    #: (tokens, bytes the state adds to its file: data, dtype and shape) of each state measured
    state: list[tuple[int, int]]
    #: (file bytes, measured seconds) of each load + restore, page cache dropped
    load: list[tuple[int, float]]
    decode: tuple[int, float]  #: (tokens, seconds) decoded one at a time
    model: str = ""
    threads: int = 0
    n_ctx: int = 0

    def prefill_errors(self) -> list[float]:
        """Relative error of the fitted prefill time at each measured point."""
        return [self.profile.prefill_seconds(a, b) / s - 1 for a, b, s in self.prefill]

    @property
    def fit_error(self) -> float:
        """Largest relative error of the prefill fit over the measured points."""
        return max(abs(e) for e in self.prefill_errors())


def _fit_prefill(points: Sequence[tuple[int, int, float]]) -> tuple[float, float]:
    """``prefill_tps, context_halving`` minimising the relative error of
    ``((b - a) + (b² - a²) / 2h) / tps`` over ``points``."""
    rows = np.array([[b - a, b * b - a * a] for a, b, _ in points], dtype=float)
    seconds = np.array([s for _, _, s in points], dtype=float)
    weighted = rows / seconds[:, None]
    (per_token, per_square), *_ = np.linalg.lstsq(weighted, np.ones(len(points)), rcond=None)
    if per_square <= 0 or per_token <= 0:
        # no measurable slowdown with context, or timings too noisy to tell the two
        # terms apart (the quadratic one took all the time): tokens alone, then
        per_token = float(np.sum(rows[:, 0] * seconds) / np.sum(rows[:, 0] ** 2))
        return 1.0 / per_token, 1e12
    return 1.0 / per_token, per_token / (2 * per_square)


def calibrate_llama(model_path: str, *, n_ctx: int = 4096, threads: int = 2, name: str = "llama",
                    lengths: Sequence[int] | None = None, block_tokens: int = 512,
                    workdir: str | None = None, progress: Callable[[str, float], None] | None = None,
                    repeats: int = 1) -> Calibration:
    """Measure ``model_path`` on this machine and fit a :class:`Profile`.

    ``lengths`` (default: 1/8, 1/4, 1/2 and 3/4 of ``n_ctx``) are the prompt
    lengths prefilled cold and, from half their length, warm (each timing the
    fastest of ``repeats`` runs: on a busy machine, other work only adds
    time); checkpoint states
    are taken at each; two of them are saved to a store in ``workdir`` (a
    temp dir by default) and loaded back with the page cache dropped.
    ``progress(step, fraction_done)`` reports each step.
    """
    from llama_cpp import Llama

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    lengths = sorted(set(lengths or [n_ctx // 8, n_ctx // 4, n_ctx // 2, 3 * n_ctx // 4]))
    if len(lengths) < 2 or lengths[0] < 2 or lengths[-1] > n_ctx:
        raise ValueError(f"lengths must be at least two values in [2, n_ctx={n_ctx}], got {list(lengths)}")
    steps = 2 * len(lengths) + 3
    done = [0]

    def step(label: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(label, done[0] / steps)

    llama = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=0,
                  verbose=False)
    materializer = TokenMaterializer()
    prompt = engine_tokens((("calibrate", n_ctx),), llama.n_vocab(), materializer)

    def fresh() -> None:
        llama.reset()
        llama._ctx.kv_cache_clear()

    def fastest(start: int, timed: Callable[[], None]) -> float:
        """Seconds ``timed()`` takes with ``prompt[:start]`` evaluated first: the
        fastest of ``repeats`` runs (another process on the machine only ever
        adds time)."""
        best = math.inf
        for _ in range(repeats):
            fresh()
            if start:
                llama.eval(prompt[:start])
            began = time.perf_counter()
            timed()
            best = min(best, time.perf_counter() - began)
        return best

    def timed_eval(start: int, end: int) -> float:
        """Seconds to prefill ``prompt[start:end]`` after ``prompt[:start]``."""
        return fastest(start, lambda: llama.eval(prompt[start:end]))

    timed_eval(0, min(64, lengths[0]))  # warm-up: first-call allocations are not prefill
    prefill, state = [], []
    for n in lengths:
        prefill.append((0, n, timed_eval(0, n)))
        state.append((n, state_file_bytes(llama)))
        step(f"cold prefill of {n} tokens")
        prefill.append((n // 2, n, timed_eval(n // 2, n)))
        step(f"prefill from {n // 2} to {n} tokens")
    per_token_bytes, fixed = _linear_bytes(state)

    root = tempfile.mkdtemp(prefix="kvsim-calibrate-", dir=workdir)
    load = []
    try:
        for n in (lengths[0], lengths[-1]):
            path = os.path.join(root, f"store{n}")
            with open_store(llama, path, capacity_bytes=64 * state[-1][1] + (64 << 20),
                            block_tokens=block_tokens) as store:
                cached = CachedLlama(llama, store)
                cached.prefill(prompt[:n])  # writes the checkpoints
                drop_page_cache(path)
                result = cached.prefill(prompt[:n])  # reloads the whole prompt from the device
                size = file_bytes(payload_len=state_file_bytes(llama), tokens=n, block_tokens=block_tokens)
                load.append((size, result.load_seconds))
            shutil.rmtree(path, ignore_errors=True)
            step(f"load of {n} tokens with the page cache dropped")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (small, t_small), (large, t_large) = load
    per_byte = max((t_large - t_small) / max(large - small, 1), 1e-12)
    latency = max(0.0, t_small - small * per_byte)

    decoded = 32

    def decode_tokens() -> None:
        for token in prompt[256:256 + decoded]:
            llama.eval([token])

    decode = (decoded, fastest(256, decode_tokens))
    step("decode")

    tps, halving = _fit_prefill(prefill)
    profile = Profile(name=name, description=f"{os.path.basename(model_path)} on this machine, {threads} threads, "
                                             f"n_ctx {n_ctx} (kvsim calibrate llama)",
                      prefill_tps=float(tps), context_halving=float(halving), decode_tps=decoded / decode[1],
                      disk_read_bps=1.0 / per_byte, kv_bytes_per_token=per_token_bytes, fixed_bytes=fixed,
                      load_latency_s=latency)
    return Calibration(profile, prefill, state, load, decode, model=model_path, threads=threads, n_ctx=n_ctx)


def profile_toml(calibration: Calibration) -> str:
    """The calibration as a ``[profiles.NAME]`` TOML table, measured points in comments."""
    p = calibration.profile
    lines = [f"# kvsim calibrate llama, {datetime.date.today().isoformat()}: {os.path.basename(calibration.model)}, "
             f"{calibration.threads} threads, n_ctx {calibration.n_ctx}",
             "# prefill points: start -> end tokens, measured s, fitted s, error"]
    for (a, b, s), e in zip(calibration.prefill, calibration.prefill_errors()):
        lines.append(f"#   {a:>6} -> {b:<6} {s:9.3f} {p.prefill_seconds(a, b):9.3f} {e:+7.1%}")
    lines.append(f"# prefill fit error (largest): {calibration.fit_error:.1%}")
    lines.append("# checkpoint state: " + ", ".join(f"{n} tokens = {b:,} bytes" for n, b in calibration.state))
    lines.append("# load + restore, page cache dropped: " +
                 ", ".join(f"{b / 2**20:.1f} MiB in {s * 1e3:.1f} ms" for b, s in calibration.load))
    lines.append(f"# decode: {calibration.decode[0]} tokens in {calibration.decode[1]:.3f} s")
    lines.append(f"[profiles.{_toml_key(p.name)}]")
    lines.append(f"description = {_toml_string(p.description)}")
    for key in ("prefill_tps", "context_halving", "decode_tps", "disk_read_bps", "kv_bytes_per_token",
                "fixed_bytes", "load_latency_s"):
        value = getattr(p, key)
        lines.append(f"{key} = {value!r}" if isinstance(value, int) else f"{key} = {float(value)!r}")
    return "\n".join(lines) + "\n"


def _toml_key(name: str) -> str:
    if name and all(c.isalnum() or c in "-_" for c in name):
        return name
    return _toml_string(name)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

