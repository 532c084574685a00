"""Prefix keys: SHA1 of (namespace salt + little-endian uint32 tokens).

A checkpoint covering tokens ``[0, n)`` is named by ``key(n)``. Aligned keys sit
at every multiple of ``block_tokens``; a *tail* key may sit at any length and is
found through its aligned anchor ``floor(n / block_tokens) * block_tokens``.
Keys are computed incrementally: one running SHA1 over the prompt, a digest
and one ``copy()`` of the state per block, so every key of a 131,072-token
prompt costs about as much as hashing its 512 KiB once.

>>> ns = Namespace("demo-model")
>>> pk = PrefixKeys(ns, list(range(10)), block_tokens=4)
>>> pk.aligned_lengths
[4, 8]
>>> pk.key(8) == PrefixKeys(ns, list(range(8)) + [99], block_tokens=4).key(8)
True
>>> pk.key(8) == PrefixKeys(Namespace("other"), list(range(10)), 4).key(8)
False
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

__all__ = ["AlignedChain", "Namespace", "PrefixKeys", "TokensLike", "as_token_array", "check_block_tokens"]

TokensLike = Union[Sequence[int], "array.array[int]", np.ndarray]

_TOKEN_DTYPE = np.dtype("<u4")
_MAX_TOKEN = 2**32 - 1


def check_block_tokens(block_tokens: object) -> int:
    """Validate ``block_tokens`` and return it as an ``int``.

    >>> check_block_tokens(4096)
    4096
    """
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, (int, np.integer)):
        raise TypeError(f"block_tokens must be an int, not {type(block_tokens).__name__}")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    return int(block_tokens)


def as_token_array(tokens: Any, *, argument: str = "tokens") -> np.ndarray:
    """Return ``tokens`` as a contiguous little-endian ``uint32`` array.

    Accepts lists, tuples, ``array.array`` and numpy integer arrays. Copies only
    when the input is not already ``<u4`` and contiguous.

    Raises ``TypeError`` for non-integer tokens and ``ValueError`` for tokens
    outside ``[0, 2**32)`` or arrays that are not one-dimensional.

    >>> as_token_array([1, 2, 3]).dtype.str
    '<u4'
    >>> as_token_array([1.5])
    Traceback (most recent call last):
    TypeError: tokens must be integers, got float64
    """
    if isinstance(tokens, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"{argument} must be a sequence of ints, not {type(tokens).__name__}")
    if isinstance(tokens, np.ndarray):
        arr = tokens
    elif isinstance(tokens, array.array):
        if tokens.typecode not in "bBhHiIlLqQ":
            raise TypeError(f"{argument} must be integers, got array of typecode {tokens.typecode!r}")
        arr = np.frombuffer(tokens, dtype=tokens.typecode) if len(tokens) else np.empty(0, _TOKEN_DTYPE)
    elif isinstance(tokens, (list, tuple, range)):
        if len(tokens) == 0:
            return np.empty(0, _TOKEN_DTYPE)
        try:
            arr = np.asarray(tokens)
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{argument} must be ints in [0, 2**32): {exc}") from None
    else:
        raise TypeError(
            f"{argument} must be a list, tuple, array.array or numpy integer array, "
            f"not {type(tokens).__name__}"
        )
    if arr.ndim != 1:
        raise ValueError(f"{argument} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "O":
            bad = next((t for t in arr.tolist() if not isinstance(t, int) or isinstance(t, bool)), None)
            if bad is None:  # Python ints too large for int64
                raise ValueError(f"{argument} must be ints in [0, 2**32)")
            raise TypeError(f"{argument} must be integers, got {type(bad).__name__}")
        raise TypeError(f"{argument} must be integers, got {arr.dtype}")
    if arr.size and arr.dtype != _TOKEN_DTYPE:
        if arr.dtype.kind == "i" and int(arr.min()) < 0:
            raise ValueError(f"{argument} must be ints in [0, 2**32), found {int(arr.min())}")
        if arr.dtype.itemsize > 4 and int(arr.max()) > _MAX_TOKEN:
            raise ValueError(f"{argument} must be ints in [0, 2**32), found {int(arr.max())}")
    return np.ascontiguousarray(arr, dtype=_TOKEN_DTYPE)


class Namespace:
    """What keys are salted with: model, weights, KV dtype, engine layout.

    The same tokens under two namespaces never share a key.

    >>> Namespace("qwen2.5-7b-q8_0").digest8.hex() == Namespace("qwen2.5-7b-q8_0").digest8.hex()
    True
    """

    __slots__ = ("name", "salt", "digest8")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"namespace must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("namespace must be a non-empty string")
        try:
            encoded = name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"namespace must be valid UTF-8 text, got {name!r} ({exc.reason})") from None
        self.name = name
        self.salt = b"kvstore/v1\x00" + len(encoded).to_bytes(4, "little") + encoded
        self.digest8 = hashlib.sha1(self.salt).digest()[:8]

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


class AlignedChain:
    """The aligned prefixes of one prompt, as an eviction manager walks them:
    anchors, parents and ancestors. Subclasses hold ``_keys`` (the key of the
    prefix ``i * block_tokens`` at index ``i``, from the root ``key(0)``) and
    ``block_tokens``, and answer :meth:`longest_tail`; the keys may be hex
    strings or any other hashable ids.

    Runtime complexity: O(1), O(blocks) for :meth:`ancestor_keys`.
    """

    __slots__ = ()
    _keys: list
    block_tokens: int

    @property
    def aligned_lengths(self) -> list[int]:
        """Token counts of the aligned checkpoints, shortest first."""
        return [i * self.block_tokens for i in range(1, len(self._keys))]

    def anchor(self, n_tokens: int) -> int:
        """Aligned length a checkpoint of ``n_tokens`` hangs from (may be 0)."""
        return (n_tokens // self.block_tokens) * self.block_tokens

    def parent_key(self, n_tokens: int) -> Any:
        """Key of the nearest shorter aligned prefix, or ``None`` at the root.

        For an aligned checkpoint that is ``key(n - block_tokens)``; for a tail
        it is its anchor.
        """
        if n_tokens <= 0:
            return None
        anchor = self.anchor(n_tokens)
        if anchor == n_tokens:
            anchor -= self.block_tokens
        return self._keys[anchor // self.block_tokens] if anchor > 0 else None

    def ancestor_keys(self, n_tokens: int) -> tuple:
        """Keys of every aligned prefix shorter than ``n_tokens``, shortest first."""
        top = self.anchor(n_tokens)
        if top == n_tokens:
            top -= self.block_tokens
        return tuple(self._keys[1 : top // self.block_tokens + 1]) if top > 0 else ()

    def longest_held(self, tails_at: Callable[[Any], dict | None], held: Callable[[Any], bool]
                     ) -> tuple[int, Any] | None:
        """``(tokens, key)`` of the longest prefix a holder has: walking the aligned
        keys from the deepest down, at each the longest tail anchored there
        (``tails_at(key)``: ``{tail key: tokens}`` or ``None``) that this prompt
        extends, then the aligned key itself if ``held``. Every tier and model
        answers a lookup with this one walk.

        Runtime complexity: O(blocks), plus :meth:`longest_tail` at each anchor
        that holds tails.
        """
        total = len(self)
        for n in range(self.anchor(total), -1, -self.block_tokens):
            key = self._keys[n // self.block_tokens]
            tails = tails_at(key)
            if tails:
                found = self.longest_tail(n, tails)
                if found is not None:
                    return found
            if n and held(key):
                return n, key
        return None

    def longest_tail(self, anchor: int, tails: dict) -> tuple[int, Any] | None:
        """``(tokens, key)`` of the longest of ``tails`` (``{tail key: tokens}``,
        all anchored at the aligned length ``anchor``) that is a prefix of this
        prompt, or ``None``: each subclass answers from the keys it holds."""
        raise NotImplementedError


class PrefixKeys(AlignedChain):
    """Every aligned key of one prompt, plus tail keys on demand.

    ``key(0)`` is the *root* key (the salt alone): the anchor of tails shorter
    than one block. Runtime complexity: O(len(tokens)) to build, O(1) per
    aligned key, O(block_tokens) per tail key.
    """

    __slots__ = ("namespace", "tokens", "block_tokens", "_keys", "_states")

    def __init__(self, namespace: Namespace, tokens: TokensLike, block_tokens: int) -> None:
        self.namespace = namespace
        self.block_tokens = check_block_tokens(block_tokens)
        self.tokens = as_token_array(tokens)
        raw = memoryview(self.tokens).cast("B")
        step = self.block_tokens * 4
        h = hashlib.sha1(namespace.salt)
        keys = [h.hexdigest()]
        states = [h.copy()]
        for offset in range(0, (len(self.tokens) // self.block_tokens) * step, step):
            h.update(raw[offset : offset + step])
            keys.append(h.hexdigest())
            states.append(h.copy())
        self._keys = keys
        self._states = states

    @classmethod
    def extending(cls, base: "PrefixKeys", tokens: TokensLike) -> "PrefixKeys":
        """The keys of ``tokens``, resuming ``base``'s running SHA1 over the
        aligned blocks the two prompts share (a session's next prompt repeats
        its history): only the blocks past the shared ones are hashed. The keys
        are exactly those of ``PrefixKeys(base.namespace, tokens, base.block_tokens)``.

        >>> ns = Namespace("m")
        >>> first = PrefixKeys(ns, list(range(10)), block_tokens=4)
        >>> PrefixKeys.extending(first, list(range(13)))._keys == PrefixKeys(ns, list(range(13)), 4)._keys
        True

        Runtime complexity: O(shared tokens) to compare, O(new tokens) to hash.
        """
        self = cls.__new__(cls)
        self.namespace = base.namespace
        self.block_tokens = block = base.block_tokens
        self.tokens = as_token_array(tokens)
        limit = min(len(self.tokens), len(base.tokens)) // block * block
        mismatch = np.flatnonzero(self.tokens[:limit] != base.tokens[:limit])
        shared = (int(mismatch[0]) if len(mismatch) else limit) // block  # whole blocks in common
        keys, states = base._keys[: shared + 1], base._states[: shared + 1]
        h = states[-1].copy()
        raw = memoryview(self.tokens).cast("B")
        step = block * 4
        for offset in range(shared * step, (len(self.tokens) // block) * step, step):
            h.update(raw[offset : offset + step])
            keys.append(h.hexdigest())
            states.append(h.copy())
        self._keys = keys
        self._states = states
        return self

    def __len__(self) -> int:
        return len(self.tokens)

    def key(self, n_tokens: int) -> str:
        """Key of the prefix ``tokens[:n_tokens]`` (hex SHA1)."""
        if not 0 <= n_tokens <= len(self.tokens):
            raise ValueError(f"n_tokens must be in [0, {len(self.tokens)}], got {n_tokens}")
        index, rest = divmod(n_tokens, self.block_tokens)
        if rest == 0:
            return self._keys[index]
        h = self._states[index].copy()
        start = index * self.block_tokens
        h.update(memoryview(self.tokens[start:n_tokens]).cast("B"))
        return h.hexdigest()

    def longest_tail(self, anchor: int, tails: dict) -> tuple[int, Any] | None:
        """``(tokens, key)`` of the longest of ``tails`` (``{tail key: tokens}``,
        all anchored at the aligned length ``anchor``) that is a prefix of this
        prompt, or ``None``.

        >>> pk = PrefixKeys(Namespace("m"), list(range(10)), block_tokens=4)
        >>> other = PrefixKeys(Namespace("m"), [0, 1, 2, 3, 4, 5, 9, 9], block_tokens=4)
        >>> pk.longest_tail(4, {pk.key(6): 6, other.key(7): 7, pk.key(5): 5})[0]
        6

        Runtime complexity: O(t log t) for ``t`` tails, plus computing this
        prompt's keys at their lengths (:meth:`keys_at`).
        """
        total = len(self)
        candidates = sorted(((tokens, tail_key) for tail_key, tokens in tails.items()
                             if anchor < tokens <= total), key=lambda tk: -tk[0])
        if not candidates:
            return None
        for (tokens, tail_key), mine in zip(candidates, self.keys_at([tokens for tokens, _ in candidates])):
            if mine == tail_key:
                return tokens, tail_key
        return None

    def keys_at(self, lengths: Sequence[int]) -> list[str]:
        """Keys of several prefixes, hashing each block's tokens once however
        many lengths fall in it.

        >>> pk = PrefixKeys(Namespace("m"), list(range(10)), block_tokens=4)
        >>> pk.keys_at([9, 6, 8]) == [pk.key(9), pk.key(6), pk.key(8)]
        True

        Runtime complexity: O(blocks touched · block_tokens + len(lengths)).
        """
        out: dict[int, str] = {}
        index = -1
        h = None
        done = 0
        for n in sorted(set(lengths)):
            if not 0 <= n <= len(self.tokens):
                raise ValueError(f"n_tokens must be in [0, {len(self.tokens)}], got {n}")
            block, rest = divmod(n, self.block_tokens)
            if rest == 0:
                out[n] = self._keys[block]
                continue
            if block != index:  # start again from the state at this block's start
                index, h, done = block, self._states[block].copy(), block * self.block_tokens
            h.update(memoryview(self.tokens[done:n]).cast("B"))
            done = n
            out[n] = h.hexdigest()
        return [out[n] for n in lengths]
