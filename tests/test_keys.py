import array
import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.keys import Namespace, PrefixKeys, as_token_array

NS = Namespace("model-a")


def reference_key(namespace: Namespace, tokens, n):
    raw = np.asarray(tokens[:n], dtype="<u4").tobytes()
    return hashlib.sha1(namespace.salt + raw).hexdigest()


@given(st.lists(st.integers(0, 2**32 - 1), max_size=200), st.integers(1, 17))
def test_every_key_equals_sha1_of_salt_and_prefix(tokens, block):
    pk = PrefixKeys(NS, tokens, block)
    assert pk.aligned_lengths == list(range(block, len(tokens) + 1, block))
    for n in range(len(tokens) + 1):
        assert pk.key(n) == reference_key(NS, tokens, n)


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=60), st.integers(1, 8), st.data())
def test_parent_and_ancestors_are_the_shorter_aligned_prefixes(tokens, block, data):
    pk = PrefixKeys(NS, tokens, block)
    n = data.draw(st.integers(1, len(tokens)))
    below = [m for m in range(block, n, block)]
    assert pk.ancestor_keys(n) == tuple(reference_key(NS, tokens, m) for m in below)
    assert pk.parent_key(n) == (reference_key(NS, tokens, below[-1]) if below else None)


def test_namespace_salts_keys():
    tokens = list(range(64))
    assert PrefixKeys(NS, tokens, 16).key(32) != PrefixKeys(Namespace("model-b"), tokens, 16).key(32)
    # a namespace that is a prefix of another must not collide through concatenation
    assert Namespace("ab").salt + b"c" != Namespace("abc").salt


@pytest.mark.parametrize("tokens", [
    [1, 2, 3], (1, 2, 3), array.array("I", [1, 2, 3]), array.array("q", [1, 2, 3]),
    np.array([1, 2, 3], dtype=np.int64), np.array([1, 2, 3], dtype=np.uint16),
    np.array([1, 2, 3], dtype=">u4"), range(1, 4),
])
def test_accepted_token_containers_give_identical_keys(tokens):
    assert PrefixKeys(NS, tokens, 1).key(3) == reference_key(NS, [1, 2, 3], 3)
    assert as_token_array(tokens).dtype.str == "<u4"


@pytest.mark.parametrize("tokens, error, words", [
    ([1, -1], ValueError, "[0, 2**32)"),
    ([2**32], ValueError, "[0, 2**32)"),
    ([2**70], ValueError, "[0, 2**32)"),
    ([1.0, 2.0], TypeError, "integers"),
    (["a"], TypeError, "integers"),
    ("abc", TypeError, "sequence of ints"),
    (np.zeros((2, 2), dtype=np.int32), ValueError, "one-dimensional"),
    (np.array([0.5]), TypeError, "integers"),
    (np.array([-3], dtype=np.int8), ValueError, "[0, 2**32)"),
    (array.array("d", [1.0]), TypeError, "typecode"),
    ({1, 2}, TypeError, "numpy integer array"),
])
def test_bad_tokens_raise_errors_naming_the_argument(tokens, error, words):
    with pytest.raises(error) as info:
        as_token_array(tokens)
    assert "tokens" in str(info.value) and words in str(info.value)


def test_block_tokens_and_namespace_validation():
    with pytest.raises(ValueError, match="block_tokens"):
        PrefixKeys(NS, [1], 0)
    with pytest.raises(TypeError, match="block_tokens"):
        PrefixKeys(NS, [1], 2.0)
    with pytest.raises(ValueError, match="namespace"):
        Namespace("")
    with pytest.raises(TypeError, match="namespace"):
        Namespace(b"x")


def test_tail_key_of_a_long_prompt_hashes_only_the_last_block():
    tokens = np.arange(131_072, dtype=np.uint32)
    pk = PrefixKeys(NS, tokens, 4096)
    assert len(pk.aligned_lengths) == 32
    assert pk.key(130_000) == reference_key(NS, tokens, 130_000)


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40),
       st.integers(0, 40), st.integers(1, 6))
def test_extending_an_earlier_prompt_gives_exactly_the_fresh_keys(common, tail_a, cut, block):
    """Resuming the running SHA1 of a prompt that shares some leading tokens
    (all, none, or a part of a block) names every prefix as hashing afresh does."""
    ns = Namespace("m")
    first = PrefixKeys(ns, common + tail_a, block)
    second_tokens = common[:cut] + [9] + tail_a
    second = PrefixKeys.extending(first, second_tokens)
    fresh = PrefixKeys(ns, second_tokens, block)
    assert second._keys == fresh._keys
    assert [second.key(n) for n in range(len(second_tokens) + 1)] == [fresh.key(n) for n in range(len(second_tokens) + 1)]
    assert PrefixKeys.extending(first, common)._keys == PrefixKeys(ns, common, block)._keys
