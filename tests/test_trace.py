import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.trace import Request, TraceError, load_trace, read_trace, write_trace


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


def _sorted_reference(cfg):
    """Every session generated up front, then one stable sort by arrival."""
    import random

    from simulator.generators.openclaw import _session

    rng = random.Random(cfg.seed)
    sys_tokens = rng.randint(*cfg.system_tokens)
    splice_at = rng.randint(200, 800)
    system = (("system/head", splice_at), ("system/tools", sys_tokens - splice_at))
    requests, start = [], 0.0
    for index in range(cfg.sessions):
        requests.extend(_session(cfg, index, start, system, random.Random(rng.getrandbits(64))))
        start += rng.expovariate(1.0 / cfg.session_gap_s)
    return sorted(requests, key=lambda r: r.t)


@pytest.mark.parametrize("settings, ties", [
    (dict(sessions=40, seed=3), False),
    (dict(sessions=60, seed=8, session_gap_s=0.0001, client="append-only"), True),  # starts within rounding
    (dict(sessions=30, seed=4, session_gap_s=5000.0, turns=(0, 3), client="tail-carrier"), False),  # empty ones too
    (dict(sessions=25, seed=9, session_gap_s=0.001, tool_latency_s=(0.0, 0.0002)), True),  # ties inside sessions
])
def test_streamed_generation_is_the_stable_sort_of_every_session(settings, ties):
    from simulator.generators.openclaw import OpenClawConfig, iter_generate

    cfg = OpenClawConfig(**settings)
    streamed = list(iter_generate(cfg))
    assert streamed == _sorted_reference(cfg)
    assert (len({r.t for r in streamed}) < len(streamed)) == ties  # ties of arrival time are ordered too


def test_streamed_generation_holds_only_the_running_sessions():
    from simulator.generators import openclaw

    cfg = openclaw.OpenClawConfig(sessions=400, seed=2, session_gap_s=600.0)
    opened, real = [], openclaw._session

    def counting(cfg, index, *args):
        opened.append(index)
        return real(cfg, index, *args)

    stream = openclaw.iter_generate(cfg)
    try:
        openclaw._session = counting
        first = [next(stream) for _ in range(50)]
    finally:
        openclaw._session = real
    assert first == _sorted_reference(cfg)[:50]
    assert opened == list(range(len(opened))) and len(opened) < 40  # not all 400 sessions


def test_kvsim_generate_streams_into_a_partial_file_renamed_when_complete(tmp_path, monkeypatch):
    from simulator.cli import main
    from simulator.generators import openclaw

    path = tmp_path / "g.jsonl"
    assert main(["generate", "openclaw", "-o", str(path), "--sessions", "30", "--seed", "4"]) == 0
    assert load_trace(str(path)) == openclaw.generate(openclaw.OpenClawConfig(sessions=30, seed=4))

    real = openclaw.iter_generate

    def failing(cfg):  # the generator fails half-way: no output, no partial file left
        for count, request in enumerate(real(cfg)):
            if count == 20:
                raise RuntimeError("disk on fire")
            yield request

    monkeypatch.setattr(openclaw, "iter_generate", failing)
    out = tmp_path / "h.jsonl"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["generate", "openclaw", "-o", str(out), "--sessions", "30"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.jsonl"]
