"""The app over a run on two real worker processes (`--workers 2`) against the simulator over HTTP: the
workers panel, pause, limits, retry of failed rows (in groups the workers already wrote), drop, and
what happens when the worker that wrote a failed row has ended."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from tui_helpers import plain, until

import treadle
from treadle.engine.events import Idle
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.serve import ProgressServer
from treadle.sim import SimConfig, SimulatorThread
from treadle.tui.app import TreadleApp
from treadle.tui.column_editor import ConfirmRecomputeScreen
from treadle.tui.widgets.limits import LimitsPanel
from treadle.tui.widgets.workers import WorkersPanel, workers_text

ROWS = 120
FAILING = [row for row in range(ROWS) if row % 10 == 3]

# Fails on some rows while the file `broken` sits beside it: a person fixes the cause, then retries.
CHECK = """
from pathlib import Path

BROKEN = Path(__file__).parent / "broken"


def check(row):
    if row["id"] % 10 == 3 and BROKEN.exists():
        raise ValueError(f"row {row['id']} cannot be checked yet")
    return len(row["a"])
"""


def _pipeline(tmp_path: Path, url: str) -> Path:
    pd.DataFrame({"id": range(ROWS), "q": [f"question {i}" for i in range(ROWS)]}).to_csv(tmp_path / "s.csv")
    (tmp_path / "tui_workers_check.py").write_text(CHECK)
    (tmp_path / "broken").touch()
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 8}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
            {"name": "n", "kind": "python", "function": "tui_workers_check:check", "depends_on": ["a"], "retries": 0},
            {"name": "t", "kind": "template", "template": "{{ id }}:{{ n }}"},
        ],
        "run": {"name": "workers", "max_parallel": 8, "row_group_size": 10},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def two_workers(tmp_path):
    """A started run held open on two worker processes; stopped after the test."""
    made = []

    def make(url: str):
        loaded = treadle.load(_pipeline(tmp_path, url))
        options = RunOptions(out=tmp_path / "run", hold_open=True, cache="off", workers=2)
        controller = open_controller(loaded, options)
        made.append(controller)
        return controller.start()

    yield make
    for controller in made:
        if not controller.finished:
            controller.abort()
            controller.wait(60)


async def test_a_person_watches_and_steers_two_workers_as_one_process(tmp_path, two_workers):
    with SimulatorThread(SimConfig(latency_ms=20, seed=4)) as url:
        controller = two_workers(url)
        app = TreadleApp(controller, summary_on_idle=False)
        async with app.run_test(size=(160, 48)) as pilot:
            panel = app.query_one("#workers", WorkersPanel)
            await until(pilot, lambda: len(app.snap.workers) == 2 and panel.display, what="the workers panel")
            await pilot.press("p")
            await until(pilot, lambda: app.snap.status == "paused", what="paused")
            await pilot.press("p")
            await until(pilot, lambda: app.snap.status != "paused", what="resumed")
            app.limits_panel.post_message(LimitsPanel.Requested("slots", 6))
            await until(pilot, lambda: app.snap.limits["slots"].total == 6, what="the new limit")
            await until(pilot, lambda: app.status == "idle", timeout=60, what="idle")
            await until(pilot, lambda: len(app.failures) == len(FAILING), what="the failures")
            assert sorted(f["row"] for f in app.failures) == FAILING
            lines = plain(panel).splitlines()
            assert lines[0].split() == ["worker", "groups", "done", "in", "flight", "cells", "calls/s"]
            assert sum(int(line.split()[2]) for line in lines[1:3]) == ROWS // 10  # every group written once

            (tmp_path / "broken").unlink()  # the cause fixed: retry every failed cell
            await pilot.press("A")
            await until(pilot, lambda: app.snap.cells["failed"] == 0 and app.status == "idle", what="retried")
            app.grid.move_cursor(0, 0)
            await pilot.press("C")  # recompute a: asks first, with the cells and calls counted over the workers
            assert isinstance(app.screen, ConfirmRecomputeScreen)
            assert (app.screen.cells, app.screen.calls) == (ROWS, ROWS)
            await pilot.press("n")
            app.grid.move_cursor(FAILING[0])
            await pilot.press("d")
            await until(pilot, lambda: app.snap.cells["dropped"] == 3, what="the row dropped")
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, timeout=60, what="the app to exit")
        result = controller.wait(60)
    assert result is not None and result.status == "done"
    output = pd.read_parquet(result.run_dir / "output.parquet").sort_values("id")
    assert output["id"].tolist() == [row for row in range(ROWS) if row != FAILING[0]]
    assert output["n"].notna().all()
    assert (result.run_dir / "failures.jsonl").read_text() == ""


async def test_failed_rows_whose_worker_ended_run_again_on_the_other(tmp_path, two_workers):
    sim = SimulatorThread(SimConfig(latency_ms=5, seed=4))
    with sim as url:
        controller = two_workers(url)
        app = TreadleApp(controller, summary_on_idle=False)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.status == "idle", timeout=60, what="idle")
            await until(pilot, lambda: len(app.failures) == len(FAILING), what="the failures")
            workers = [worker.pid for worker in app.snap.workers]
            assert len(workers) == 2 and None not in workers
            os.kill(workers[0], signal.SIGKILL)
            panel = app.query_one("#workers", WorkersPanel)
            await until(pilot, lambda: "dead" in plain(panel), what="the dead worker shown")
            (tmp_path / "broken").unlink()
            for row in FAILING:  # R on each failed row, whichever worker wrote it
                app.grid.move_cursor(row)
                await pilot.press("R")
            await until(pilot, lambda: app.snap.cells["failed"] == 0 and app.status == "idle", what="retried")
            app.grid.move_cursor(FAILING[-1] + 1)
            await pilot.press("d")
            await until(pilot, lambda: app.snap.cells["dropped"] == 3, what="the row dropped")
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, timeout=60, what="the app to exit")
        result = controller.wait(60)
        requests = sim.stats()["requests_total"]
    assert result is not None and result.status == "done"
    output = pd.read_parquet(result.run_dir / "output.parquet").sort_values("id")
    assert output["id"].tolist() == [row for row in range(ROWS) if row != FAILING[-1] + 1]  # each row once
    assert output["n"].notna().all()
    assert requests == ROWS  # the dead worker's done llm cells were not asked again


def test_the_snapshot_endpoint_lists_the_workers(tmp_path, two_workers):
    with SimulatorThread(SimConfig(latency_ms=5, seed=4)) as url:
        controller = two_workers(url)
        events = controller.subscribe()
        with ProgressServer(controller) as server:
            while not isinstance(events.get(timeout=60).payload, Idle):
                pass
            with urllib.request.urlopen(f"{server.base_url}/snapshot", timeout=30) as response:
                snapshot = json.load(response)
        controller.close()
        assert controller.wait(60) is not None
    assert [w["index"] for w in snapshot["workers"]] == [0, 1]
    assert all(w["alive"] for w in snapshot["workers"])
    assert sum(w["groups_done"] for w in snapshot["workers"]) == ROWS // 10


def test_the_workers_panel_has_a_line_per_worker_and_hides_for_one_process():
    from treadle.engine.controller import WorkerView

    text = workers_text([WorkerView(0, True, 3, 2, 16, 81.25), WorkerView(1, False, 4, 0, 0, 0.0)]).plain
    header, alive, dead = text.splitlines()
    assert header.split()[0] == "worker"
    assert alive.split() == ["●", "0", "3", "2", "16", "81.2"]
    assert dead.split() == ["✗", "1", "4", "dead"]
    panel = WorkersPanel()
    panel.show(())
    assert not panel.display
