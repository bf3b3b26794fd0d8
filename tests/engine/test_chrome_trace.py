"""treadle.engine.analysis.chrome_trace: a tiny real run's trace (written by the engine's own
trace writer) exported to the Chrome trace event format, checked event by event against the lines."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import sys
from array import array
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.analysis.chrome_trace import (
    QUEUE_PID,
    SLOT_TID_BASE,
    SLOTS_PID,
    assign_lanes,
    export_chrome,
)
from treadle.engine.analysis.series import step_series
from treadle.engine.trace_reader import read_table

PROBE_DIR = Path(__file__).parents[1] / "data" / "probe"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """10 rows on 3 slots: a retries rows 2 and 7 once; b fails row 5 for good."""
    if str(PROBE_DIR) not in sys.path:
        sys.path.insert(0, str(PROBE_DIR))
    import probe_cols

    tmp = tmp_path_factory.mktemp("chrome_run")
    pd.DataFrame({"id": range(10)}).to_csv(tmp / "seed.csv", index=False)
    probe_cols.probe.reset()
    probe_cols.probe.flaky_once_rows = {2, 7}
    probe_cols.probe.failing_rows = {5}
    config = {
        "seed": {"path": str(tmp / "seed.csv")},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky_once"},
            {"name": "b", "kind": "python", "function": "probe_cols:flaky", "depends_on": ["a"]},
        ],
        "run": {"row_group_size": 5, "max_parallel": 3, "backoff_s": 0, "salvage_rounds": 0},
    }
    try:
        result = treadle.run(config, base_dir=PROBE_DIR, out=tmp / "run")
    finally:
        probe_cols.probe.reset()
    assert result.status == "failed"
    return tmp / "run"


def export(run_dir: Path, out: Path, **options) -> tuple[int, list[dict]]:
    written = export_chrome(run_dir, out, **options)
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(out, "rt", encoding="utf-8") as handle:
        events = json.load(handle)["traceEvents"]
    assert written == len(events)
    return written, events


def trace_lines(run_dir: Path) -> list[dict]:
    return read_table(run_dir)[0].to_pylist()


def counter(events: list[dict], pid: int, name: str) -> list[tuple[float, int]]:
    return [(e["ts"], *e["args"].values()) for e in events if e["ph"] == "C" and e["pid"] == pid and e["name"] == name]


def test_assign_lanes_packs_intervals_into_as_few_lanes_as_they_overlap():
    lanes, count = assign_lanes(array("d", [0.0, 1.0, 0.5, 2.0]), array("d", [1.0, 2.0, 3.0, 2.5]))
    # 0-1 and 1-2 touch (no overlap): one lane; 0.5-3 overlaps both; 2-2.5 takes the first lane free by 2.
    assert (list(lanes), count) == ([0, 0, 1, 0], 2)
    assert assign_lanes(array("d"), array("d")) == (array("i"), 0)


def test_every_attempt_is_one_event_on_its_slot_with_the_line_as_args(run_dir, tmp_path):
    lines = trace_lines(run_dir)
    _, events = export(run_dir, tmp_path / "trace.json")
    attempts = {e["args"]["seq"]: e for e in events if e.get("cat") == "attempt"}
    assert len(attempts) == len(lines)
    for line in lines:
        event = attempts[line["seq"]]
        assert (event["name"], event["pid"], event["tid"]) == (line["column"], SLOTS_PID, SLOT_TID_BASE + line["slot"])
        assert event["ts"] == pytest.approx(line["t_start"] * 1e6, abs=1e-3)
        assert event["dur"] == pytest.approx((line["t_end"] - line["t_start"]) * 1e6, abs=1e-3)
        for key in ("row", "column", "attempt", "status", "error_class", "message", "tokens_in", "tokens_out"):
            assert event["args"][key] == line[key]
        assert event["args"]["queue_wait_ms"] == pytest.approx((line["t_start"] - line["t_ready"]) * 1e3, abs=1e-3)
        assert event.get("cname") == {"done": None, "retry": "bad", "failed": "terrible"}[line["status"]]
        assert event["args"].get("retry_after_s") == line["retry_after_s"]
    slots = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == 1}
    assert slots == {f"slot {line['slot']}" for line in lines}


def test_counters_are_the_step_series_of_the_lines_and_the_slot_limit(run_dir, tmp_path):
    lines = trace_lines(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    _, events = export(run_dir, tmp_path / "trace.json")
    times, values, _, exact = step_series([t["t_start"] for t in lines], [t["t_end"] for t in lines])
    assert exact
    in_flight = counter(events, SLOTS_PID, "cells in flight")
    assert [v for _, v in in_flight] == values
    assert [ts for ts, _ in in_flight] == pytest.approx([t * 1e6 for t in times], abs=1e-3)
    queued = counter(events, QUEUE_PID, "cells queued")
    assert [v for _, v in queued] == step_series([t["t_ready"] for t in lines], [t["t_start"] for t in lines])[1]
    limit = counter(events, SLOTS_PID, "slot limit")
    assert limit == [(0.0, 3), (pytest.approx(max(summary["wall_s"], lines[-1]["t_end"]) * 1e6, abs=1e3), 3)]


def test_queue_spans_are_the_waits_and_can_be_left_out(run_dir, tmp_path):
    lines = trace_lines(run_dir)
    waited = [t for t in lines if t["t_start"] > t["t_ready"]]
    written, events = export(run_dir, tmp_path / "trace.json")
    waits = sorted(e["dur"] for e in events if e.get("cat") == "queue")
    assert waits == pytest.approx(sorted((t["t_start"] - t["t_ready"]) * 1e6 for t in waited), abs=1e-3)
    assert {e["pid"] for e in events if e.get("cat") == "queue"} == {QUEUE_PID}
    lanes: dict[int, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("cat") == "queue":
            lanes.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in lanes.values():  # no two waits overlap on one lane
        spans.sort()
        assert all(end <= start + 1e-3 for (_, end), (start, _) in itertools.pairwise(spans))
    assert len(lanes) == max(step_series([t["t_ready"] for t in waited], [t["t_start"] for t in waited])[1])
    lean_written, lean = export(run_dir, tmp_path / "lean.json", queue_spans=False)
    assert not [
        e
        for e in lean
        if e.get("cat") == "queue" or (e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == QUEUE_PID)
    ]
    assert lean_written < written


def test_a_gz_name_writes_the_same_events_gzipped(run_dir, tmp_path):
    _, plain = export(run_dir, tmp_path / "trace.json")
    _, gzipped = export(run_dir, tmp_path / "trace.json.gz")
    assert gzipped == plain
    assert sorted(path.name for path in tmp_path.iterdir()) == ["trace.json", "trace.json.gz"]  # no .tmp left


def test_long_counters_are_reduced_but_keep_their_peak(run_dir, tmp_path):
    _, full = export(run_dir, tmp_path / "full.json")
    _, reduced = export(run_dir, tmp_path / "reduced.json", max_counter_points=6)
    full_series = counter(full, SLOTS_PID, "cells in flight")
    reduced_series = counter(reduced, SLOTS_PID, "cells in flight")
    assert len(reduced_series) <= 6 < len(full_series)
    assert max(v for _, v in reduced_series) == max(v for _, v in full_series)


def test_model_limits_and_adaptive_changes_from_summary_json(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["limits"]["model:m"] = {"total": 4, "peak": 4}
    summary["rate_limits"] = {"m": {"changes": [[0.002, 2, 60.0, "429 from endpoint"], [0.004, 3, None, "calm"]]}}
    (copy / "summary.json").write_text(json.dumps(summary))
    _, events = export(copy, tmp_path / "trace.json")
    models_pid = 2
    assert [v for _, v in counter(events, models_pid, "m limit")] == [4, 4]
    assert counter(events, models_pid, "m in flight") == [(0.0, 0)]  # no requests: the columns are python
    rate = [(e["ts"], e["args"]) for e in events if e["ph"] == "C" and e["name"] == "m rate"]
    assert rate == [(2000.0, {"adaptive": 2, "pace_rpm": 60.0}), (4000.0, {"adaptive": 3})]
    why = [(e["ts"], e["args"]["reason"]) for e in events if e["ph"] == "i" and e["name"] == "m limit adapted"]
    assert why == [(2000.0, "429 from endpoint"), (4000.0, "calm")]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {SLOTS_PID: "slots", models_pid: "models", QUEUE_PID: "queue"}
