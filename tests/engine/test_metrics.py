"""treadle.engine.analysis: the metrics of a run directory and their typed records.

A tiny real run (python columns with a retried and a failed cell, written by the engine's own trace
writer) is measured, and each number is checked against the trace read record by record; the JSON of
the records against what summary.json holds. The helpers (series, limits, prices) get small inputs.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import treadle
from treadle.engine.analysis import metrics, open_intervals
from treadle.engine.analysis.cost import check_prices
from treadle.engine.analysis.limits import capacity_s, history_from, limit_history, read_limit_history
from treadle.engine.analysis.metrics import measure_run, run_metrics
from treadle.engine.analysis.metrics_record import RunMetrics
from treadle.engine.analysis.records import STATUSES, MetricsNote, SummaryMetrics, parse_summary_metrics
from treadle.engine.analysis.series import histogram, nice_width, percentiles, step_series
from treadle.engine.analysis.summary import NO_TRACE_NOTE, live_metrics
from treadle.engine.summary_record import RunSummary
from treadle.engine.trace_reader import TraceChunks, TraceReader, read_table, read_trace, trace_columns
from treadle.engine.trace_schema import SCHEMA

PROBE_DIR = Path(__file__).parents[1] / "data" / "probe"


def pipeline(seed: Path, **run: object) -> dict:
    return {
        "seed": {"path": str(seed)},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky_once"},
            {"name": "b", "kind": "python", "function": "probe_cols:flaky", "depends_on": ["a"]},
            {"name": "c", "kind": "template", "template": "{{ a }}-{{ b }}"},
        ],
        "run": {"row_group_size": 4, "max_parallel": 3, "backoff_s": 0, "salvage_rounds": 0, **run},
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, module_probe) -> Path:
    """12 rows: a retries rows 1 and 4 once (the second attempt succeeds); b fails row 3 for good."""
    tmp = tmp_path_factory.mktemp("metrics_run")
    pd.DataFrame({"id": range(12)}).to_csv(tmp / "seed.csv", index=False)
    module_probe.flaky_once_rows = {1, 4}
    module_probe.failing_rows = {3}
    result = treadle.run(pipeline(tmp / "seed.csv"), base_dir=PROBE_DIR, out=tmp / "run")
    assert result.status == "failed"
    return tmp / "run"


def trace_lines(run_dir: Path) -> list[dict]:
    return read_table(run_dir)[0].to_pylist()


def stored_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ---- measure_run against the trace --------------------------------------------------------------


def test_each_column_counts_what_its_trace_lines_say(run_dir):
    lines = trace_lines(run_dir)
    m = measure_run(run_dir)
    assert list(m.columns) == ["a", "b", "c"]  # in the order they first appear in the trace
    for name, column in m.columns.items():
        mine = [t for t in lines if t["column"] == name]
        statuses = Counter(t["status"] for t in mine)
        assert column.attempts == len(mine)
        assert {s: getattr(column, s) for s in STATUSES} == {s: statuses[s] for s in STATUSES}
        runs = [t["t_end"] - t["t_start"] for t in mine]
        done_runs = [t["t_end"] - t["t_start"] for t in mine if t["status"] == "done"]
        waits = [t["t_start"] - t["t_ready"] for t in mine]
        assert column.run_s.total == pytest.approx(sum(runs), abs=1e-6)
        assert column.latency_s.p50 == pytest.approx(float(np.percentile(done_runs, 50)), abs=1e-6)
        assert column.latency_s.max == pytest.approx(max(done_runs), abs=1e-6)
        assert column.queue_wait_s is not None and column.queue_wait_s.total == pytest.approx(sum(waits), abs=1e-6)
        assert column.parent is None and column.model is None and column.cost is None
    assert (m.columns["a"].retry, m.columns["a"].done) == (2, 12)
    assert (m.columns["b"].failed, m.columns["b"].done) == (1, 11)
    assert m.attempts.total == len(lines) and m.calls.total == 0


def test_errors_throughput_and_concurrency_of_the_run(run_dir):
    lines = trace_lines(run_dir)
    summary = stored_summary(run_dir)
    m = measure_run(run_dir)
    assert {name: counts.model_dump() for name, counts in m.errors.by_class.items()} == {
        "RetryableCellError": {"retry": 2, "failed": 0, "timeout": 0, "cancelled": 0},
        "ValueError": {"retry": 0, "failed": 1, "timeout": 0, "cancelled": 0},
    }
    assert (m.errors.retries, m.errors.failed_attempts, m.errors.timeouts) == (2, 1, 0)
    assert m.errors.retry_after.waits == 2  # flaky_once asks to wait 0.01 s
    assert m.errors.retry_after.total_s == pytest.approx(0.02)
    assert sum(m.throughput.done) == sum(t["status"] == "done" for t in lines)
    assert sum(m.throughput.failed) == 1
    assert m.throughput.t == [pytest.approx(i * m.throughput.bucket_s) for i in range(len(m.throughput.done))]
    assert m.wall_s == pytest.approx(summary["wall_s"], abs=1e-3)
    conc = m.concurrency
    assert conc.slot_limit == summary["limits"]["slots"]["total"] == 3
    assert conc.peak_in_flight == max(m.in_flight.v) <= 3 and m.in_flight.v[-1] == 0
    rounding = len(lines) * 1e-6  # the metrics sum times each kept to the microsecond
    assert conc.busy_slot_s == pytest.approx(sum(t["t_end"] - t["t_start"] for t in lines), abs=rounding)
    assert m.time.queue_wait_s == pytest.approx(sum(t["t_start"] - t["t_ready"] for t in lines), abs=rounding)
    # The share is of the exact sums, the test's of the sums rounded to the microsecond: short runs differ by ~1e-5.
    share = m.time.queue_wait_s / (m.time.queue_wait_s + conc.busy_slot_s)
    assert m.time.queue_share == pytest.approx(share, abs=1e-4)
    assert m.limits["slots"].series == [(0.0, 3), (pytest.approx(m.wall_s), 3)]
    assert m.tokens.tokens_in == m.tokens.tokens_out == 0 and m.cost is None


# ---- the records and their JSON -------------------------------------------------------------------


def test_summary_json_holds_the_summary_form_of_the_offline_metrics(run_dir):
    stored = stored_summary(run_dir)["metrics"]
    parsed = parse_summary_metrics(stored)
    assert isinstance(parsed, SummaryMetrics) and parsed.source == "trace.jsonl"
    assert parsed == measure_run(run_dir).summary_metrics({})  # the run's prices: none
    assert json.dumps(parsed.to_json()) == json.dumps(stored)  # same keys, values and order
    column = parsed.columns["a"]
    full = measure_run(run_dir).columns["a"]
    assert (column.run_s.p50, column.run_s.mean) == (full.latency_s.p50, full.latency_s.mean)
    assert "tokens_counted_in" not in stored["columns"]["a"] and "window" not in stored


def test_run_metrics_is_the_json_of_measure_run(run_dir):
    data = run_metrics(run_dir)
    assert data["tokens"] == {"in": 0, "out": 0}
    assert data["columns"]["a"]["tokens_counted_in"] is None  # the full form keeps every key
    assert json.dumps(RunMetrics.from_json(data).to_json()) == json.dumps(data)


def test_a_run_without_a_trace_has_a_note(tmp_path, module_probe):
    pd.DataFrame({"id": range(3)}).to_csv(tmp_path / "seed.csv", index=False)
    result = treadle.run(pipeline(tmp_path / "seed.csv", trace=False), base_dir=PROBE_DIR, out=tmp_path / "run")
    assert parse_summary_metrics(result.summary["metrics"]) == MetricsNote(note=NO_TRACE_NOTE)
    m = measure_run(tmp_path / "run")
    assert not m.has_trace and m.attempts.total == 0 and m.status == result.status


# ---- live metrics ---------------------------------------------------------------------------------


def test_live_metrics_come_from_the_attempts_given_and_say_which(run_dir):
    records = list(TraceReader(run_dir))
    summary = {k: v for k, v in stored_summary(run_dir).items() if k != "metrics"}
    everything = live_metrics(run_dir, summary, None, records, len(records), summary["wall_s"])
    assert everything.source == "trace ring buffer"
    assert everything.window is not None and everything.window.model_dump() == {
        "from_s": 0.0,
        "attempts": len(records),
        "of": len(records),
    }
    assert everything.attempts.total == len(records)

    recent = records[-10:]  # a full ring buffer holds only the most recent attempts
    window = live_metrics(run_dir, summary, None, recent, len(records), summary["wall_s"])
    start = min(r["t_ready"] for r in recent)
    assert window.window is not None and window.window.from_s == pytest.approx(start, abs=1e-3)
    assert (window.window.attempts, window.window.of) == (10, len(records))
    assert window.attempts.total == 10
    assert window.attempts.done == sum(r["status"] == "done" for r in recent)
    assert "window" in window.to_json() and SummaryMetrics.from_json(window.to_json()) == window


# ---- a resumed run --------------------------------------------------------------------------------


def test_a_resumed_run_lays_its_sessions_end_to_end(tmp_path, module_probe):
    pd.DataFrame({"id": range(8)}).to_csv(tmp_path / "seed.csv", index=False)
    module_probe.flaky_once_rows = set()
    module_probe.failing_rows = {2, 5}
    config = pipeline(tmp_path / "seed.csv")
    assert treadle.run(config, base_dir=PROBE_DIR, out=tmp_path / "run").status == "failed"
    first = measure_run(tmp_path / "run")
    module_probe.failing_rows = set()
    assert treadle.resume(tmp_path / "run", pipeline=config, base_dir=PROBE_DIR).status == "done"
    m = measure_run(tmp_path / "run")
    assert m.trace.sessions == 2 and first.trace.sessions == 1
    assert m.attempts.total == first.attempts.total + 2 + 2  # b and then c of rows 2 and 5
    assert m.in_flight.t == sorted(m.in_flight.t)  # the second session comes after the first
    # The second session is laid after the first one's traced span (not its wall time, which includes
    # writing the run directory: comparing with it failed under load).
    second_start = read_trace(tmp_path / "run").session_starts[1]
    assert second_start > 0 and m.wall_s > second_start
    assert m.columns["b"].failed == 2 and m.columns["b"].done == 8


# ---- a trace read in chunks ----------------------------------------------------------------------


def synthetic_trace(seed: int) -> list[dict]:
    """Two sessions of a python column `p` making ctx calls to models m and n, and a column `q`: retries,
    failures with and without a class, waits, tokens; times with few digits, so many coincide."""
    rng = np.random.default_rng(seed)
    records = []
    for n in (300, 120):
        for i in range(n):
            ready = round(float(rng.uniform(0, 20)), 2)
            start = ready + round(float(rng.exponential(0.5)), 2)
            record = {"seq": i + 1, "row": i, "attempt": 1, "slot": int(rng.integers(0, 8)), "t_ready": ready,
                      "t_start": start, "t_end": start + round(float(rng.exponential(1.0)), 2),
                      "status": str(rng.choice(["done", "done", "done", "retry", "failed", "timeout"])),
                      "column": str(rng.choice(["p", "q", "p:llm"])), "retry_after_s": None}  # fmt: skip
            if record["status"] != "done":
                record["error_class"] = str(rng.choice(["ValueError", "RateLimitError"])) if i % 3 else None
                record["retry_after_s"] = 0.5 if record["status"] == "retry" else None
            if record["column"] == "p:llm":
                record.update(model=str(rng.choice(["m", "n"])), parent="p", tokens_in=i, tokens_out=2 * i)
            records.append(record)
    records[0]["column"] = "p"  # p's first line is its own: the calls are `p:llm`
    return records


@pytest.mark.parametrize("seed", [1, 2])
def test_metrics_of_a_trace_read_in_chunks_are_those_of_the_whole_trace(tmp_path, monkeypatch, seed):
    """Chunks of 7 records, blocks of 16 interval starts: the same metrics, series included, and the
    series are step_series of the cells' and the model's intervals."""
    pq.write_table(pa.Table.from_pylist(synthetic_trace(seed), schema=SCHEMA), tmp_path / "trace.parquet")
    summary = {"wall_s": 10.0, "limits": {"slots": {"total": 8, "peak": 8}, "model:m": {"total": 4, "peak": 4}}}
    prices = {"m": {"input_per_1m": 1.0, "output_per_1m": 2.0}}
    whole = measure_run(tmp_path, prices, summary=summary, trace=read_trace(tmp_path), max_points=40)
    monkeypatch.setattr(metrics, "TraceChunks", functools.partial(TraceChunks, batch_rows=7))
    monkeypatch.setattr(open_intervals, "BLOCK_EVENTS", 16)
    chunked = measure_run(tmp_path, prices, summary=summary, max_points=40)
    assert chunked.trace.sessions == 2 and chunked.models["m"].in_flight.exact is False
    assert chunked.to_json() == whole.to_json()
    trace = read_trace(tmp_path)
    children = [name for name, column in chunked.columns.items() if column.parent is not None]
    own = ~np.isin(trace.codes["column"], [trace.names["column"].index(name) for name in children])
    m = trace.codes["model"] == trace.names["model"].index("m")
    for series, (starts, ends) in [
        (chunked.in_flight, (trace.t_start[own], trace.t_end[own])),
        (chunked.queued, (trace.t_ready[own], trace.t_start[own])),
        (chunked.models["m"].in_flight, (trace.t_start[m], trace.t_end[m])),
    ]:
        times, values, _, exact = step_series(starts, ends, 40)
        assert (series.t, series.v, series.exact) == ([round(t, 6) for t in times], values, exact)


# ---- the helpers ----------------------------------------------------------------------------------


def test_step_series_counts_open_intervals_and_touching_ones_do_not_overlap():
    times, values, peak, exact = step_series([1.0, 2.0, 2.0], [2.0, 3.0, 4.0])
    assert (times, values, peak, exact) == ([0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 2, 1, 0], 2, True)
    assert step_series([], []) == ([0.0], [0], 0, True)
    starts = np.arange(1000, dtype=np.float64)
    ends = starts + 1.5  # two open at once nearly everywhere
    reduced = step_series(starts, ends, max_points=50)
    assert reduced[2] == 2 and max(reduced[1]) == 2 and not reduced[3] and len(reduced[0]) <= 50


def test_percentiles_histogram_and_bucket_widths():
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert percentiles([1.0, 2.0, 3.0], (50,)) == {"p50": 2.0}
    assert histogram([0.1, 0.9, 1.5, 7.0], 1.0, 3) == [2, 1, 1]  # later ones count in the last bucket
    assert [nice_width(span, 10) for span in (10, 30, 70, 0.5)] == pytest.approx([1, 5, 10, 0.05])


def test_limit_history_from_an_events_file_and_from_summary_json(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                json.dumps({"type": "run_started", "t": 0.0}),
                json.dumps({"type": "limit_changed", "t": 1.5, "limit": "slots", "old": 4, "new": 8}),
                "not json",
                json.dumps({"type": "limit_changed", "t": 3.0, "limit": "slots", "old": 8, "new": 2}),
            ]
        )
    )
    assert read_limit_history(events) == {"slots": [(0.0, 4), (1.5, 8), (3.0, 2)]}
    summary = RunSummary.from_json({"limit_history": {"slots": [[0.0, 4], [1.0, 6]]}})  # an older, partial one
    assert limit_history(summary, session_start=10.0) == {"slots": [(0.0, 4), (11.0, 6)]}
    assert limit_history(summary, events) == read_limit_history(events)  # the events file wins
    history = [(0.0, 4), (1.5, 8), (3.0, 2)]
    assert history_from(history, 2.0) == [(0.0, 8), (1.0, 2)]
    assert capacity_s([(0.0, 4), (1.5, 8), (3.0, 2), (4.0, 2)], wall=4.0) == pytest.approx(4 * 1.5 + 8 * 1.5 + 2)


def test_prices_given_override_the_pipelines_model_by_model(tmp_path):
    records = [
        {"column": "a", "model": "m", "status": "done", "t_ready": 0.0, "t_start": 0.0, "t_end": 1.0, "slot": 0,
         "tokens_in": 1_000_000, "tokens_out": 2_000_000},
        {"column": "b", "model": "n", "status": "done", "t_ready": 0.0, "t_start": 0.0, "t_end": 1.0, "slot": 1,
         "tokens_in": 1_000_000, "tokens_out": 0},
    ]  # fmt: skip
    pipeline_prices = {"m": {"input_per_1m": 1.0, "output_per_1m": 2.0}, "n": {"input_per_1m": 3.0, "output_per_1m": 0}}
    trace = trace_columns(records)
    # summary.json keeps the pipeline's prices with its metrics, as a run writes them
    measured = measure_run(tmp_path, pipeline_prices, summary=RunSummary(wall_s=1.0), trace=trace)
    kept = measured.summary_metrics(pipeline_prices)
    summary = RunSummary(wall_s=1.0, metrics=kept)
    given = {"m": {"input_per_1m": 0.5, "output_per_1m": 0.5}}
    m = measure_run(tmp_path, given, summary=summary, trace=trace)
    assert (m.models["m"].cost, m.models["n"].cost) == (1.5, 3.0)
    assert m.cost is not None and (m.cost.total, m.cost.unpriced_models) == (4.5, [])
    with pytest.raises(ValueError, match="needs input_per_1m and output_per_1m"):
        check_prices({"m": {"input_per_1m": 1}})
    with pytest.raises(ValueError, match="finite and >= 0"):
        check_prices({"m": {"input_per_1m": float("inf"), "output_per_1m": 1}})
