"""Exports of a run's traces: the Chrome trace event format, metrics, and the console and HTML reports.

Real runs (python and template columns with retries and failures; LLM columns and ctx calls against
the simulator) are exported, and the exports are checked against the trace event format's rules and
against what the run itself recorded (its trace, summary.json, output.parquet). On a fixed run
(tests/data/fixed_run: the records and summary.json of a run and its resume), `treadle report` and the
Chrome export give what they gave when the trace was trace.jsonl.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import json
import math
import random
import re
import shutil
import subprocess
import sys
from array import array
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

import treadle
from treadle.cli import main as treadle_main
from treadle.engine.analysis.chrome_trace import (
    MODELS_PID,
    QUEUE_PID,
    SLOT_TID_BASE,
    SLOTS_PID,
    assign_lanes,
    export_chrome,
)
from treadle.engine.analysis.metrics import run_metrics
from treadle.engine.analysis.series import step_series
from treadle.engine.analysis.summary import NO_TRACE_NOTE
from treadle.engine.errors import ConfigError
from treadle.engine.trace_reader import TraceReader, read_trace, trace_columns
from treadle.engine.trace_schema import SCHEMA
from treadle.report import print_report, render_html, sparkline, write_html_report
from treadle.sim import SimConfig, SimulatorThread

PROBE_DIR = Path(__file__).parent / "data" / "probe"
PRICES = {"m": {"input_per_1m": 0.15, "output_per_1m": 0.6}}


# ---- the trace event format's rules ----------------------------------------------------------------

_PHASES = set("BEXiICbenstfMPOND(),") | {"R"}
_METADATA = {"process_name", "thread_name", "process_sort_index", "thread_sort_index", "process_labels"}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def load_trace(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle, parse_constant=_reject_constant)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_trace(trace: dict) -> list[dict]:
    """Check a Chrome trace (JSON object format) against the format's rules; returns its events."""
    assert isinstance(trace, dict), "the JSON object format: {traceEvents: [...], ...}"
    assert trace.get("displayTimeUnit") in ("ms", "ns")
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    for event in events:
        assert isinstance(event, dict), event
        ph = event.get("ph")
        assert isinstance(ph, str) and ph in _PHASES, event
        assert isinstance(event.get("name"), str) and event["name"], event
        assert isinstance(event.get("pid"), int) and not isinstance(event["pid"], bool), event
        if "tid" in event:
            assert isinstance(event["tid"], int) and not isinstance(event["tid"], bool), event
        if "cat" in event:
            assert isinstance(event["cat"], str), event
        if "args" in event:
            assert isinstance(event["args"], dict), event
        if ph != "M":
            assert _number(event.get("ts")) and event["ts"] >= 0, event
        if ph == "X":
            assert "tid" in event, event
            assert _number(event.get("dur")) and event["dur"] >= 0, event
        elif ph == "C":
            assert event.get("args"), event
            assert all(_number(v) for v in event["args"].values()), event
        elif ph == "M":
            assert event["name"] in _METADATA, event
            if event["name"] in ("process_name", "thread_name"):
                assert isinstance(event["args"].get("name"), str), event
            if event["name"].endswith("sort_index"):
                assert isinstance(event["args"].get("sort_index"), int), event
            if event["name"].startswith("thread_"):
                assert "tid" in event, event
        elif ph in "iI":
            assert event.get("s", "t") in ("g", "p", "t"), event
    return events


def x_events(events: list[dict], cat: str | None = None) -> list[dict]:
    return [e for e in events if e["ph"] == "X" and (cat is None or e.get("cat") == cat)]


def thread_names(events: list[dict], pid: int) -> dict[int, str]:
    return {
        e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == pid
    }


def counters(events: list[dict]) -> dict[tuple[int, str], list[tuple[float, float]]]:
    series = defaultdict(list)
    for e in events:
        if e["ph"] == "C":
            [(_, value)] = e["args"].items()
            series[(e["pid"], e["name"])].append((e["ts"], value))
    return series


def assert_lanes_do_not_overlap(events: list[dict]) -> None:
    by_track = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by_track[(e["pid"], e["tid"], e["cat"] == "queue")].append((e["ts"], e["ts"] + e["dur"]))
    for track, spans in by_track.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.002, f"overlapping spans on {track}"


def read_traces(run_dir: Path) -> list[dict]:
    return list(TraceReader(run_dir))


# ---- runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_run(tmp_path_factory, module_probe) -> Path:
    """30 rows: column a retries rows 1, 4 and 17 once; column b fails rows 6 and 20 (c is blocked there)."""
    tmp = tmp_path_factory.mktemp("python_run")
    pd.DataFrame({"id": range(30)}).to_csv(tmp / "seed.csv", index=False)
    module_probe.flaky_once_rows = {1, 4, 17}
    module_probe.failing_rows = {6, 20}
    config = {
        "seed": {"path": str(tmp / "seed.csv")},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky_once"},
            {"name": "b", "kind": "python", "function": "probe_cols:flaky", "depends_on": ["a"]},
            {"name": "c", "kind": "template", "template": "{{ a }}-{{ b }}"},
        ],
        "run": {"row_group_size": 5, "max_parallel": 4, "backoff_s": 0, "salvage_rounds": 0},
    }
    result = treadle.run(config, base_dir=PROBE_DIR, out=tmp / "run")
    assert result.status == "failed"
    return tmp / "run"


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory) -> Path:
    """An llm column, a template, and a python column calling the model three times through ctx."""
    tmp = tmp_path_factory.mktemp("llm_run")
    pd.DataFrame({"id": range(12), "q": [f"question {i}" for i in range(12)]}).to_csv(tmp / "seed.csv", index=False)
    with SimulatorThread(SimConfig(latency_ms=20)) as url:
        config = {
            "seed": {"path": str(tmp / "seed.csv")},
            "models": {"m": {"model": "sim-model", "base_url": url, "max_parallel": 3}},
            "columns": [
                {"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ q }}"},
                {"name": "b", "kind": "template", "template": "{{ a }}!"},
                {"name": "three", "kind": "python", "function": "ctx_cols:ask_three"},
            ],
            "run": {"row_group_size": 4, "max_parallel": 6, "backoff_s": 0},
        }
        result = treadle.run(config, base_dir=PROBE_DIR, out=tmp / "run")
    assert result.status == "done"
    return tmp / "run"


# ---- Chrome trace ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["python_run", "llm_run"])
def test_chrome_export_follows_the_format_and_holds_every_attempt(which, request, tmp_path):
    run_dir: Path = request.getfixturevalue(which)
    traces = read_traces(run_dir)
    out = tmp_path / "trace.json"
    written = export_chrome(run_dir, out)
    events = validate_trace(load_trace(out))
    assert written == len(events)

    # One `attempt` event per trace line, with the line's fields.
    attempts = x_events(events, "attempt")
    assert len(attempts) == len(traces)
    by_seq = {e["args"]["seq"]: e for e in attempts}
    for t in traces:
        e = by_seq[t["seq"]]
        assert e["name"] == t["column"]
        for key in ("row", "column", "attempt", "status", "error_class", "message", "tokens_in", "tokens_out"):
            assert e["args"][key] == t[key]
        assert e["ts"] == pytest.approx(t["t_start"] * 1e6, abs=0.01)
        assert e["dur"] == pytest.approx((t["t_end"] - t["t_start"]) * 1e6, abs=0.01)
        assert e["args"]["queue_wait_ms"] == pytest.approx((t["t_start"] - t["t_ready"]) * 1e3, abs=1e-3)
        if t["parent"] is None:
            assert (e["pid"], e["tid"]) == (SLOTS_PID, SLOT_TID_BASE + t["slot"])
        else:
            assert e["pid"] == MODELS_PID and e["args"]["parent"] == t["parent"]
        assert e["args"].get("retry_after_s") == t["retry_after_s"]
    if which == "python_run":  # its flaky column asks for 10 ms before each retry
        assert {t["retry_after_s"] for t in traces if t["status"] == "retry"} == {0.01}

    # A thread per execution slot lane, named after it; each lane ran one cell at a time.
    lanes = {t["slot"] for t in traces if t["parent"] is None}
    assert thread_names(events, SLOTS_PID) == {SLOT_TID_BASE + s: f"slot {s}" for s in lanes}
    process_names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert process_names[SLOTS_PID] == "slots" and process_names[QUEUE_PID] == "queue"
    assert_lanes_do_not_overlap(events)

    # Queue waits: one span per attempt that waited, on the queue process.
    waits = x_events(events, "queue")
    assert len(waits) == sum(1 for t in traces if t["parent"] is None and t["t_start"] > t["t_ready"])
    assert {e["pid"] for e in waits} == {QUEUE_PID}

    # Counters: cells in flight (from the traces), queued, and the slot limit from summary.json.
    series = counters(events)
    in_flight = [v for _, v in series[(SLOTS_PID, "cells in flight")]]
    assert max(in_flight) >= 1 and in_flight[-1] == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert max(in_flight) <= summary["limits"]["slots"]["peak"]
    assert {v for _, v in series[(SLOTS_PID, "slot limit")]} == {summary["limits"]["slots"]["total"]}
    assert series[(QUEUE_PID, "cells queued")][-1][1] == 0
    for key, points in series.items():
        times = [ts for ts, _ in points]
        assert times == sorted(times), key


def test_chrome_export_of_model_requests_and_ctx_calls(llm_run, tmp_path):
    traces = read_traces(llm_run)
    export_chrome(llm_run, tmp_path / "t.json")
    events = validate_trace(load_trace(tmp_path / "t.json"))
    # Every request to the model is on the model's lanes: llm column attempts (cat request) and ctx calls.
    on_model = [e for e in x_events(events) if e["pid"] == MODELS_PID]
    assert len(on_model) == sum(1 for t in traces if t["model"] == "m")
    assert {e["args"]["column"] for e in on_model} == {"a", "three:llm"}
    names = thread_names(events, MODELS_PID)
    assert names and all(re.fullmatch(r"m #\d+", name) for name in names.values())
    assert len(names) <= 3, "packed lanes: never more than the requests in flight at once (the limit is 3)"
    series = counters(events)
    in_flight = [v for _, v in series[(MODELS_PID, "m in flight")]]
    assert 1 <= max(in_flight) <= 3 and in_flight[-1] == 0
    assert {v for _, v in series[(MODELS_PID, "m limit")]} == {3}

    # Without the copies on the model lanes and without queue spans, only the attempts remain as X.
    export_chrome(llm_run, tmp_path / "lean.json", queue_spans=False, model_requests=False)
    lean = validate_trace(load_trace(tmp_path / "lean.json"))
    assert len(x_events(lean)) == len(x_events(lean, "attempt")) == len(traces)
    assert counters(lean)[(MODELS_PID, "m in flight")] == series[(MODELS_PID, "m in flight")]
    assert {e["args"]["column"] for e in x_events(lean) if e["pid"] == MODELS_PID} == {"three:llm"}


def test_chrome_export_gzip_limit_changes_and_no_trace(python_run, tmp_path):
    events_file = tmp_path / "events.jsonl"
    events_file.write_text(
        json.dumps({"type": "run_started", "t": 0.0}) + "\n"
        + json.dumps({"type": "limit_changed", "t": 0.01, "limit": "slots", "old": 4, "new": 2}) + "\n"
    )  # fmt: skip
    out = tmp_path / "trace.json.gz"
    written = export_chrome(python_run, out, events=events_file)
    events = validate_trace(load_trace(out))
    assert written == len(events)
    limit = counters(events)[(SLOTS_PID, "slot limit")]
    assert [v for _, v in limit] == [4, 2, 2]
    assert limit[1][0] == pytest.approx(10_000)
    assert not list(tmp_path.glob("*.tmp"))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no trace"):
        export_chrome(empty, tmp_path / "x.json")


def test_resumed_sessions_are_laid_end_to_end_and_a_torn_batch_skipped(tmp_path):
    def attempt(seq: int, start: float, end: float) -> dict:
        return {"seq": seq, "row": seq, "column": "a", "attempt": 1, "slot": 0, "t_ready": start, "t_start": start,
                "t_end": end, "status": "done"}  # fmt: skip

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A first session of 2 s in trace.parquet, then a resume whose times start again at 0, killed while
    # its stream's third batch was being written.
    pq.write_table(
        pa.Table.from_pylist([attempt(1, 0.0, 1.0), attempt(2, 1.0, 2.0)], SCHEMA), run_dir / "trace.parquet"
    )
    with pa.OSFile(str(run_dir / "trace.arrows"), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as stream:
        for record in (attempt(1, 0.0, 0.5), attempt(2, 0.5, 1.5), attempt(3, 1.5, 9.0)):
            stream.write_table(pa.Table.from_pylist([record], SCHEMA))
            whole = sink.tell()
    with open(run_dir / "trace.arrows", "r+b") as handle:
        handle.truncate(whole - 8)
    (run_dir / "summary.json").write_text(json.dumps({"name": "r", "status": "done", "wall_s": 1.6}))
    m = run_metrics(run_dir)
    assert m["trace"] == {"lines": 4, "skipped": 1, "sessions": 2}
    assert m["wall_s"] == pytest.approx(3.6)
    assert m["in_flight"]["t"] == sorted(m["in_flight"]["t"])
    assert m["concurrency"]["busy_slot_s"] == pytest.approx(3.5)
    export_chrome(run_dir, tmp_path / "t.json")
    events = validate_trace(load_trace(tmp_path / "t.json"))
    [resumed] = [e for e in events if e["ph"] == "i"]
    assert resumed["name"] == "resumed" and resumed["ts"] == pytest.approx(2e6)
    assert sorted(e["ts"] for e in x_events(events, "attempt")) == pytest.approx([0, 1e6, 2e6, 2.5e6])


def test_lanes_never_overlap_and_are_as_few_as_the_peak_overlap():
    rng = random.Random(5)
    spans = [(s, s + rng.expovariate(1.0)) for s in (rng.uniform(0, 50) for _ in range(2000))]
    spans += [(10.0, 11.0), (11.0, 12.0)]  # touching spans may share a lane
    starts, ends = array("d", [s for s, _ in spans]), array("d", [e for _, e in spans])
    lanes, count = assign_lanes(starts, ends)
    placed = defaultdict(list)
    for lane, span in zip(lanes, spans, strict=True):
        placed[lane].append(span)
    assert sorted(placed) == list(range(count))
    for lane in placed.values():
        lane.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(lane))
    assert count == step_series(starts, ends)[2]
    assert assign_lanes(array("d"), array("d")) == (array("i"), 0)


def test_step_series_is_exact_when_small_and_keeps_peaks_when_reduced():
    starts, ends = array("d", [0.0, 1.0, 2.0, 2.0]), array("d", [2.0, 3.0, 2.5, 4.0])
    times, values, peak, exact = step_series(starts, ends)
    assert exact and peak == 3
    assert list(zip(times, values, strict=True)) == [(0.0, 1), (1.0, 2), (2.0, 3), (2.5, 2), (3.0, 1), (4.0, 0)]
    rng = random.Random(1)
    begin = [rng.uniform(0, 100) for _ in range(5000)]
    starts = array("d", begin)
    ends = array("d", [b + rng.uniform(0.001, 0.5) for b in begin])
    starts.append(50.0)
    ends.append(50.0001)
    full = step_series(starts, ends, max_points=10**9)
    reduced = step_series(starts, ends, max_points=200)
    assert full[3] and not reduced[3]
    assert len(reduced[0]) <= 200
    assert max(reduced[1]) == full[2] == reduced[2]
    assert reduced[1][-1] == 0


# ---- metrics ---------------------------------------------------------------------------------------


def test_metrics_agree_with_the_traces_summary_and_failures(python_run):
    traces = read_traces(python_run)
    summary = json.loads((python_run / "summary.json").read_text())
    failures = [json.loads(line) for line in (python_run / "failures.jsonl").read_text().splitlines()]
    m = run_metrics(python_run)
    statuses = Counter(t["status"] for t in traces)
    assert m["attempts"]["total"] == len(traces)
    assert m["errors"]["retries"] == statuses["retry"] == 3
    assert m["errors"]["failed_attempts"] == statuses["failed"] == len(failures) == 2
    assert m["errors"]["by_class"]["RetryableCellError"]["retry"] == 3
    assert m["errors"]["by_class"]["ValueError"]["failed"] == 2
    assert sum(m["throughput"]["done"]) == statuses["done"]
    assert sum(m["throughput"]["failed"]) == statuses["failed"]
    assert m["wall_s"] == pytest.approx(summary["wall_s"])

    for name, column in m["columns"].items():
        runs = sorted(t["t_end"] - t["t_start"] for t in traces if t["column"] == name and t["status"] == "done")
        assert column["done"] == len(runs)
        assert column["attempts"] == sum(1 for t in traces if t["column"] == name)
        for q in ("p50", "p95", "p99"):
            assert column["latency_s"][q] == pytest.approx(summary["columns"][name]["latency_s"][q], abs=1e-5)
        waits = [t["t_start"] - t["t_ready"] for t in traces if t["column"] == name]
        assert column["queue_wait_s"]["total"] == pytest.approx(sum(waits), abs=1e-5)

    conc = m["concurrency"]
    limit = summary["limits"]["slots"]["total"]
    assert conc["slot_limit"] == limit == 4
    assert 0 < conc["parallel_efficiency"] <= limit
    # summary.json rounds wall_s to ms: on a run of ~0.1 s that moves the ratio by up to ~1%.
    assert conc["parallel_efficiency"] == pytest.approx(summary["parallel_efficiency"], rel=0.03)
    assert 0 < conc["slot_utilisation"] <= 1
    assert conc["efficiency_share_of_limit"] == pytest.approx(conc["parallel_efficiency"] / limit, abs=1e-5)
    assert 1 <= conc["peak_in_flight"] <= summary["limits"]["slots"]["peak"]
    assert conc["peak_in_flight"] == max(m["in_flight"]["v"]) and m["in_flight"]["v"][-1] == 0
    assert conc["lanes_used"] == len({t["slot"] for t in traces})
    busy = sum(t["t_end"] - t["t_start"] for t in traces)
    assert conc["busy_slot_s"] == pytest.approx(busy, abs=1e-4)
    assert m["time"]["queue_wait_s"] == pytest.approx(sum(t["t_start"] - t["t_ready"] for t in traces), abs=1e-4)
    assert m["tokens"] == {"in": 0, "out": 0} and m["cost"] is None
    json.dumps(m)  # JSON-ready


def test_metrics_count_tokens_once_and_price_them(llm_run):
    out = pd.read_parquet(llm_run / "output.parquet")
    traces = read_traces(llm_run)
    m = run_metrics(llm_run, prices=PRICES)
    a_in = sum(u["prompt_tokens"] for u in out["a__usage"])
    a_out = sum(u["completion_tokens"] for u in out["a__usage"])
    three_in = sum(u["prompt_tokens"] for u in out["three__usage"])
    three_out = sum(u["completion_tokens"] for u in out["three__usage"])
    columns = m["columns"]
    assert (columns["a"]["tokens_in"], columns["a"]["tokens_out"]) == (a_in, a_out)
    # The python column's usage sums its ctx calls: counted on the calls, not twice.
    assert (columns["three:llm"]["tokens_in"], columns["three:llm"]["tokens_out"]) == (three_in, three_out)
    assert columns["three"]["tokens_counted_in"] == "three:llm"
    assert m["tokens"] == {"in": a_in + three_in, "out": a_out + three_out}
    price = PRICES["m"]
    expected = (a_in + three_in) / 1e6 * price["input_per_1m"] + (a_out + three_out) / 1e6 * price["output_per_1m"]
    assert m["cost"]["total"] == pytest.approx(expected, abs=1e-6)
    assert m["models"]["m"]["cost"] == pytest.approx(expected, abs=1e-6)
    assert m["cost"]["unpriced_models"] == []
    model = m["models"]["m"]
    assert model["requests"] == sum(1 for t in traces if t["model"] == "m")
    assert 1 <= model["peak_in_flight"] <= model["limit"]["total"] == 3
    assert m["calls"]["done"] == 36  # 12 rows x 3 ctx calls
    assert m["concurrency"]["peak_in_flight"] <= 6

    unpriced = run_metrics(llm_run, prices={"other": {"input_per_1m": 1, "output_per_1m": 1}})
    assert unpriced["cost"] == {"total": 0.0, "unpriced_models": ["m"]}
    with pytest.raises(ValueError, match="input_per_1m and output_per_1m"):
        run_metrics(llm_run, prices={"m": {"input": 1}})
    with pytest.raises(ValueError, match=">= 0"):
        run_metrics(llm_run, prices={"m": {"input_per_1m": -1, "output_per_1m": 1}})


def test_metrics_need_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        run_metrics(tmp_path)


def test_engine_exports_import_no_ui():
    code = (
        "import sys, treadle.engine.analysis.chrome_trace, treadle.engine.analysis.summary; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rich', 'textual')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- reports ---------------------------------------------------------------------------------------

HEADINGS = (
    "Where did the time go",
    "What was my real concurrency",
    "What did it cost",
    "Retries and errors",
    "Throughput",
)


def test_print_report_answers_the_questions(python_run, llm_run):
    console = Console(record=True, width=160, color_system=None)
    print_report(python_run, console)
    text = console.export_text()
    for heading in HEADINGS:
        assert heading in text
    assert "RetryableCellError" in text and "ValueError" in text
    assert "the endpoint asked to wait (Retry-After) 3 times, 0.03 s in all" in text
    assert "peak cells in flight" in text and "of 4" in text
    summary = json.loads((python_run / "summary.json").read_text())
    busy = summary["engine_cpu_s"] / summary["wall_s"]
    assert f"engine loop busy (its CPU / wall) {busy:.1%}" in " ".join(text.replace("│", " ").split())
    assert "no model calls: nothing to pay for" in text

    console = Console(record=True, width=160, color_system=None)
    print_report(llm_run, console)
    assert "no prices given" in console.export_text()
    console = Console(record=True, width=160, color_system=None)
    print_report(llm_run, console, prices=PRICES)
    text = console.export_text()
    assert "three:llm" in text and "(counted in three:llm)" in text
    assert "model m: peak requests in flight" in text
    assert "no retries and no errors" in text
    cost = run_metrics(llm_run, prices=PRICES)["cost"]["total"]
    assert f"{cost:,.4f}" in text


def test_html_report_is_self_contained_with_charts(python_run, llm_run, tmp_path):
    for run_dir in (python_run, llm_run):
        out = tmp_path / f"{run_dir.parent.name}.html"
        write_html_report(run_dir, out, prices=PRICES)
        page = out.read_text(encoding="utf-8")
        assert page.startswith("<!doctype html>")
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
        assert "http://" not in page and "https://" not in page
        assert "<script" not in page and "<link" not in page and "@import" not in page
        assert page.count("<svg") >= 3
        for heading in HEADINGS:
            assert heading in page
        assert "Cells in flight and the slot limit" in page
        assert not list(tmp_path.glob("*.tmp"))
    assert "Model m: requests in flight" in page


def test_html_escapes_what_the_run_wrote(python_run):
    m = run_metrics(python_run)
    m["columns"] = {"<img src=x>": next(iter(m["columns"].values()))}
    m["name"] = "<script>alert(1)</script>"
    page = render_html(m)
    assert "<img src=x>" not in page and "<script>" not in page
    assert "&lt;img src=x&gt;" in page


def test_sparkline():
    assert sparkline([]) == ""
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert len(sparkline(list(range(500)), width=40)) == 40


def test_a_run_without_traces_is_reported_from_its_summary(tmp_path):
    pd.DataFrame({"name": ["ann", "bob"]}).to_csv(tmp_path / "seed.csv", index=False)
    config = {
        "seed": {"path": str(tmp_path / "seed.csv")},
        "columns": [{"name": "hi", "kind": "template", "template": "hi {{ name }}"}],
        "run": {"trace": False},
    }
    run_dir = tmp_path / "run"
    result = treadle.run(config, base_dir=tmp_path, out=run_dir)
    assert result.status == "done"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"] == {"note": NO_TRACE_NOTE} == result.summary["metrics"]
    assert summary["limit_history"]["slots"] == [[0.0, summary["limits"]["slots"]["total"]]]
    m = run_metrics(run_dir)
    assert not m["has_trace"] and m["status"] == "done" and m["wall_s"] > 0
    console = Console(record=True, width=160, color_system=None)
    print_report(run_dir, console)
    text = console.export_text()
    assert "no trace" in text and "Columns (from summary.json)" in text and "hi" in text
    write_html_report(run_dir, tmp_path / "r.html")
    assert "Columns (from summary.json)" in (tmp_path / "r.html").read_text()
    with pytest.raises(ConfigError):
        export_chrome(run_dir, tmp_path / "t.json")


# ---- the fixed run, JSON lines, and the two readers ----------------------------------------------

FIXED_RUN = Path(__file__).parent / "data" / "fixed_run"
"""trace.jsonl and summary.json of a run (python columns with retries and failures, an llm column, ctx
calls) and its resume, and in expected/ what `treadle report` (text and HTML) and `treadle trace --chrome`
made of them when the trace was trace.jsonl (commit 75f4db8; the run directory's path as RUN_DIR)."""


@pytest.fixture
def fixed_run(tmp_path) -> Path:
    """The fixed run's directory, its records in trace.parquet."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(FIXED_RUN / "summary.json", run_dir)
    records = [json.loads(line) for line in (FIXED_RUN / "trace.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(records, SCHEMA), run_dir / "trace.parquet")
    return run_dir


def test_report_and_chrome_export_of_a_fixed_run_are_unchanged(fixed_run, tmp_path):
    expected = FIXED_RUN / "expected"
    console = Console(record=True, width=160, color_system=None, file=io.StringIO())
    print_report(fixed_run, console)
    assert console.export_text().replace(str(fixed_run), "RUN_DIR") == (expected / "report.txt").read_text()
    write_html_report(fixed_run, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text().replace(str(fixed_run), "RUN_DIR")
    assert html == (expected / "report.html").read_text()
    export_chrome(fixed_run, tmp_path / "c.json")
    assert (tmp_path / "c.json").read_text() == (expected / "chrome.json").read_text()


def assert_same_columns(one, other) -> None:
    assert one.names == other.names
    for name in one.codes:
        assert one.codes[name].tolist() == other.codes[name].tolist(), name
    for name in ("t_ready", "t_start", "t_end", "slot", "has_slot", "tokens_in", "tokens_out", "retry_after"):
        assert getattr(one, name).tolist() == getattr(other, name).tolist(), name
    assert (one.lines, one.skipped, one.session_starts, one.span_s) == (
        other.lines, other.skipped, other.session_starts, other.span_s
    )  # fmt: skip


def test_columns_of_the_records_read_one_by_one_are_those_read_at_once(fixed_run):
    reader = TraceReader(fixed_run)
    records = list(reader)
    assert reader.sessions == 2 and {r["session"] for r in records} == {0, 1}
    sessions = {"skipped": reader.skipped, "session_starts": reader.session_starts, "span_s": reader.span_s}
    one_by_one = dataclasses.replace(trace_columns(records), **sessions)
    assert_same_columns(read_trace(fixed_run), one_by_one)


@pytest.mark.parametrize("which", ["python_run", "llm_run"])
def test_the_jsonl_export_round_trips_the_records(which, request, tmp_path):
    run_dir: Path = request.getfixturevalue(which)
    assert treadle_main(["trace", str(run_dir), "--jsonl", str(tmp_path / "t.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines == pq.read_table(run_dir / "trace.parquet").to_pylist()
    assert list(lines[0]) == list(SCHEMA.names)
    # Made a trace again, the lines give the same trace.
    (tmp_path / "back").mkdir()
    pq.write_table(pa.Table.from_pylist(lines, SCHEMA), tmp_path / "back" / "trace.parquet")
    assert_same_columns(read_trace(tmp_path / "back"), read_trace(run_dir))
