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

FUNCTIONS = """
import asyncio

SEEN = []

def even(row):
    return row["x"] % 2 == 0

async def aeven(row):
    await asyncio.sleep(0)
    return row["x"] % 2 == 0

def small(frame):
    return frame["x"] < 3

def later(row):
    SEEN.append(row["x"])
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


def test_a_batch_filter_takes_a_boolean_series_per_row_group(funcs):
    columns = [
        {"name": "f", "kind": "filter", "function": "M:small", "batch": True},
        {"name": "y", "kind": "python", "function": "M:later"},
    ]
    result = run(funcs, columns, row_group_size=4)
    assert result.output["x"].tolist() == [0, 1, 2]
    assert result.output["y"].tolist() == [0, 1, 2]
    assert result.summary["rows"]["filtered"] == 3


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
