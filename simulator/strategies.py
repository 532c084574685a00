"""Hypothesis strategies for the simulator's traces (``kvstore.testing`` has
the store-level ones: prompts and payloads).

>>> from hypothesis import given
>>> @given(traces(max_requests=3))
... def test(requests):
...     assert all(r.prompt for r in requests)
>>> test()
"""

from __future__ import annotations

from hypothesis import strategies as st

from .trace import Request

__all__ = ["traces"]


@st.composite
def traces(draw, max_requests: int = 20):
    """Traces in the simulator's format (a list of :class:`simulator.trace.Request`)."""
    contents = [f"c{i}" for i in range(6)]
    t = 0.0
    requests = []
    for _ in range(draw(st.integers(1, max_requests))):
        spans = draw(st.lists(st.tuples(st.sampled_from(contents), st.integers(1, 5000)), min_size=1, max_size=4))
        t += draw(st.floats(0, 600, allow_nan=False))
        requests.append(Request(draw(st.sampled_from(["a", "b", "c"])), t, tuple(spans),
                                draw(st.integers(0, 500))))
    return requests
