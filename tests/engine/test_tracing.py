"""TaskTraces per attempt (ring buffer and trace.jsonl), cell details and the live summary."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine import tracing
from treadle.engine.analysis.summary import summary_metrics
from treadle.engine.controller import RunController
from treadle.engine.errors import StorageError
from treadle.engine.run import RunOptions
from treadle.engine.trace_reader import TraceColumns, joined, read_trace
from treadle.engine.trace_writer import Batch, RecordNumbers, TraceWriterProcess, format_lines

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


@pytest.mark.parametrize("offload", [False, True], ids=["writer-thread", "writer-process"])
def test_every_attempt_is_traced_in_trace_jsonl(tmp_path, probe, monkeypatch, offload):
    started: list[TraceWriterProcess] = []

    class CountedWriter(TraceWriterProcess):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            started.append(self)

    if offload:  # large runs format trace.jsonl in a helper process: make this small run one of them
        monkeypatch.setattr(tracing, "OFFLOAD_AFTER", 0)
        monkeypatch.setattr(tracing, "TraceWriterProcess", CountedWriter)
    probe.flaky_once_rows = {1, 4}
    probe.failing_rows = {6}
    controller, _ = start(tmp_path, config(tmp_path, 10))
    result = controller.wait(30)
    assert result.status == "failed"
    traces = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    # 10 rows x 3 columns, minus row 6's blocked template cell, plus the two retried attempts.
    assert len(traces) == 10 * 3 - 1 + 2
    assert sorted(t["seq"] for t in traces) == list(range(1, len(traces) + 1))
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
    assert len(started) == (1 if offload else 0)


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
    assert [list(latencies) for latencies in tracer.latencies] == [[0.5] * 7, [0.5] * 6]
    tracer.take_unwritten()
    assert [list(latencies) for latencies in tracer.latencies] == [[0.5] * 7, [0.5] * 7]


def test_tracing_can_be_turned_off(tmp_path, probe):
    controller, _ = start(tmp_path, config(tmp_path, 4, trace=False))
    assert controller.wait(30).status == "done"
    assert controller.traces() == (0, [])
    assert not (tmp_path / "run" / "trace.jsonl").exists()


def test_a_large_run_traces_every_attempt(tmp_path):
    """Past OFFLOAD_AFTER attempts trace.jsonl is written by a helper process, in batches that may wait
    behind row-group writes on the writer thread while the run ends: none may be lost."""
    rows = 30_000
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
    seqs = [json.loads(line)["seq"] for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    assert seqs == list(range(1, 2 * rows + 1))  # every one, in order
    assert 2 * rows > tracing.OFFLOAD_AFTER  # so the helper process wrote most of it
    # summary.json's metrics came from the records the helper sent back: the same as from the file.
    summary = {k: v for k, v in result.summary.items() if k != "metrics"}
    from_file = summary_metrics(tmp_path / "run", summary, {}, read_trace(tmp_path / "run" / "trace.jsonl"))
    assert result.summary["metrics"] == from_file.to_json()


@pytest.mark.parametrize("offload", [False, True], ids=["writer-thread", "writer-process"])
def test_a_trace_that_cannot_be_written_costs_no_outputs(tmp_path, monkeypatch, offload):
    if offload:
        monkeypatch.setattr(tracing, "OFFLOAD_AFTER", 0)
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(50)}).to_csv(seed, index=False)
    cfg = {
        "seed": {"path": str(seed)},
        "columns": [{"name": "a", "kind": "python", "function": "probe_cols:noop"}],
        "run": {"row_group_size": 10},
    }
    controller = RunController(treadle.load(cfg, base_dir=PROBE_DIR), RunOptions(out=tmp_path / "run"))
    (tmp_path / "run" / "trace.jsonl").mkdir()  # the run directory exists once the controller is built
    with pytest.raises(StorageError, match=r"trace\.jsonl: Is a directory"):
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


@pytest.mark.parametrize(
    ("offload_after", "expected_attempts"),
    [(None, 0), (0, 0), (5, 0), (5, 6)],
    ids=["writer-thread", "helper-from-start", "helper-takes-over", "helper-from-start-for-a-large-run"],
)
def test_a_runs_final_trace_columns_are_its_trace_read_back(tmp_path, monkeypatch, offload_after, expected_attempts):
    """summary.json's metrics come from `final_columns`: for a large run, the helper's own copy of the
    records it writes, joined to the lines written before it took over (earlier sessions included)."""
    path = tmp_path / "trace.jsonl"
    earlier = tracing.Tracer(["a", "b"], ["m", None], t0=100.0)  # a run this one resumes
    traced_attempts(earlier, 4, 100.0)
    earlier.finish(path)
    earlier.wait_written()
    if offload_after is not None:
        monkeypatch.setattr(tracing, "OFFLOAD_AFTER", offload_after)
    started: list[TraceWriterProcess] = []

    class CountedWriter(TraceWriterProcess):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(tracing, "TraceWriterProcess", CountedWriter)
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=50.0, expected_attempts=expected_attempts)
    traced_attempts(tracer, 2, 50.0)  # 5 records: written by the thread unless the helper takes all
    tracer.write(path, tracer.take_unwritten())
    helper_from_start = tracing.OFFLOAD_AFTER < 5 or expected_attempts > tracing.OFFLOAD_AFTER
    assert len(started) == helper_from_start
    traced_attempts(tracer, 6, 60.0)
    tracer.finish(path)
    columns = tracer.final_columns(path)
    tracer.wait_written()
    expected = read_trace(path)
    assert (expected.lines, expected.sessions) == (7 + 5 + 9, 2)
    assert (columns.lines, columns.session_starts, columns.span_s) == (
        expected.lines,
        expected.session_starts,
        pytest.approx(expected.span_s, abs=1e-6),
    )
    assert columns.names == expected.names
    for name, codes in expected.codes.items():
        assert columns.codes[name].tolist() == codes.tolist(), name
    for name in ("t_ready", "t_start", "t_end"):
        assert getattr(columns, name) == pytest.approx(getattr(expected, name), abs=1e-6), name
    for name in ("slot", "has_slot", "tokens_in", "tokens_out", "retry_after"):
        assert getattr(columns, name).tolist() == getattr(expected, name).tolist(), name
    assert "judge" in columns.names["model"] and "a:llm" in columns.names["column"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {t["retry_after_s"] for t in lines if t["status"] == "retry"} == {0.5}
    assert {t["retry_after_s"] for t in lines if t["status"] == "done"} == {None}


def numbers_of(*batches: Batch) -> dict:
    numbers = RecordNumbers()
    for batch in batches:
        numbers.add(batch)
    return numbers.message()


def test_trace_columns_of_consecutive_parts_join_into_those_of_the_whole():
    """What the helper sends back is joined to the lines written before it took over: the whole."""
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=10.0)
    traced_attempts(tracer, 3, 10.0)
    first = tracer.take_unwritten()
    traced_attempts(tracer, 4, 20.0)
    second = tracer.take_unwritten()
    args = (tracer.t0, tracer.columns, tracer.models)
    whole = TraceColumns.from_records(numbers_of(first, second), *args)
    parts = [TraceColumns.from_records(numbers_of(batch), *args) for batch in (first, second)]
    glued = joined(parts[0], parts[1], same_session=True)
    assert (glued.lines, glued.sessions, glued.span_s, glued.names) == (whole.lines, 1, whole.span_s, whole.names)
    for name, codes in whole.codes.items():
        assert glued.codes[name].tolist() == codes.tolist(), name
    for name in ("t_ready", "t_start", "t_end", "slot", "tokens_in", "tokens_out", "retry_after"):
        assert getattr(glued, name).tolist() == getattr(whole, name).tolist(), name
    assert whole.tokens_in.sum() == 2 * (7 + 2) and whole.names["status"] == ["done", "retry"]


def test_the_trace_helper_ignores_another_treadle_in_the_working_directory(tmp_path, monkeypatch):
    """A run started from a source tree of another treadle version still gets this version's helper."""
    other = tmp_path / "elsewhere" / "treadle" / "engine"
    other.mkdir(parents=True)
    for package in (other.parent, other):
        (package / "__init__.py").write_text("")
    (other / "trace_writer.py").write_text("raise SystemExit('the wrong trace writer')\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(tracing, "OFFLOAD_AFTER", 0)
    path = tmp_path / "trace.jsonl"
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=1.0)
    traced_attempts(tracer, 3, 1.0)
    tracer.finish(path)
    assert tracer.final_columns(path).lines == 6
    tracer.wait_written()
    assert len(path.read_text().splitlines()) == 6


def test_the_helper_writes_the_lines_the_writer_thread_would_in_order(tmp_path, monkeypatch):
    """It formats each batch when the next comes, and the last after it sends the numbers back: the file
    is what the writer thread would have written."""
    monkeypatch.setattr(tracing, "OFFLOAD_AFTER", 0)
    path = tmp_path / "trace.jsonl"
    tracer = tracing.Tracer(["a", "b"], ["m", None], t0=1.0)
    expected = []
    for batch in range(5):
        traced_attempts(tracer, 3 + batch, 10.0 * batch)
        taken = tracer.take_unwritten()
        expected.append(format_lines(taken, tracer.t0, tracer.columns, tracer.models))
        tracer.write(path, taken)
    tracer.finish(path)
    assert tracer.final_columns(path).lines == sum(3 + b + 3 for b in range(5))
    tracer.wait_written()
    assert path.read_text() == "".join(expected)
