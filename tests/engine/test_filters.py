"""Filter columns (`kind: filter`): rows whose test is false are dropped, with the reason, not failed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.controller import RunController
from treadle.engine.errors import ConfigError
from treadle.engine.run import RunOptions
from treadle.sim import SimConfig, SimulatorThread

FUNCTIONS = """
import asyncio
import threading

SEEN = []
ENTERED = threading.Event()
RELEASE = threading.Event()

def held(row):
    if row["x"] == 2:
        ENTERED.set()
        RELEASE.wait(20)
    return row["x"]

def even(row):
    return row["x"] % 2 == 0

async def aeven(row):
    await asyncio.sleep(0)
    return row["x"] % 2 == 0

def small(frame):
    return frame["x"] < 3

def small_or_nan(frame):
    return (frame["x"] < 3).where(frame["x"] != 4)

def asks(row, ctx):
    return "x0" not in ctx.llm(f"x{row['x']}")

async def aasks(row, ctx):
    return "x0" not in await ctx.allm(f"x{row['x']}")

def later(row):
    SEEN.append(row["x"])
    return row["x"]

def odd_fails(row):
    if row["x"] % 2:
        raise ValueError("odd")
    return row["x"]

def not_a_frame_function():
    return True
"""


@pytest.fixture
def funcs(tmp_path: Path) -> Path:
    name = f"filterfuncs_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FUNCTIONS))
    pd.DataFrame({"x": range(6), "score": [1, 5, 4, 2, 5, 3]}).to_csv(tmp_path / "seed.csv", index=False)
    return tmp_path / name


def config(funcs: Path, columns: list[dict], **run: object) -> dict:
    for column in columns:
        if "function" in column:
            column["function"] = column["function"].replace("M:", f"{funcs.name}:")
    return {"seed": {"path": str(funcs.parent / "seed.csv")}, "columns": columns, "run": run}


def run(funcs: Path, columns: list[dict], **run_settings: object) -> treadle.RunResult:
    return treadle.run(config(funcs, columns, **run_settings), base_dir=funcs.parent, out=funcs.parent / "run")


def test_an_expression_filter_drops_rows_with_the_reason_and_later_columns_skip_them(funcs):
    columns = [
        {"name": "good", "kind": "filter", "expression": "{{ score >= 4 }}"},
        {"name": "y", "kind": "python", "function": "M:later"},
    ]
    result = run(funcs, columns)
    assert result.exit_code == 0 and result.status == "done"
    assert result.output["x"].tolist() == [1, 2, 4]
    assert "good" not in result.output.columns
    assert sorted(sys.modules[funcs.name].SEEN) == [1, 2, 4], "y never ran for filtered rows"
    assert result.summary["rows"] == {"total": 6, "done": 3, "failed": 0, "dropped": 0, "filtered": 3, "unfinished": 0}
    assert [(f["row"], f["column"], f["action"], f["message"]) for f in result.failures] == [
        (0, "good", "filtered", "filtered by good"),
        (3, "good", "filtered", "filtered by good"),
        (5, "good", "filtered", "filtered by good"),
    ]
    lines = (funcs.parent / "run" / "failures.jsonl").read_text().splitlines()
    assert {json.loads(line)["action"] for line in lines} == {"filtered"}


@pytest.mark.parametrize("function", ["M:even", "M:aeven"])
def test_a_function_filter_keeps_the_rows_it_returns_true_for(funcs, function):
    result = run(funcs, [{"name": "f", "kind": "filter", "function": function}])
    assert result.exit_code == 0
    assert result.output["x"].tolist() == [0, 2, 4]


@pytest.mark.parametrize("function", ["M:asks", "M:aasks"])
def test_a_filter_function_that_takes_ctx_calls_the_runs_models(funcs, function):
    with SimulatorThread(SimConfig(latency_ms=5, seed=2)) as url:
        pipeline = config(funcs, [{"name": "f", "kind": "filter", "function": function}])
        pipeline["models"] = {"m": {"model": "sim", "base_url": url}}
        result = treadle.run(pipeline, base_dir=funcs.parent, out=funcs.parent / "run")
    assert result.exit_code == 0
    assert result.output["x"].tolist() == [1, 2, 3, 4, 5]
    calls = pd.read_parquet(funcs.parent / "run" / "trace.parquet").query("parent == 'f'")
    assert len(calls) == 6 and set(calls.status) == {"done"}


def test_a_batch_filter_takes_a_boolean_series_per_row_group(funcs):
    columns = [
        {"name": "f", "kind": "filter", "function": "M:small", "batch": True},
        {"name": "y", "kind": "python", "function": "M:later"},
    ]
    result = run(funcs, columns, row_group_size=4)
    assert result.output["x"].tolist() == [0, 1, 2]
    assert result.output["y"].tolist() == [0, 1, 2]
    assert result.summary["rows"]["filtered"] == 3


def test_a_batch_filter_that_returns_other_than_booleans_fails_its_call(funcs):
    columns = [{"name": "f", "kind": "filter", "function": "M:small_or_nan", "batch": True}]
    result = run(funcs, columns, salvage_rounds=0)
    assert result.exit_code == 1
    expected = f"batch filter {funcs.name}:small_or_nan returned float values, expected a boolean Series"
    assert {(f["action"], f["message"]) for f in result.failures} == {("fail", expected)}


def test_a_filter_on_a_computed_column_runs_after_it(funcs):
    columns = [
        {"name": "doubled", "kind": "template", "template": "{{ x * 2 }}"},
        {"name": "keep", "kind": "filter", "expression": "doubled | int > 4"},
    ]
    result = run(funcs, columns)
    assert result.output["doubled"].tolist() == ["6", "8", "10"]


def test_a_filter_nothing_follows_is_allowed(funcs):
    columns = [
        {"name": "y", "kind": "python", "function": "M:later"},
        {"name": "last", "kind": "filter", "expression": "{{ y > 2 }}"},
    ]
    result = run(funcs, columns)
    assert result.output["y"].tolist() == [3, 4, 5]


def test_an_expression_that_fails_fails_the_cell(funcs):
    result = run(funcs, [{"name": "f", "kind": "filter", "expression": "{{ x > 'a' }}"}], salvage_rounds=0)
    assert result.exit_code == 1
    assert {f["action"] for f in result.failures} == {"fail"}


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"name": "f", "kind": "filter"}, "columns[0] 'f': a filter needs either function: or expression:"),
        (
            {"name": "f", "kind": "filter", "expression": "{{ x }}", "function": "M:even"},
            "columns[0] 'f': a filter needs either function: or expression:",
        ),
        ({"name": "f", "kind": "filter", "expression": "{{ x >= }}"}, "columns[0] 'f'.expression: template syntax"),
        ({"name": "f", "kind": "filter", "function": "M:nope"}, "columns[0] 'f'.function:"),
        ({"name": "f", "kind": "filter", "expression": "{{ x }}", "batch": True}, "columns[0] 'f'.batch: applies"),
        ({"name": "b", "kind": "python", "function": "M:nope", "batch": True}, "columns[0] 'b'.function:"),
        ({"name": "b", "kind": "python", "function": "M:even", "batch_size": 3}, "columns[0] 'b'.batch_size: "),
    ],
)
def test_validation_names_the_column_in_one_line(funcs, column, message):
    with pytest.raises(ConfigError) as raised:
        treadle.load(config(funcs, [column]), base_dir=funcs.parent)
    lines = str(raised.value).splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_the_cli_exits_0_and_counts_filtered_rows_apart(funcs):
    pipeline = funcs.parent / "pipeline.yaml"
    columns = [{"name": "good", "kind": "filter", "expression": "{{ score >= 4 }}"}]
    pipeline.write_text(json.dumps({"seed": {"path": "seed.csv"}, "columns": columns}))
    out = funcs.parent / "run"
    command = [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3/6 rows done, 0 failed, 0 dropped, 3 filtered" in proc.stdout + proc.stderr


def test_the_failed_list_leaves_filtered_rows_out(funcs):
    columns = [
        {"name": "good", "kind": "filter", "expression": "{{ score >= 4 }}"},
        {"name": "bad", "kind": "filter", "expression": "{{ x > 'a' }}"},
    ]
    options = RunOptions(out=funcs.parent / "run")
    controller = RunController(treadle.load(config(funcs, columns, salvage_rounds=0), base_dir=funcs.parent), options)
    result = controller.start().wait(30)
    assert result is not None and result.exit_code == 1
    assert {(f["column"], f["action"]) for f in result.failures} == {("good", "filtered"), ("bad", "fail")}
    assert {f["column"] for f in controller.failures()} == {"bad"}


def filtered_lines(run_dir: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (run_dir / "failures.jsonl").read_text().splitlines()]
    return [(f["row"], f["column"], f["action"], f["message"]) for f in lines]


def check_filtered_after_resume(result: treadle.RunResult, run_dir: Path) -> None:
    """Rows 0, 3, 5 (score < 4) stay filtered: in failures.jsonl, counted apart, out of output.parquet."""
    assert result.exit_code == 0 and result.status == "done"
    assert filtered_lines(run_dir) == [(row, "good", "filtered", "filtered by good") for row in (0, 3, 5)]
    assert result.summary["rows"] == {"total": 6, "done": 3, "failed": 0, "dropped": 0, "filtered": 3, "unfinished": 0}
    assert pd.read_parquet(run_dir / "output.parquet")["x"].tolist() == [1, 2, 4]


FILTER_THEN_HELD = [
    {"name": "good", "kind": "filter", "expression": "{{ score >= 4 }}"},
    {"name": "y", "kind": "python", "function": "M:held"},
]


def test_filtered_rows_stay_filtered_when_a_finished_run_is_resumed(funcs):
    pipeline = config(funcs, [dict(c) for c in FILTER_THEN_HELD])
    run_dir = funcs.parent / "run"
    controller = treadle.start(pipeline, base_dir=funcs.parent, out=run_dir)
    sys.modules[funcs.name].RELEASE.set()
    first = controller.wait(30)
    assert first is not None and first.status == "done"
    check_filtered_after_resume(treadle.resume(run_dir, pipeline=pipeline, base_dir=funcs.parent), run_dir)


@pytest.mark.parametrize("killed", [False, True], ids=["interrupted", "killed"])
def test_filtered_rows_stay_filtered_when_an_interrupted_run_is_resumed(funcs, killed):
    columns = [dict(c) for c in FILTER_THEN_HELD]
    pipeline = config(funcs, columns, row_group_size=2, row_groups_in_flight=1)
    run_dir = funcs.parent / "run"
    controller = RunController(treadle.load(pipeline, base_dir=funcs.parent), RunOptions(out=run_dir))
    controller.start()
    functions = sys.modules[funcs.name]
    assert functions.ENTERED.wait(20), "row 2 (group 1) holds the run; row 0 was filtered, 3 is; 4, 5 wait"
    controller.cancel()
    functions.RELEASE.set()
    first = controller.wait(30)
    assert first is not None and first.status == "interrupted"
    if killed:  # a killed run writes no failures.jsonl: the journal alone says which rows a filter took
        (run_dir / "failures.jsonl").unlink()
    check_filtered_after_resume(treadle.resume(run_dir, pipeline=pipeline, base_dir=funcs.parent), run_dir)


def test_a_recomputed_filter_tests_the_rows_it_took_again(funcs):
    run_dir = funcs.parent / "run"
    run(funcs, [{"name": "good", "kind": "filter", "expression": "{{ score >= 4 }}"}])
    looser = config(funcs, [{"name": "good", "kind": "filter", "expression": "{{ score >= 2 }}"}])
    again = treadle.resume(run_dir, pipeline=looser, base_dir=funcs.parent, recompute=["good"])
    assert again.output["x"].tolist() == [1, 2, 3, 4, 5]
    assert filtered_lines(run_dir) == [(0, "good", "filtered", "filtered by good")]
    assert again.summary["rows"]["filtered"] == 1 and again.summary["rows"]["dropped"] == 0


def test_the_failures_of_rows_a_column_skipped_are_kept_on_resume(funcs):
    columns = [{"name": "y", "kind": "python", "function": "M:odd_fails", "on_failure": "skip_row"}]
    run_dir = funcs.parent / "run"
    first = run(funcs, columns, salvage_rounds=0, retries=0)
    skipped = [(f["row"], f["action"], f["message"]) for f in first.failures]
    assert skipped == [(1, "skip_row", "odd"), (3, "skip_row", "odd"), (5, "skip_row", "odd")]
    again = treadle.resume(run_dir, pipeline=config(funcs, columns, salvage_rounds=0, retries=0), base_dir=funcs.parent)
    assert [(f["row"], f["action"], f["message"]) for f in again.failures] == skipped
    assert again.summary["rows"]["dropped"] == 3 and again.output["x"].tolist() == [0, 2, 4]
