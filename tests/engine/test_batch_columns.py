"""Batch python columns (`batch: true`): one call per row group with a DataFrame, through real runs."""

from __future__ import annotations

import json
import queue
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import treadle
from treadle.engine.analysis.chrome_trace import export_chrome
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions
from treadle.engine.trace_reader import TraceReader, read_trace
from treadle.sim import SimConfig, SimulatorThread

FUNCTIONS = """
import asyncio
import threading
import pandas as pd

ENTERED = threading.Event()
RELEASE = threading.Event()

def held(frame):
    ENTERED.set()
    RELEASE.wait(20)
    return frame["x"]

CALLS = []

def double(frame):
    CALLS.append(list(frame.index))
    return frame["x"] * 2

async def adouble(frame):
    await asyncio.sleep(0)
    return [v * 2 for v in frame["x"]]

def seen(frame):
    return [",".join(frame.columns)] * len(frame)

def pair(frame):
    return pd.DataFrame({"lo": frame["x"] - 1, "hi": frame["x"] + 1})

def pair_dict(frame):
    return {"lo": list(frame["x"] - 1), "hi": list(frame["x"] + 1)}

def short(frame):
    return frame["x"].iloc[:-1]

def scalar(frame):
    return 3

def only_lo(frame):
    return {"lo": list(frame["x"])}

def boom(frame):
    raise ValueError("no batch today")

def fail_on_odd(row):
    if row["x"] % 2:
        raise ValueError("odd")
    return row["x"]

async def sleepy(frame):
    await asyncio.sleep(30)  # sync-ok: a slow batch call that the test times out or aborts
    return frame["x"]

def call_sizes(frame):
    return [len(frame)] * len(frame)

FLAKY = {"left": 1}

def flaky(frame):
    if FLAKY["left"]:
        FLAKY["left"] -= 1
        raise TimeoutError("slow backend")
    return frame["x"] * 10

GATE = {"open": False}

def ask(frame, ctx):
    return ctx.llm_batch([f"q{x}" for x in frame["x"]])

async def aask(frame, ctx):
    return await ctx.allm_batch([f"q{x}" for x in frame["x"]])

def gated(frame):
    if not GATE["open"]:
        raise ValueError("closed")
    return frame["x"] + 100
"""


@pytest.fixture
def funcs(tmp_path: Path) -> Path:
    # A module name unique to each test, so module state (CALLS, FLAKY) starts fresh.
    name = f"batchfuncs_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FUNCTIONS))
    pd.DataFrame({"x": range(10)}).to_csv(tmp_path / "seed.csv", index=False)
    return tmp_path / name


def run(funcs: Path, columns: list[dict], **run: object) -> treadle.RunResult:
    return run_traced(funcs, columns, **run)[0]


def run_traced(funcs: Path, columns: list[dict], **run: object) -> tuple[treadle.RunResult, list[tuple]]:
    """The run's result and its attempts as (row, attempt, status)."""
    name = funcs.name
    for column in columns:
        if "function" in column:
            column["function"] = column["function"].replace("M:", f"{name}:")
    config = {"seed": {"path": str(funcs.parent / "seed.csv")}, "columns": columns, "run": run}
    controller = RunController(treadle.load(config, base_dir=funcs.parent), RunOptions(out=funcs.parent / "run"))
    result = controller.start().wait(60)
    assert result is not None
    return result, attempts(controller)


def attempts(controller: RunController) -> list[tuple]:
    return [(t.row, t.attempt, t.status) for t in controller.traces()[1]]


def module(funcs: Path):
    return sys.modules[funcs.name]


def test_a_batch_column_is_called_once_per_row_group_with_its_rows(funcs):
    result = run(funcs, [{"name": "d", "kind": "python", "function": "M:double", "batch": True}], row_group_size=4)
    assert result.exit_code == 0
    assert result.output["d"].tolist() == [2 * x for x in range(10)]
    assert module(funcs).CALLS == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_an_async_batch_function_runs_on_the_loop(funcs):
    result = run(funcs, [{"name": "d", "kind": "python", "function": "M:adouble", "batch": True}])
    assert result.output["d"].tolist() == [2 * x for x in range(10)]


def test_batch_size_splits_a_row_group(funcs):
    columns = [{"name": "n", "kind": "python", "function": "M:call_sizes", "batch": True, "batch_size": 3}]
    result = run(funcs, columns, row_group_size=5)
    assert result.output["n"].tolist() == [3, 3, 3, 2, 2, 3, 3, 3, 2, 2]


def test_the_frame_holds_seed_fields_and_upstream_columns_only(funcs):
    columns = [
        {"name": "t", "kind": "template", "template": "{{ x }}!"},
        {"name": "u", "kind": "template", "template": "{{ x }}?"},
        {"name": "s", "kind": "python", "function": "M:seen", "batch": True, "depends_on": ["t"]},
    ]
    result = run(funcs, columns)
    assert set(result.output["s"]) == {"x,t"}


def test_a_batch_column_runs_after_its_inputs_and_feeds_later_columns(funcs):
    columns = [
        {"name": "t", "kind": "template", "template": "{{ x }}"},
        {"name": "d", "kind": "python", "function": "M:double", "batch": True, "depends_on": ["t"]},
        {"name": "after", "kind": "template", "template": "{{ d }}-{{ t }}"},
    ]
    result = run(funcs, columns, row_group_size=5)
    assert result.output["after"].tolist() == [f"{2 * x}-{x}" for x in range(10)]
    assert module(funcs).CALLS == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("function", ["M:pair", "M:pair_dict"])
def test_a_batch_column_may_write_several_columns(funcs, function):
    columns = [{"name": "p", "kind": "python", "function": function, "batch": True, "columns": ["lo", "hi"]}]
    result = run(funcs, columns)
    assert result.output["lo"].tolist() == [x - 1 for x in range(10)]
    assert result.output["hi"].tolist() == [x + 1 for x in range(10)]


def test_rows_whose_inputs_failed_are_left_out_and_blocked(funcs):
    columns = [
        {"name": "e", "kind": "python", "function": "M:fail_on_odd"},
        {"name": "d", "kind": "python", "function": "M:double", "batch": True, "depends_on": ["e"]},
    ]
    result = run(funcs, columns, row_group_size=10, retries=0, salvage_rounds=0)
    assert result.exit_code == 1
    assert module(funcs).CALLS == [[0, 2, 4, 6, 8]]
    assert result.summary["columns"]["d"]["cells"]["blocked"] == 5
    assert result.output["d"].tolist()[::2] == [0, 4, 8, 12, 16]


@pytest.mark.parametrize(
    ("function", "extra", "message"),
    [
        ("M:short", {}, "batch function {m}:short returned 4 values for 5 rows"),
        ("M:scalar", {}, "batch function {m}:scalar returned int, expected a Series or list of 5 values"),
        ("M:only_lo", {"columns": ["lo", "hi"]}, "batch function {m}:only_lo returned no column hi (expected lo, hi)"),
    ],
)
def test_a_wrong_return_fails_the_groups_cells_with_one_clear_error(funcs, function, extra, message):
    columns = [{"name": "d", "kind": "python", "function": function, "batch": True, **extra}]
    result = run(funcs, columns, row_group_size=5, salvage_rounds=0)
    assert result.exit_code == 1
    assert len(result.failures) == 10
    assert {f["message"] for f in result.failures} == {message.format(m=funcs.name)}
    assert {f["attempts"] for f in result.failures} == {1}


def test_an_exception_fails_every_cell_of_the_call_after_its_retries(funcs):
    columns = [{"name": "d", "kind": "python", "function": "M:boom", "batch": True}]
    result, traced = run_traced(funcs, columns, row_group_size=10, salvage_rounds=0)
    assert result.exit_code == 1
    assert {(f["error_class"], f["message"]) for f in result.failures} == {("ValueError", "no batch today")}
    assert traced == [(0, 1, "failed")]


def test_a_retryable_failure_retries_the_whole_call(funcs):
    columns = [{"name": "d", "kind": "python", "function": "M:flaky", "batch": True}]
    result, traced = run_traced(funcs, columns, row_group_size=10, backoff_s=0)
    assert result.exit_code == 0
    assert result.output["d"].tolist() == [10 * x for x in range(10)]
    assert traced == [(0, 1, "timeout"), (0, 2, "done")]


def test_retry_by_hand_reruns_the_failed_cells_as_one_call(funcs):
    columns = [{"name": "d", "kind": "python", "function": f"{funcs.name}:gated", "batch": True}]
    config = {"seed": {"path": str(funcs.parent / "seed.csv")}, "columns": columns, "run": {"salvage_rounds": 0}}
    options = RunOptions(out=funcs.parent / "run", hold_open=True)
    controller = RunController(treadle.load(config, base_dir=funcs.parent), options)
    events = controller.subscribe()
    controller.start()
    next_event(events, "idle")
    assert controller.snapshot().cells["failed"] == 10
    module(funcs).GATE["open"] = True
    assert controller.retry(all_failed=True) == 10
    next_event(events, "idle")
    controller.close()
    result = controller.wait(30)
    assert result is not None and result.exit_code == 0
    assert result.output["d"].tolist() == [x + 100 for x in range(10)]
    assert attempts(controller) == [(0, 1, "failed"), (0, 1, "done")]


def test_a_call_that_runs_past_its_timeout_times_out_its_cells_together(funcs):
    columns = [{"name": "d", "kind": "python", "function": "M:sleepy", "batch": True, "timeout_s": 0.2}]
    result, traced = run_traced(funcs, columns, row_group_size=10, retries=0, salvage_rounds=0)
    assert result.exit_code == 1
    assert {(f["error_class"], f["message"]) for f in result.failures} == {("TimeoutError", "timed out after 0.2 s")}
    assert traced == [(0, 1, "timeout")]
    assert pd.read_parquet(funcs.parent / "run" / "trace.parquet").rows.tolist() == [10]


def test_an_abort_cancels_a_running_call_and_its_cells_are_unfinished(funcs):
    columns = [{"name": "d", "kind": "python", "function": f"{funcs.name}:held", "batch": True}]
    config = {"seed": {"path": str(funcs.parent / "seed.csv")}, "columns": columns, "run": {"row_group_size": 5}}
    controller = RunController(treadle.load(config, base_dir=funcs.parent), RunOptions(out=funcs.parent / "run"))
    controller.start()
    functions = module(funcs)
    try:
        assert functions.ENTERED.wait(20)
        controller.abort()
        result = controller.wait(30)
    finally:
        functions.RELEASE.set()
    assert result is not None and result.status == "interrupted"
    assert result.summary["rows"]["unfinished"] == 10
    cancelled = [(t.status, t.rows) for t in controller.traces()[1]]
    assert cancelled and set(cancelled) == {("cancelled", 5)}
    functions.ENTERED.clear()
    again = treadle.resume(funcs.parent / "run", pipeline=config, base_dir=funcs.parent)
    assert again.exit_code == 0 and again.output["d"].tolist() == list(range(10))


def next_event(events: queue.SimpleQueue, kind: str):
    while True:
        event = events.get(timeout=20)
        if event.type == kind:
            return event


def test_resume_reruns_a_failed_batch_call_and_keeps_filtered_rows_out(funcs):
    columns = [
        {"name": "keep", "kind": "filter", "expression": "{{ x != 3 }}"},
        {"name": "d", "kind": "python", "function": "M:gated", "batch": True},
        {"name": "e", "kind": "python", "function": "M:double", "batch": True},
    ]
    first = run(funcs, columns, row_group_size=5, salvage_rounds=0)
    assert first.exit_code == 1
    assert first.summary["columns"]["d"]["cells"]["failed"] == 9
    assert module(funcs).CALLS == [[0, 1, 2, 4], [5, 6, 7, 8, 9]], "e does not wait for d"
    module(funcs).GATE["open"] = True
    config = {
        "seed": {"path": str(funcs.parent / "seed.csv")},
        "columns": columns,
        "run": {"row_group_size": 5, "salvage_rounds": 0},
    }
    second = treadle.resume(funcs.parent / "run", pipeline=config, base_dir=funcs.parent)
    assert second.exit_code == 0
    assert second.output["x"].tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert second.output["d"].tolist() == [x + 100 for x in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    assert second.output["e"].tolist() == [2 * x for x in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    assert len(module(funcs).CALLS) == 2, "the finished batch column is not run again"


def test_a_calls_cells_run_together_and_the_grid_shows_them_so(funcs):
    columns = [{"name": "d", "kind": "python", "function": f"{funcs.name}:held", "batch": True}]
    run_settings = {"row_group_size": 5, "row_groups_in_flight": 1}
    config = {"seed": {"path": str(funcs.parent / "seed.csv")}, "columns": columns, "run": run_settings}
    controller = RunController(treadle.load(config, base_dir=funcs.parent), RunOptions(out=funcs.parent / "run"))
    controller.start()
    functions = module(funcs)
    try:
        assert functions.ENTERED.wait(20)
        window = controller.snapshot(rows=range(10)).window
    finally:
        functions.RELEASE.set()
    assert window == {row: ("running",) if row < 5 else ("waiting",) for row in range(10)}
    result = controller.wait(30)
    assert result is not None and result.output["d"].tolist() == list(range(10))


def test_the_trace_records_each_call_once_with_its_rows_and_metrics_count_rows_per_second(funcs):
    columns = [
        {"name": "d", "kind": "python", "function": "M:double", "batch": True},
        {"name": "t", "kind": "template", "template": "{{ d }}"},
    ]
    result = run(funcs, columns, row_group_size=4)
    trace = pd.read_parquet(funcs.parent / "run" / "trace.parquet")
    calls = trace[trace.column == "d"].sort_values("row")
    assert list(zip(calls.row, calls.rows, calls.status, strict=True)) == [
        (0, 4, "done"),
        (4, 4, "done"),
        (8, 2, "done"),
    ]
    assert trace[trace.column == "t"].rows.isna().all(), "a cell's own attempt has no row count"
    metrics = result.summary["metrics"]["columns"]
    run_s = float((calls.t_end - calls.t_start).sum())
    assert metrics["d"]["rows"] == 10 and metrics["d"]["rows_per_s"] == pytest.approx(10 / run_s, rel=0.01)
    assert "rows" not in metrics["t"] and "rows_per_s" not in metrics["t"]
    assert sum(result.summary["metrics"]["throughput"]["done"]) == 20, "a call counts a cell done per row"
    out = funcs.parent / "trace.json"
    export_chrome(funcs.parent / "run", out)
    slices = [e for e in json.loads(out.read_text())["traceEvents"] if e.get("cat") == "attempt"]
    assert sorted(e["args"]["rows"] for e in slices if e["name"] == "d") == [2, 4, 4]
    assert all("rows" not in e["args"] for e in slices if e["name"] == "t")


def test_a_failed_or_retried_call_is_traced_with_its_rows(funcs):
    columns = [{"name": "d", "kind": "python", "function": "M:flaky", "batch": True}]
    run(funcs, columns, row_group_size=10, backoff_s=0)
    trace = pd.read_parquet(funcs.parent / "run" / "trace.parquet")
    assert list(zip(trace.status, trace.rows, strict=True)) == [("timeout", 10), ("done", 10)]


@pytest.mark.parametrize("function", ["M:ask", "M:aask"])
def test_a_batch_function_that_takes_ctx_calls_the_runs_models(funcs, function):
    with SimulatorThread(SimConfig(latency_ms=5, seed=4)) as url:
        config = {
            "seed": {"path": str(funcs.parent / "seed.csv")},
            "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 2}},
            "columns": [
                {"name": "a", "kind": "python", "function": function.replace("M:", f"{funcs.name}:"), "batch": True}
            ],
            "run": {"row_group_size": 5},
        }
        result = treadle.run(config, base_dir=funcs.parent, out=funcs.parent / "run")
    assert result.exit_code == 0
    assert [answer.split("Simulated answer to: ")[1][:3] for answer in result.output["a"]] == [
        f"q{x}" for x in range(10)
    ]
    trace = pd.read_parquet(funcs.parent / "run" / "trace.parquet")
    calls = trace[trace.parent == "a"]
    assert len(calls[calls.status == "done"]) == 10 and set(calls.column) == {"a:llm"}
    assert set(calls.row) == {0, 5}, "a call's model calls are traced on its first row"
    own = trace[trace.column == "a"].sort_values("row")
    assert own.rows.tolist() == [5, 5]
    tokens = calls.groupby("row").tokens_in.sum()
    assert own.tokens_in.tolist() == [tokens[0], tokens[5]], "the call's record carries its model calls' tokens"
    assert result.summary["metrics"]["columns"]["a"]["tokens_counted_in"] == "a:llm", "counted once, on the calls"


def test_a_trace_written_before_the_rows_field_still_reads(funcs):
    run(funcs, [{"name": "d", "kind": "python", "function": "M:double", "batch": True}], row_group_size=5)
    path = funcs.parent / "run" / "trace.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["rows"]), path)
    assert read_trace(path).rows.tolist() == [0, 0]
    assert [record["rows"] for record in TraceReader(path)] == [None, None]
