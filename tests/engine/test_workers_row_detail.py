"""The cell detail of a row whose group a worker holds: the parent asks that worker for the row's values."""

from __future__ import annotations

from workers_helpers import flaky_pipeline, wait_until_settled

import treadle
from treadle.engine.events import CellFailed
from treadle.sim import SimConfig, SimulatorThread


def _first_failure_then_pause(controller) -> int:
    """Pause at the first failed cell, then wait until nothing runs in any worker; the failed row."""
    events = controller.subscribe()
    while not isinstance(payload := events.get(timeout=60).payload, CellFailed):
        pass
    controller.pause()
    wait_until_settled(events)
    return payload.row


def test_the_detail_of_a_cell_in_a_group_a_worker_holds_shows_its_values_and_error(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=100, seed=7)) as url:
        controller = treadle.start(flaky_pipeline(tmp_path, url, 100, workers=2), out=tmp_path / "run", cache="off")
        row = _first_failure_then_pause(controller)  # the python column `n` fails on every 17th row
        # Its group (20 rows) still has cells to run: a worker holds it; nothing of it is written.
        group = range(row // 20 * 20, row // 20 * 20 + 20)
        window = controller.snapshot(rows=list(group)).window
        assert any({"waiting", "ready"} & set(states) for states in window.values())
        a = controller.cell_detail(row, "a")
        assert a.state == "done" and isinstance(a.value, str) and a.value
        assert a.inputs == {"q": f"question {row}"}
        n = controller.cell_detail(row, "n")
        assert n.state == "failed" and n.error is not None
        assert (n.error["error_class"], n.error["message"]) == ("ValueError", f"row {row} is not checkable")
        assert {"id": row, "q": f"question {row}", "a": a.value}.items() <= n.inputs.items()
        controller.resume()
        result = controller.wait(120)
    assert result is not None and result.status == "failed"
    assert controller.cell_detail(row, "a").value == a.value  # read back from its group's file
