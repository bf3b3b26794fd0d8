"""Each worker's own tracks: a `--workers 2` run against the simulator records which worker ran each
attempt (`worker` in trace.parquet), the Chrome trace draws each worker's slots as threads of a process
of its own, and `treadle report` names each worker; a run in one process is shown as before."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

import treadle
from treadle.engine.analysis.chrome_trace import SLOTS_PID, WORKER_PID_BASE, export_chrome
from treadle.engine.analysis.per_worker import measure_workers
from treadle.engine.trace_reader import TraceReader, read_table
from treadle.engine.trace_schema import SCHEMA
from treadle.engine.tracing import Tracer
from treadle.engine.workers.pool import merge_traces
from treadle.engine.workers.slot_numbers import SlotNumbers
from treadle.report import print_report, write_html_report
from treadle.sim import SimConfig, SimulatorThread

ROWS, SLOTS = 80, 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same pipeline (an llm column, then a template) run by two workers and by one process."""
    tmp = tmp_path_factory.mktemp("worker_tracks")
    pd.DataFrame({"id": range(ROWS), "q": [f"q{i}" for i in range(ROWS)]}).to_csv(tmp / "s.csv", index=False)
    with SimulatorThread(SimConfig(latency_ms=5, seed=3)) as url:
        config = {
            "seed": {"path": "s.csv"},
            "models": {"m": {"model": "sim", "base_url": url, "max_parallel": SLOTS}},
            "columns": [
                {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
                {"name": "t", "kind": "template", "template": "{{ id }}:{{ a }}"},
            ],
            "run": {"max_parallel": SLOTS, "row_group_size": 10},
        }
        (tmp / "pipeline.yaml").write_text(json.dumps(config))
        two = treadle.run(tmp / "pipeline.yaml", out=tmp / "two", cache="off", workers=2)
        one = treadle.run(tmp / "pipeline.yaml", out=tmp / "one", cache="off")
    assert two.status == one.status == "done"
    return {"two": two.run_dir, "one": one.run_dir}


def test_the_trace_says_which_worker_ran_each_attempt(runs):
    two = pq.read_table(runs["two"] / "trace.parquet").to_pandas()
    assert two["worker"].dtype == "int64"  # never null in a new trace: pandas keeps it an int column
    assert sorted(two["worker"].unique()) == [0, 1]
    for _, attempts in two.groupby("worker"):
        assert set(attempts["column"]) == {"a", "t"}  # each worker ran whole rows
    # The parent numbered each worker's slots after the other's: (worker, slot) lanes do not share slots.
    lanes = two.groupby("worker")["slot"].agg(set)
    assert not lanes[0] & lanes[1]
    one = pq.read_table(runs["one"] / "trace.parquet").to_pandas()
    assert (one["worker"] == 0).all() and len(one) == len(two) == 2 * ROWS


def _chrome(run_dir: Path, out: Path) -> list[dict]:
    export_chrome(run_dir, out)
    return json.loads(out.read_text())["traceEvents"]


def _names(events: list[dict], kind: str) -> dict[tuple[int, int | None], str]:
    return {(e["pid"], e.get("tid")): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == kind}


def test_the_chrome_trace_has_a_process_per_worker_with_its_slots_as_threads(runs, tmp_path):
    events = _chrome(runs["two"], tmp_path / "two.json")
    processes = {pid: name for (pid, _), name in _names(events, "process_name").items()}
    workers = {WORKER_PID_BASE: "worker 0", WORKER_PID_BASE + 1: "worker 1"}
    assert processes == {SLOTS_PID: "all workers", **workers, 2: "models", 3: "queue"}
    threads = _names(events, "thread_name")
    trace = read_table(runs["two"])[0].to_pandas()
    attempts = [e for e in events if e["ph"] == "X" and e["cat"] == "attempt"]
    assert len(attempts) == len(trace)
    for pid in workers:
        worker = pid - WORKER_PID_BASE
        mine = [e for e in attempts if e["pid"] == pid]
        assert {e["args"]["worker"] for e in mine} == {worker}
        assert len(mine) == (trace["worker"] == worker).sum()
        slots = sorted(trace.loc[trace["worker"] == worker, "slot"].unique())
        tids = {tid for (p, tid) in threads if p == pid}
        assert sorted(threads[pid, tid] for tid in tids) == sorted(f"slot {s}" for s in slots)
        assert {e["tid"] for e in mine} == tids
        in_flight = [e["args"]["cells"] for e in events if e["ph"] == "C" and e["pid"] == pid]
        assert 0 < max(in_flight) <= SLOTS
    tids = [tid for (pid, tid) in threads if pid in workers]
    assert len(tids) == len(set(tids))  # thread ids are unique across processes
    assert not [e for e in attempts if e["pid"] == SLOTS_PID]  # pid 1 keeps the run's counters only
    assert {e["name"] for e in events if e["ph"] == "C" and e["pid"] == SLOTS_PID} == {
        "cells in flight",
        "slot limit",
    }


def test_one_process_keeps_its_slots_on_pid_1_and_its_args_unchanged(runs, tmp_path):
    events = _chrome(runs["one"], tmp_path / "one.json")
    assert {pid for (pid, _), _ in _names(events, "process_name").items()} == {SLOTS_PID, 2, 3}
    attempts = [e for e in events if e["ph"] == "X" and e["cat"] == "attempt"]
    assert {e["pid"] for e in attempts if e["name"] == "t"} == {SLOTS_PID}
    assert not [e for e in attempts if "worker" in e["args"]]


def test_the_report_names_each_worker(runs, tmp_path):
    console = Console(record=True, width=200, color_system=None, file=io.StringIO())
    print_report(runs["two"], console)
    text = console.export_text()
    trace = read_table(runs["two"])[0].to_pandas()
    for worker in (0, 1):
        assert f"worker {worker}: {(trace['worker'] == worker).sum():,} attempts," in text
    assert "Workers (engine processes)" in text
    [table_row] = [line for line in text.splitlines() if line.startswith("│ worker 1 ")]
    calls = trace[(trace["worker"] == 1) & (trace["column"] == "a")]
    assert f"│ {len(calls):>11,} │" in table_row  # model calls
    write_html_report(runs["two"], tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "Cells in flight per worker" in html and "worker 0" in html and "worker 1" in html

    console = Console(record=True, width=200, color_system=None, file=io.StringIO())
    print_report(runs["one"], console)
    assert "worker" not in console.export_text().lower()
    assert measure_workers(runs["one"], 1.0) == []


def test_worker_use_adds_up_to_the_runs(runs):
    workers = measure_workers(runs["two"], 2.0)
    trace = read_table(runs["two"])[0].to_pandas()
    assert [w.worker for w in workers] == [0, 1]
    assert sum(w.attempts for w in workers) == len(trace)
    assert sum(w.calls for w in workers) == ROWS  # column a's requests
    assert sum(w.calls_per_s for w in workers) == pytest.approx(ROWS / 2.0)
    assert all(1 <= w.peak_in_flight <= w.slots for w in workers)


def test_merged_records_keep_their_worker_and_a_batch_calls_rows():
    """The parent marks every record a worker sends, plain successes and the others alike, and puts it on
    the run's lane of its worker's slot."""
    sent = Tracer(["a"], ["m"], t0=0.0)
    sent.done(0, 0, 1, 2, 1.0, 1.5, 2.0, {})
    sent.record(1, 0, 1, 3, 1.0, 1.5, 2.0, "retry", error=ValueError("x"), message="x", rows=np.arange(1, 5))
    sent.done(2, 0, 1, 2, 1.0, 1.5, 2.5, {})
    parent = Tracer(["a"], ["m"], t0=0.0)
    numbers = SlotNumbers()
    numbers.reserve(0, 8)
    numbers.reserve(1, 8)
    merge_traces(parent, sent.take_unwritten(), numbers, worker=1)
    merged = parent.since(0)
    assert [(t.row, t.slot, t.worker) for t in merged] == [(0, 10, 1), (1, 11, 1), (2, 10, 1)]
    assert (merged[1].status, merged[1].error_class, merged[1].rows) == ("retry", "ValueError", 4)
    assert all(t.worker == 0 for t in sent.traces_of(sent.held()))


def test_a_trace_written_before_the_worker_field_reads_it_as_null(tmp_path):
    old = pa.schema([field for field in SCHEMA if field.name != "worker"])
    record = {"seq": 1, "row": 0, "column": "a", "attempt": 1, "slot": 0, "t_ready": 0.0, "t_start": 0.1}
    pq.write_table(pa.Table.from_pylist([{**record, "t_end": 0.2, "status": "done"}], old), tmp_path / "trace.parquet")
    [read] = list(TraceReader(tmp_path))
    assert read["worker"] is None
    assert measure_workers(tmp_path, 1.0) == []
    export_chrome(tmp_path, tmp_path / "c.json")
    events = json.loads((tmp_path / "c.json").read_text())["traceEvents"]
    assert Counter(e["pid"] for e in events if e.get("cat") == "attempt") == {SLOTS_PID: 1}
