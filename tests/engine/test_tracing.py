"""TaskTraces per attempt (ring buffer and the run's trace file), cell details and the live summary."""

from __future__ import annotations

import json
import queue
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import treadle
from treadle.engine import tracing
from treadle.engine.analysis.summary import summary_metrics
from treadle.engine.controller import RunController
from treadle.engine.errors import StorageError
from treadle.engine.run import RunOptions
from treadle.engine.trace_reader import TraceReader, read_trace, trace_path
from treadle.engine.trace_schema import SCHEMA
from treadle.engine.tracing import compact

PROBE_DIR = Path(__file__).parents[1] / "data" / "probe"


def config(tmp_path: Path, rows: int, **run) -> dict:
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows)}).to_csv(seed, index=False)
    return {
        "seed": {"path": str(seed)},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky_once"},
            {"name": "b", "kind": "python", "function": "probe_cols:flaky", "depends_on": ["a"]},
            {"name": "c", "kind": "template", "template": "{{ a }}-{{ b }}"},
        ],
        "run": {"row_group_size": 5, "max_parallel": 4, "backoff_s": 0, **run},
    }


def start(tmp_path: Path, cfg: dict, **options) -> tuple[RunController, queue.SimpleQueue]:
    controller = RunController(treadle.load(cfg, base_dir=PROBE_DIR), RunOptions(out=tmp_path / "run", **options))
    events = controller.subscribe()
    return controller.start(), events


def wait_idle(events: queue.SimpleQueue) -> None:
    while events.get(timeout=20).type != "idle":
        pass


def test_every_attempt_is_traced_in_trace_parquet(tmp_path, probe):
    probe.flaky_once_rows = {1, 4}
    probe.failing_rows = {6}
    controller, _ = start(tmp_path, config(tmp_path, 10))
    result = controller.wait(30)
    assert result.status == "failed"
    run_dir = tmp_path / "run"
    assert trace_path(run_dir) == run_dir / "trace.parquet" and not (run_dir / "trace.arrows").exists()
    traces = pq.read_table(run_dir / "trace.parquet").to_pylist()
    # 10 rows x 3 columns, minus row 6's blocked template cell, plus the two retried attempts.
    assert len(traces) == 10 * 3 - 1 + 2
    assert [t["seq"] for t in traces] == list(range(1, len(traces) + 1))
    retried = [t for t in traces if t["status"] == "retry"]
    assert [(t["row"], t["column"], t["attempt"], t["error_class"], t["retry_after_s"]) for t in retried] == [
        (1, "a", 1, "RetryableCellError", 0.01),
        (4, "a", 1, "RetryableCellError", 0.01),
    ]
    assert {(t["row"], t["attempt"]) for t in traces if t["column"] == "a" and t["row"] in (1, 4)} == {
        (1, 1), (1, 2), (4, 1), (4, 2),
    }  # fmt: skip
    [failed] = [t for t in traces if t["status"] == "failed"]
    assert (failed["row"], failed["column"], failed["message"]) == (6, "b", "row 6 is not ready")
    for t in traces:
        assert 0 <= t["t_ready"] <= t["t_start"] <= t["t_end"]
        assert 0 <= t["slot"] < 4


def test_traces_cell_detail_and_summary_from_a_live_run(tmp_path, probe):
    probe.flaky_once_rows = {2}
    probe.failing_rows = {3}
    controller, events = start(tmp_path, config(tmp_path, 6), hold_open=True)
    wait_idle(events)
    cursor, traces = controller.traces()
    assert cursor == len(traces) == 6 * 3 - 1 + 1
    assert controller.traces(cursor) == (cursor, [])

    done = controller.cell_detail(2, "c")
    assert (done.state, done.value, done.error) == ("done", "6-3", None)
    assert done.inputs == {"a": 6, "b": 3}
    retried = controller.cell_detail(2, "a")
    assert [(t.attempt, t.status, t.retry_after_s) for t in retried.attempts] == [(1, "retry", 0.01), (2, "done", None)]
    assert retried.inputs == {"id": 2}

    failed = controller.cell_detail(3, "b")
    assert failed.state == "failed" and failed.value is None
    assert (failed.error["error_class"], failed.error["message"]) == ("ValueError", "row 3 is not ready")
    assert controller.cell_detail(3, "c").state == "blocked"

    live = controller.summary()
    assert live["rows"] == {"total": 6, "done": 5, "failed": 1, "dropped": 0, "unfinished": 0}
    controller.close()
    result = controller.wait(30)
    assert result.summary["rows"] == live["rows"]
    assert result.summary["cells"] == live["cells"]


def test_the_ring_holds_the_newest_taken_attempts_and_all_not_taken(monkeypatch):
    """UIs read the newest RING_SIZE attempts the writer took and every one it has not, by seq; the run
    times of successful cells (summary.json's latencies) come from the attempts taken."""
    monkeypatch.setattr(tracing, "RING_SIZE", 5)
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=0.0)
    for batch_size in (3, 4, 6):
        for _ in range(batch_size):
            row = tracer.seq  # seq n is row n - 1
            tracer.done(row, row % 2, 1, 0, row, row + 0.5, row + 1, {})
        tracer.take_unwritten()
    tracer.record(13, 1, 1, 0, 13, 13.5, 14, "retry", TimeoutError("slow"), "took too long")
    tracer.record(13, 0, 1, 0, 13, 13.1, 13.2, "done", child=("judge", None))
    tracer.done(13, 1, 2, 0, 14, 14.5, 15, {})
    assert [t.seq for t in tracer.traces_of(tracer.held())] == list(range(9, 17))
    assert [(t.seq, t.row, t.column) for t in tracer.since(13)] == [(14, 13, "b"), (15, 13, "a:llm"), (16, 13, "b")]
    assert tracer.since(16) == []
    assert [(t.attempt, t.status) for t in tracer.recent_for(13, 1)] == [(1, "retry"), (2, "done")]
    assert [(t.seq, t.t_start, t.t_end) for t in tracer.recent_for(10, 0)] == [(11, 10.5, 11.0)]
    assert tracer.recent_for(2, 0) == []  # no longer held
    assert [(len(latencies), latencies.total()) for latencies in tracer.latencies] == [(7, 3.5), (6, 3.0)]
    tracer.take_unwritten()
    assert [(len(latencies), latencies.total()) for latencies in tracer.latencies] == [(7, 3.5), (7, 3.5)]


def test_tracing_can_be_turned_off(tmp_path, probe):
    controller, _ = start(tmp_path, config(tmp_path, 4, trace=False))
    assert controller.wait(30).status == "done"
    assert controller.traces() == (0, [])
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("trace")]


def test_a_runs_summary_metrics_are_those_of_its_trace_read_back(tmp_path):
    """Batches reach the trace file while row groups are written on another thread: none may be lost,
    and summary.json's metrics are those of the file."""
    rows = 5_000
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows)}).to_csv(seed, index=False)
    cfg = {
        "seed": {"path": str(seed)},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:noop"},
            {"name": "b", "kind": "python", "function": "probe_cols:noop", "depends_on": ["a"]},
        ],
        "run": {"row_group_size": 500, "max_parallel": 16},
    }
    result = treadle.run(treadle.load(cfg, base_dir=PROBE_DIR), out=tmp_path / "run")
    assert result.status == "done"
    seqs = pq.read_table(tmp_path / "run" / "trace.parquet", columns=["seq"])["seq"].to_pylist()
    assert seqs == list(range(1, 2 * rows + 1))  # every one, in order
    summary = {k: v for k, v in result.summary.items() if k != "metrics"}
    assert (
        result.summary["metrics"]
        == summary_metrics(tmp_path / "run", summary, {}, read_trace(tmp_path / "run")).to_json()
    )


def test_a_trace_that_cannot_be_written_costs_no_outputs(tmp_path):
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(50)}).to_csv(seed, index=False)
    cfg = {
        "seed": {"path": str(seed)},
        "columns": [{"name": "a", "kind": "python", "function": "probe_cols:noop"}],
        "run": {"row_group_size": 10},
    }
    controller = RunController(treadle.load(cfg, base_dir=PROBE_DIR), RunOptions(out=tmp_path / "run"))
    (tmp_path / "run" / "trace.arrows").mkdir()  # the run directory exists once the controller is built
    with pytest.raises(StorageError, match=r"trace\.arrows: Is a directory"):
        controller.start().wait(30)
    assert pd.read_parquet(tmp_path / "run" / "output.parquet")["a"].tolist() == list(range(50))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["cells"]["done"] > 0


def traced_attempts(tracer: tracing.Tracer, cells: int, t: float) -> None:
    """`cells` plain successes, then a retry, a success with token counts and a call from inside a cell."""
    for i in range(cells):
        tracer.done(i, i % 2, 1, i % 3, t + i, t + i + 0.5, t + i + 1.25, {})
    tracer.record(cells, 0, 1, 0, t, t + 1, t + 2, "retry", TimeoutError("slow"), "took too long", retry_after=0.5)
    tracer.record(
        cells, 1, 1, 1, t, t + 1, t + 3, "done", values={"b__usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    )
    tracer.record(
        cells, 0, 1, 2, t, t + 1, t + 2, "done", child=("judge", {"prompt_tokens": 2, "completion_tokens": 1})
    )


def test_the_file_holds_the_records_the_ring_shows(tmp_path):
    """Records made into record batches on the writer thread are the TaskTraces UIs read from the ring."""
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=10.0)
    path = tmp_path / "trace.parquet"
    for batch in range(3):
        traced_attempts(tracer, 2 + batch, 10.0 + 10 * batch)
        tracer.write(path, tracer.take_unwritten())
    shown = [trace._asdict() for trace in tracer.since(0)]
    assert {t["column"] for t in shown} == {"a", "b", "a:llm"} and {t["tokens_in"] for t in shown} == {None, 7, 2}
    live = list(TraceReader(tmp_path))  # the stream, while the session goes
    tracer.finish(path)
    assert [p.name for p in tmp_path.iterdir()] == ["trace.parquet"]
    assert pq.read_table(path).to_pylist() == shown
    assert [{k: v for k, v in t.items() if k != "session"} for t in live] == shown
    assert pq.read_schema(path).field("t_end").metadata == {b"doc": b"when it ended"}


def write_stream(path: Path, tables: list[pa.Table]) -> list[int]:
    """A stream of one record batch per table; returns the file's size after each."""
    sizes = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as stream:
        for table in tables:
            stream.write_table(table)
            sizes.append(sink.tell())
    return sizes


def attempts(first_seq: int, count: int, t: float = 0.0) -> pa.Table:
    records = [
        {"seq": first_seq + i, "row": i, "column": "a", "attempt": 1, "slot": 0, "t_ready": t + i,
         "t_start": t + i, "t_end": t + i + 1, "status": "done"}
        for i in range(count)
    ]  # fmt: skip
    return pa.Table.from_pylist(records, schema=SCHEMA)


def test_a_torn_last_batch_is_ignored(tmp_path):
    """A killed run's stream reads up to its last whole batch; the torn one counts as skipped."""
    sizes = write_stream(tmp_path / "trace.arrows", [attempts(1, 3), attempts(4, 2), attempts(6, 4)])
    whole = read_trace(tmp_path)
    assert (whole.lines, whole.skipped, whole.sessions) == (9, 0, 1)
    for cut, lines in ((sizes[2] - 1, 5), ((sizes[1] + sizes[2]) // 2, 5), (sizes[1] + 3, 5), (sizes[0] + 5, 3)):
        with open(tmp_path / "trace.arrows", "r+b") as handle:
            handle.truncate(cut)
        columns = read_trace(tmp_path)
        assert (columns.lines, columns.skipped) == (lines, 1), cut
    (tmp_path / "trace.arrows").write_bytes(b"")  # a stream opened, nothing in it yet
    assert (read_trace(tmp_path).lines, read_trace(tmp_path).skipped) == (0, 0)


def test_sessions_continue_in_a_new_stream_and_are_folded_into_trace_parquet(tmp_path):
    """A resumed run's writer folds the killed session's stream into trace.parquet before its own;
    a stream trace.parquet already holds (the run stopped before removing it) is not read twice."""
    write_stream(tmp_path / "trace.arrows", [attempts(1, 3)])
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=0.0)
    traced_attempts(tracer, 2, 1.0)
    tracer.write(tmp_path / "trace.parquet", tracer.take_unwritten())
    assert read_trace(tmp_path).sessions == 2 and pq.read_table(tmp_path / "trace.parquet").num_rows == 3
    shutil.copy(tmp_path / "trace.arrows", tmp_path / "kept")
    tracer.finish(tmp_path / "trace.parquet")
    columns = read_trace(tmp_path)
    assert (columns.lines, columns.sessions, columns.session_starts) == (3 + 5, 2, [0.0, 3.0])
    (tmp_path / "kept").rename(tmp_path / "trace.arrows")
    assert read_trace(tmp_path).lines == 8
    compact(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["trace.parquet"] and read_trace(tmp_path).lines == 8


DOCS = Path(__file__).parents[2] / "docs" / "TRACING.md"


def test_docs_describe_the_schemas_fields_and_their_pandas_query_runs(tmp_path):
    rows = [
        f"| `{f.name}` | {f.type}{'' if f.nullable else ', never null'} | {f.metadata[b'doc'].decode()} |"
        for f in SCHEMA
    ]
    table = "\n".join(["| field | type | meaning |", "| --- | --- | --- |", *rows])
    text = DOCS.read_text()
    assert f"{table}\n\n" in text, "docs/TRACING.md's table of fields is not trace_schema.SCHEMA's: make it again"

    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=0.0)
    traced_attempts(tracer, 4, 100.0)
    tracer.finish(tmp_path / "trace.parquet")
    [query] = [block.split("```")[0] for block in text.split("```python\n")[1:]]
    shown: list = []
    exec(query.replace("runs/my-run/trace.parquet", str(tmp_path / "trace.parquet")), {"print": shown.append})
    p95, per_minute = shown
    assert p95.to_dict() == pytest.approx({"a": 0.75, "a:llm": 1.0, "b": 1.875})
    assert per_minute.to_dict() == {1.0: 1}  # the retry that honoured a Retry-After ended at 102 s
