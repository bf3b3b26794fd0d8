"""The cell detail of a row whose group a worker holds: the parent asks that worker for the row's values."""

from __future__ import annotations

from workers_helpers import flaky_pipeline, wait_for_done_cells

import treadle
from treadle.engine.events import Progress
from treadle.sim import SimConfig, SimulatorThread


def _wait_until_idle(controller) -> None:
    """Until two progress events in a row count nothing running in any worker."""
    events = controller.subscribe()
    idle_progress = 0
    while idle_progress < 2:
        payload = events.get(timeout=60).payload
        if isinstance(payload, Progress):
            idle_progress = idle_progress + 1 if not payload.cells.get("running") else 0


def test_the_detail_of_a_cell_in_a_group_a_worker_holds_shows_its_values(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=100, seed=7)) as url:
        pipeline = flaky_pipeline(tmp_path, url, 100, workers=2)
        controller = treadle.start(pipeline, out=tmp_path / "run", cache="off")
        wait_for_done_cells(controller, 30)
        controller.pause()
        _wait_until_idle(controller)
        window = controller.snapshot(rows=list(range(100))).window
        # A row group (20 rows) with cells still to run is held by its worker, not written.
        unfinished = {r // 20 for r, states in window.items() if {"waiting", "ready"} & set(states)}
        row = next(r for r, states in window.items() if states[0] == "done" and r // 20 in unfinished)
        a = controller.cell_detail(row, "a")
        assert a.state == "done" and isinstance(a.value, str) and a.value
        assert a.inputs == {"q": f"question {row}"}
        assert controller.cell_detail(row, "b").inputs == {"a": a.value}
        controller.resume()
        result = controller.wait(120)
    assert result is not None and result.status == "failed"  # the python column fails on every 17th row
    assert controller.cell_detail(row, "a").value == a.value  # read back from its group's file
