"""Fixing batch python columns and filters while their run goes on: a batch column's or a filter's
function reloaded (batch calls and filter tests that start after it use it; an import error keeps the
old one), their failed cells retried and their cells recomputed (a batch column's as batch calls, a
filter's rows tested again), a filter's expression edited, the versions in output.parquet, and resume
at the latest version. Real runs held open, as in test_column_edits.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_column_edits import finish, held_open, wait_idle, write_pipeline

from treadle.engine.controller import RunController

# Each call's values say how many rows the call had (id * 100 + rows in the call).
BATCH_BROKEN = """
def double(frame):
    if (frame["id"] >= 4).any():
        raise ValueError("no rows past 3")
    return frame["id"] * 100 + len(frame)
"""
BATCH_FIXED = """
def double(frame):
    return frame["id"] * 100 + len(frame)
"""
BATCH_TRIPLED = BATCH_FIXED.replace("* 100", "* 1000")
FILTER_BROKEN = """
def keep(row):
    if row["id"] == 3:
        raise ValueError("row 3")
    return row["id"] != 5
"""
FILTER_ODD = """
def keep(row):
    return row["id"] % 2 == 1
"""
BATCH_FILTER = """
def keep(frame):
    return frame["id"] < 3
"""
BATCH_FILTER_EVEN = """
def keep(frame):
    return frame["id"] % 2 == 0
"""


def batch_column(module: str) -> dict:
    return {"name": "a", "kind": "python", "function": f"{module}:double", "batch": True}


def filter_column(module: str, batch: bool = False) -> dict:
    return {"name": "f", "kind": "filter", "function": f"{module}:keep", "batch": batch}


def test_a_batch_columns_reloaded_function_reruns_its_failed_cells_as_batch_calls(tmp_path):
    module = "batch_reload"
    columns = [batch_column(module), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    path = write_pipeline(tmp_path, module, columns)
    (tmp_path / f"{module}.py").write_text(BATCH_BROKEN)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    assert sorted(f["row"] for f in controller.failures()) == [4, 5]

    (tmp_path / f"{module}.py").write_text("def double(frame)\n")
    with pytest.raises(ValueError, match=rf"^a: module '{module}' has a syntax error"):
        controller.reload_function("a")
    assert controller.versions() == []
    (tmp_path / f"{module}.py").write_text(BATCH_FIXED)
    assert controller.reload_function("a") == 2
    assert controller.retry(columns=["a"]) == 2
    wait_idle(events)
    out = finish(controller)

    assert out["a"].tolist() == [4, 104, 204, 304, 402, 502]  # rows 4 and 5 in one call of the new function
    assert out["b"].tolist() == [f"{a}!" for a in out["a"]]
    assert out["a__version"].tolist() == [1, 1, 1, 1, 2, 2]
    versions = json.loads((tmp_path / "run" / "run.json").read_text())["versions"]
    assert [(v["column"], v["kind"]) for v in versions] == [("a", "reload")]
    assert "raise" in versions[0]["changes"]["function"]["old"]
    assert "raise" not in versions[0]["changes"]["function"]["new"]


def test_a_recomputed_batch_column_runs_its_rows_again_as_batch_calls(tmp_path):
    module = "batch_recompute"
    columns = [batch_column(module), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    path = write_pipeline(tmp_path, module, columns)
    (tmp_path / f"{module}.py").write_text(BATCH_FIXED)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    (tmp_path / f"{module}.py").write_text(BATCH_TRIPLED)
    controller.reload_function("a")
    assert controller.recompute("a") == 6
    wait_idle(events)
    out = finish(controller)
    assert out["a"].tolist() == [4, 1004, 2004, 3004, 4002, 5002]  # one call per row group, as at first
    assert out["b"].tolist() == [f"{a}!" for a in out["a"]]
    assert set(out["a__version"]) == {2}


def test_a_filters_reloaded_function_tests_retried_and_recomputed_rows(tmp_path):
    module = "filter_reload"
    columns = [filter_column(module), {"name": "b", "kind": "template", "template": "{{ id }}!"}]
    path = write_pipeline(tmp_path, module, columns)
    (tmp_path / f"{module}.py").write_text(FILTER_BROKEN)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    assert [f["row"] for f in controller.failures()] == [3]  # row 5 was turned away, which is no failure

    (tmp_path / f"{module}.py").write_text(FILTER_ODD)
    assert controller.reload_function("f") == 2
    assert controller.retry(columns=["f"]) == 1  # row 3, tested by the new function: kept
    wait_idle(events)
    assert controller.recompute_plan("f").cells == 5  # every row it kept (row 5 was turned away)
    assert controller.recompute("f") == 5
    wait_idle(events)
    out = finish(controller)
    assert out["id"].tolist() == [1, 3]
    assert out["b"].tolist() == ["1!", "3!"]
    assert out["f__version"].tolist() == [2, 2]


def test_a_batch_filters_reloaded_function_tests_recomputed_rows(tmp_path):
    module = "batch_filter_reload"
    path = write_pipeline(tmp_path, module, [filter_column(module, batch=True)])
    (tmp_path / f"{module}.py").write_text(BATCH_FILTER)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    (tmp_path / f"{module}.py").write_text(BATCH_FILTER_EVEN)
    assert controller.reload_function("f") == 2
    assert controller.recompute("f") == 3
    wait_idle(events)
    out = finish(controller)
    assert out["id"].tolist() == [0, 2]
    assert out["f__version"].tolist() == [2, 2]


def test_what_cannot_be_reloaded_or_edited_says_so(tmp_path):
    module = "not_reloadable"
    columns = [
        filter_column(module),
        {"name": "g", "kind": "filter", "expression": "{{ id < 9 }}"},
        {"name": "t", "kind": "template", "template": "{{ id }}"},
    ]
    path = write_pipeline(tmp_path, module, columns)
    (tmp_path / f"{module}.py").write_text(FILTER_ODD)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    with pytest.raises(ValueError, match=r"^g is an expression filter: only a python column's or a filter's"):
        controller.reload_function("g")
    with pytest.raises(ValueError, match=r"^t is a template column: only"):
        controller.reload_function("t")
    with pytest.raises(ValueError, match=r"^f is a filter column: .* \(reload its function instead\)$"):
        controller.update_column("f", expression="{{ id }}")
    assert controller.column_settings("g").values == {"expression": "{{ id < 9 }}"}
    assert controller.column_settings("f").values == {}
    finish(controller)


def test_a_filters_edited_expression_tests_the_rows_not_tested_yet(tmp_path):
    module = "filter_expression"
    columns = [
        {"name": "a", "kind": "python", "function": f"{module}:double"},
        {"name": "f", "kind": "filter", "expression": "{{ a < 100 }}"},
    ]
    path = write_pipeline(tmp_path, module, columns)  # a fails for odd ids: those rows wait for f
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    refused = {
        "{{ aa < 3 }}": "f.expression: unknown column or seed field 'aa' (did you mean 'a'?)",
        "{{ a < }}": "f.expression: template syntax error at line 1: unexpected 'end of print statement'",
        "{{ a }} or {{ id }}": "f.expression: not one expression: chunk after expression",
    }
    for expression, message in refused.items():
        assert controller.check_column("f", expression=expression) == message
        with pytest.raises(ValueError) as caught:
            controller.update_column("f", expression=expression)
        assert str(caught.value) == message
    assert controller.update_column("f", expression="{{ a != 6 }}") == 2
    (tmp_path / f"{module}.py").write_text("def double(row):\n    return row['id'] * 2\n")
    controller.reload_function("a")
    assert controller.retry(columns=["a"]) == 3
    wait_idle(events)
    out = finish(controller)
    assert out["id"].tolist() == [0, 1, 2, 4, 5]  # row 3 (a = 6) turned away by the new expression
    assert out["f__version"].tolist() == [1, 2, 1, 1, 2]


def test_resume_tests_the_rest_with_the_latest_filter_expression(tmp_path):
    module = "resumed_filter"
    flagged = (
        "from pathlib import Path\n\n\ndef double(row):\n"
        "    if row['id'] % 2 and (Path(__file__).parent / 'broken').exists():\n"
        "        raise ValueError('odd')\n    return row['id'] * 2\n"
    )
    columns = [
        {"name": "a", "kind": "python", "function": f"{module}:double"},
        {"name": "f", "kind": "filter", "expression": "{{ a < 100 }}"},
        {"name": "c", "kind": "python", "function": f"{module}_batch:double", "batch": True, "depends_on": ["f"]},
    ]
    path = write_pipeline(tmp_path, module, columns)
    (tmp_path / f"{module}.py").write_text(flagged)
    (tmp_path / f"{module}_batch.py").write_text(BATCH_FIXED)
    (tmp_path / "broken").touch()
    run_dir = tmp_path / "run"
    controller, events = held_open(path, run_dir)
    wait_idle(events)
    controller.update_column("f", expression="{{ a != 6 }}")
    (tmp_path / f"{module}_batch.py").write_text(BATCH_TRIPLED)
    controller.reload_function("c")
    controller.close()
    assert controller.wait(60).status == "failed"

    (tmp_path / "broken").unlink()
    result = RunController.from_run_dir(run_dir).start().wait(60)
    assert result.status == "done"
    out = pd.read_parquet(result.output_path)
    assert out["id"].tolist() == [0, 1, 2, 4, 5]
    assert out["f__version"].tolist() == [1, 2, 1, 1, 2]
    # (this process has c's module already: which function a resume runs is not what is checked here)
    assert out["c__version"].tolist() == [1, 3, 1, 1, 3]
    assert [v["version"] for v in json.loads((run_dir / "run.json").read_text())["versions"]] == [2, 3]
