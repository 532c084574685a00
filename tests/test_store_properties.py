"""Hypothesis state machine: a CheckpointStore against a small reference model.

After every step: the longest-prefix answer equals the model's among entries
still stored, loaded bytes equal written bytes, the capacity holds, and the
index agrees with the eviction manager's mirror, and pinned checkpoints
are never evicted. ``reopen`` closes and reopens
the store; evictions are read back from the store (the model does not guess
the policy), but anything the model says is gone must really be gone.
"""

import shutil
import tempfile

import numpy as np
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvstore import CheckpointStore
from kvstore.errors import PinQuotaError
from kvstore.keys import Namespace, PrefixKeys

B = 4
INDEX_BYTES = 1 << 20
CAPACITY = INDEX_BYTES + (256 << 10)  # a 256 KiB payload budget: eviction all the time
NS = "prop-model"

# prompts drawn from a small tree of shared prefixes, so that matches are common
prompt_strategy = st.lists(st.integers(0, 3), min_size=1, max_size=7).map(
    lambda path: [t for i, choice in enumerate(path) for t in [choice, i, choice * 7, 1]]
)
payload_strategy = st.one_of(
    st.binary(max_size=3000),
    st.integers(20_000, 100_000).map(lambda n: bytes(range(256)) * (n // 256)),
    st.tuples(st.sampled_from(["<f2", "<f4", "|i1", "<u4"]), st.integers(0, 5000)).map(
        lambda t: np.arange(t[1], dtype=t[0])),
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.policy = "lru"
        self.store = self._open()
        self.written: dict[str, tuple[list[int], object]] = {}  # key -> (tokens, payload)
        self.pinned: set[str] = set()

    def _open(self):
        return CheckpointStore(self.dir, capacity_bytes=CAPACITY, block_tokens=B, namespace=NS,
                               policy=self.policy, index_bytes=INDEX_BYTES)

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _keys(self, tokens):
        return PrefixKeys(Namespace(NS), tokens, B)

    @rule(tokens=prompt_strategy, payload=payload_strategy, tail=st.booleans())
    def put(self, tokens, payload, tail):
        if not tail:
            tokens = tokens[: len(tokens) // B * B]
            if not tokens:
                return
        key = self._keys(tokens).key(len(tokens))
        stored = self.store.put(tokens, payload, tail=tail)
        if stored:
            self.written[key] = (tokens, payload)
        else:
            assert key in self.written and self.store.lookup(tokens).tokens == len(tokens)

    @rule(tokens=prompt_strategy)
    def lookup_matches_the_model(self, tokens):
        pk = self._keys(tokens)
        alive = self._alive()
        expected = max((n for n in range(1, len(tokens) + 1) if pk.key(n) in alive), default=0)
        match = self.store.lookup(tokens)
        assert (match.tokens if match else 0) == expected

    @rule(tokens=prompt_strategy)
    def load_longest_returns_written_bytes(self, tokens):
        n, payload = self.store.load_longest(tokens)
        if n:
            key = self._keys(tokens).key(n)
            assert len(self.written[key][0]) == n
            self._assert_same(payload, self.written[key][1])

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self._open()

    @precondition(lambda self: self.written)
    @rule(data=st.data())
    def pin(self, data):
        key = data.draw(st.sampled_from(sorted(self.written)))
        if key not in self._alive():
            return
        try:
            match = self.store.pin(self.written[key][0])
        except PinQuotaError:
            return
        assert match.key == key
        self.pinned.add(key)

    @precondition(lambda self: self.pinned)
    @rule(data=st.data())
    def unpin(self, data):
        key = data.draw(st.sampled_from(sorted(self.pinned)))
        self.store.unpin(self.written[key][0])
        self.pinned.discard(key)

    def _alive(self):
        return set(self.store._manager)

    @staticmethod
    def _assert_same(got, want):
        if isinstance(want, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        else:
            assert got == bytes(want)

    @invariant()
    def consistent_and_within_capacity(self):
        self.store._check()
        assert self.store.stats()["bytes"] <= CAPACITY
        assert self._alive() <= set(self.written)
        assert self.pinned <= self._alive(), "a pinned checkpoint was evicted"
        event("evicted" if self.store.stats()["evictions"] else "no eviction yet")
        event("pins held" if self.pinned else "no pins")


TestStoreMachine = StoreMachine.TestCase
