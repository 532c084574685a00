"""kvsim against libCacheSim: the export drives libCacheSim's own LRU to the
same decisions kvsim's LRU makes, request by request, on every shipped trace."""

from __future__ import annotations

import csv
import io
import os

import pytest

import libcachesim

from simulator.costmodel import PROFILES
from simulator.interop import export_libcachesim, replay_libcachesim
from simulator.keyed import KeyedTrace
from simulator.replay import ReplayConfig, replay
from simulator.trace import load_trace

TRACES = os.path.join(os.path.dirname(__file__), "..", "traces")
SHIPPED = ["conversation", "ds4-issue-444", "openclaw-append-only", "openclaw-strip-history",
           "openclaw-tail-carrier", "openclaw-small-scaled"]


@pytest.fixture(scope="module", params=SHIPPED)
def exported(request):
    keys = KeyedTrace.build(load_trace(os.path.join(TRACES, f"{request.param}.jsonl")))
    base = ReplayConfig(capacity_bytes=1, policy="lru", profile=PROFILES["ds4"])
    sink = io.StringIO()
    export_libcachesim(None, sink, base, keys=keys)
    rows = list(csv.reader(io.StringIO(sink.getvalue())))[1:]
    return keys, keys.working_set_bytes(base.entry_bytes), rows


@pytest.mark.parametrize("percent", [5, 10, 25, 50])
def test_libcachesim_lru_loads_what_kvsim_lru_loads(exported, percent):
    keys, working_set, rows = exported
    config = ReplayConfig(capacity_bytes=working_set * percent // 100, policy="lru", profile=PROFILES["ds4"])
    loaded: list[int] = []
    metrics = replay(None, config, keys=keys, on_request=lambda r: loaded.append(r.loaded_tokens))
    theirs = replay_libcachesim(rows, libcachesim.LRU(cache_size=config.budget()))
    assert theirs.loaded_tokens == metrics.loaded_tokens
    warm = [not keys.info(i).warmup for i in range(len(keys))]
    assert [n for n, counted in zip(theirs.per_request, warm) if counted] == loaded  # request by request
    if percent == 50:
        assert 0 < metrics.loaded_tokens  # the comparison is not between two empty caches


def test_libcachesim_reads_the_export_with_the_documented_reader(tmp_path):
    """The reader setup the README gives sees every row as its own object."""
    keys = KeyedTrace.build(load_trace(os.path.join(TRACES, "ds4-issue-444.jsonl")))
    path = tmp_path / "ds4.csv"
    base = ReplayConfig(capacity_bytes=1, policy="lru", profile=PROFILES["ds4"])
    with open(path, "w", newline="") as sink:
        count = export_libcachesim(None, sink, base, keys=keys)
    params = libcachesim.ReaderInitParam(has_header=True, has_header_set=True, delimiter=",")
    params.time_field, params.obj_id_field, params.obj_size_field = 1, 2, 3
    reader = libcachesim.TraceReader(str(path), libcachesim.TraceType.CSV_TRACE, reader_init_params=params)
    cache = libcachesim.LRU(cache_size=10 * 2**40)  # room for everything: misses are first sightings
    miss_ratio, byte_miss_ratio = cache.process_trace(reader)
    distinct = len({row[1] for row in csv.reader(open(path))}) - 1
    assert miss_ratio == pytest.approx(distinct / count)
