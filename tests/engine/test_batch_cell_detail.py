"""A batch column's cell detail: every row of a call shows the call's attempt (traced once, on its first row)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd

import treadle
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions

FUNCTIONS = """
import threading

ENTERED = threading.Event()
RELEASE = threading.Event()

FAILS = {"left": 1}

def flaky(frame):
    if frame.index[0] == 5 and FAILS["left"]:
        FAILS["left"] -= 1
        raise TimeoutError("slow backend")
    return frame["x"] * 2

def held(frame):
    ENTERED.set()
    RELEASE.wait(20)
    return frame["d"]
"""


def attempts_of(controller: RunController, row: int, column: str) -> list[tuple]:
    return [(t.row, t.attempt, t.status, t.rows) for t in controller.cell_detail(row, column).attempts]


def test_every_row_of_a_batch_call_shows_its_attempts_live_and_once_its_group_is_written(tmp_path: Path):
    name = f"batchdetail_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FUNCTIONS))
    pd.DataFrame({"x": range(10)}).to_csv(tmp_path / "seed.csv", index=False)
    columns = [
        {"name": "keep", "kind": "filter", "expression": "{{ x != 3 }}"},
        {"name": "d", "kind": "python", "function": f"{name}:flaky", "batch": True},
        {"name": "h", "kind": "python", "function": f"{name}:held", "batch": True, "depends_on": ["d"]},
    ]
    run = {"row_group_size": 5, "row_groups_in_flight": 1, "backoff_s": 0}
    config = {"seed": {"path": str(tmp_path / "seed.csv")}, "columns": columns, "run": run}
    controller = RunController(treadle.load(config, base_dir=tmp_path), RunOptions(out=tmp_path / "run"))
    controller.start()
    functions = sys.modules[name]
    try:
        assert functions.ENTERED.wait(20)
        # Row 3 was filtered out: the call of d ran for rows 0, 1, 2 and 4, and h's call runs now.
        live = {row: attempts_of(controller, row, "d") for row in range(5)}
        running = attempts_of(controller, 4, "h")
    finally:
        functions.RELEASE.set()
    result = controller.wait(30)
    assert result is not None and result.exit_code == 0
    assert live == {row: [] if row == 3 else [(0, 1, "done", 4)] for row in range(5)}
    assert running == []
    # Both groups are written now; the second group's call of d was retried once.
    for row in (0, 2, 4):
        assert attempts_of(controller, row, "d") == [(0, 1, "done", 4)]
        assert attempts_of(controller, row, "h") == [(0, 1, "done", 4)]
    assert attempts_of(controller, 3, "d") == []
    for row in range(5, 10):
        assert attempts_of(controller, row, "d") == [(5, 1, "timeout", 5), (5, 2, "done", 5)]


def test_a_batch_call_run_by_a_worker_is_traced_with_its_rows(tmp_path: Path):
    name = f"batchworker_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text("def double(frame):\n    return frame['x'] * 2\n")
    pd.DataFrame({"x": range(40)}).to_csv(tmp_path / "seed.csv", index=False)
    columns = [{"name": "d", "kind": "python", "function": f"{name}:double", "batch": True}]
    config = {"seed": {"path": str(tmp_path / "seed.csv")}, "columns": columns, "run": {"row_group_size": 20}}
    result = treadle.run(treadle.load(config, base_dir=tmp_path), out=tmp_path / "run", workers=2)
    assert result.status == "done"
    trace = pd.read_parquet(tmp_path / "run" / "trace.parquet")
    assert sorted(zip(trace.row, trace.rows, strict=True)) == [(0, 20), (20, 20)]
