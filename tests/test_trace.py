import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.trace import Request, TraceError, read_trace, write_trace


def read(text):
    return list(read_trace(io.StringIO(text)))


GOOD = '{"session": "s", "t": 1, "prompt": [["sys", 10]], "output": 3}'


@pytest.mark.parametrize("line, field, words", [
    ('{"session": "", "t": 0, "prompt": [["a", 1]]}', "session", "non-empty"),
    ('{"session": "s", "t": -1, "prompt": [["a", 1]]}', "t", ">= 0"),
    ('{"session": "s", "t": "now", "prompt": [["a", 1]]}', "t", "finite number"),
    ('{"session": "s", "t": 0, "prompt": []}', "prompt", "non-empty list"),
    ('{"session": "s", "t": 0, "prompt": [["a", 0]]}', "prompt", "span 0"),
    ('{"session": "s", "t": 0, "prompt": [["a", 1], [5, 1]]}', "prompt", "span 1"),
    ('{"session": "s", "t": 0, "prompt": [["a", 1]], "output": -2}', "output", "int >= 0"),
    ('{"session": "s", "t": 0, "prompt": [["a", 1]], "tags": []}', "tags", "object"),
    ('{"session": "s", "t": 0, "prompt": [["a", 1]], "extra": 1}', "extra", "unknown field"),
    ('[1, 2]', None, "JSON object"),
    ('{"session": "s", "t": 0, ', None, "not valid JSON"),
])
def test_reader_names_the_line_and_field_of_an_error(line, field, words):
    with pytest.raises(TraceError) as info:
        read(GOOD + "\n\n" + line + "\n")
    assert info.value.line == 3 and info.value.field == field
    assert str(info.value).startswith("line 3") and words in str(info.value)


def test_times_must_not_decrease():
    with pytest.raises(TraceError, match="line 2, field 't': arrival times must not decrease"):
        read(GOOD.replace('"t": 1', '"t": 5') + "\n" + GOOD + "\n")


def test_unsupported_version_is_refused():
    with pytest.raises(TraceError, match="unsupported version 2"):
        read('{"format": "kvsim-trace", "version": 2}\n' + GOOD)


requests = st.lists(st.builds(
    Request,
    session=st.text(min_size=1, max_size=5),
    t=st.floats(0, 1e6),
    prompt=st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(1, 10**6)), min_size=1, max_size=4).map(tuple),
    output=st.integers(0, 10**4),
    tags=st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
), max_size=6).map(lambda rs: sorted(rs, key=lambda r: r.t))


@given(requests)
def test_write_then_read_round_trips(reqs):
    buf = io.StringIO()
    assert write_trace(buf, reqs, generator="test") == len(reqs)
    back = read(buf.getvalue())
    assert [(r.session, r.t, r.prompt, r.output, r.tags) for r in back] == \
           [(r.session, r.t, r.prompt, r.output, r.tags) for r in reqs]


@given(st.text(max_size=300))
def test_fuzzed_lines_raise_only_trace_errors(text):
    try:
        read(text)
    except TraceError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["session", "t", "prompt", "output", "tags"]), c, max_size=5), max_leaves=12))
def test_fuzzed_json_documents_raise_only_trace_errors(doc):
    try:
        read(json.dumps(doc))
    except TraceError:
        pass
