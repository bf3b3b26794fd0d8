"""Fixing a column from the app over a run on two worker processes (`--workers 2`), as over one process:
`e` edits an llm column's prompt, `C` recomputes it after asking, and every worker's rows get the new
prompt (the simulator's answers echo it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from textual.widgets import TextArea
from tui_helpers import until

import treadle
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.sim import SimConfig, SimulatorThread
from treadle.tui.app import TreadleApp
from treadle.tui.column_editor import ColumnEditorScreen, ConfirmRecomputeScreen

ROWS = 40


def _pipeline(tmp_path: Path, url: str) -> Path:
    pd.DataFrame({"id": range(ROWS)}).to_csv(tmp_path / "s.csv", index=False)
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 8}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "Say {{ id }}"},
            {"name": "t", "kind": "template", "template": "{{ a }}!"},
        ],
        "run": {"name": "workers-edits", "max_parallel": 8, "row_group_size": 10},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def two_workers(tmp_path):
    """A started run held open on two worker processes; stopped after the test."""
    made = []

    def make(url: str):
        options = RunOptions(out=tmp_path / "run", hold_open=True, cache="off", workers=2)
        controller = open_controller(treadle.load(_pipeline(tmp_path, url)), options)
        made.append(controller)
        return controller.start()

    yield make
    for controller in made:
        if not controller.finished:
            controller.abort()
            controller.wait(60)


async def test_e_then_C_reaches_the_rows_of_both_workers(tmp_path, two_workers):
    sim = SimulatorThread(SimConfig(latency_ms=5, seed=4))
    with sim as url:
        controller = two_workers(url)
        app = TreadleApp(controller, summary_on_idle=False)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.status == "idle", timeout=60, what="idle")
            requests = sim.stats()["requests_total"]
            app.grid.move_cursor(3, 0)
            await pilot.press("e")
            assert isinstance(app.screen, ColumnEditorScreen)
            app.screen.query_one("#edit-prompt", TextArea).load_text("Shout {{ id }}")
            await pilot.press("ctrl+s")
            assert not isinstance(app.screen, ColumnEditorScreen)
            assert [v["version"] for v in controller.versions()] == [2]
            await pilot.press("C")
            assert isinstance(app.screen, ConfirmRecomputeScreen)
            assert (app.screen.cells, app.screen.calls) == (ROWS, ROWS)
            await pilot.press("y")
            await until(pilot, lambda: sim.stats()["requests_total"] - requests == ROWS, what="the recompute's calls")
            await until(pilot, lambda: app.status == "idle", timeout=60, what="idle again")
            assert sum(w.groups_done for w in app.snap.workers) == ROWS // 10
            assert all(w.groups_done for w in app.snap.workers)  # both workers wrote groups
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, timeout=60, what="the app to exit")
        result = controller.wait(60)
    assert result is not None and result.status == "done"
    out = pd.read_parquet(result.run_dir / "output.parquet").sort_values("id")
    assert out["a"].tolist() == [f"Simulated answer to: Shout {i}" for i in range(ROWS)]
    assert out["t"].tolist() == [f"Simulated answer to: Shout {i}!" for i in range(ROWS)]
    assert out["a__version"].tolist() == [2] * ROWS
