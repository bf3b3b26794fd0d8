"""The app over batch and filter columns (Pilot, real runs): a batch call's cells in the grid, filtered
rows shown and counted as filtered (not failed), and a failed batch cell retried by hand."""

from __future__ import annotations

import sys

import pytest
from textual.widgets import Static
from tui_helpers import TUI_DATA, pipeline, plain, until

from treadle.tui.app import TreadleApp
from treadle.tui.screens import SummaryScreen

KEEP = {"name": "keep", "kind": "filter", "expression": "{{ id % 4 != 3 }}"}
"""Rows 3, 7, 11, ... are filtered."""
FILTERED = ("filtered", "filtered")


@pytest.fixture
def batch_cols():
    if str(TUI_DATA) not in sys.path:
        sys.path.insert(0, str(TUI_DATA))
    import tui_batch_cols

    tui_batch_cols.reset()
    yield tui_batch_cols
    tui_batch_cols.RELEASE.set()


def summary_text(app: TreadleApp) -> str:
    return "\n".join(plain(static) for static in app.screen.query(Static))


async def test_a_batch_calls_cells_run_together_and_filtered_rows_show_as_filtered(
    tmp_path, batch_cols, make_controller
):
    held = {"name": "s", "kind": "python", "function": "tui_batch_cols:held_scores", "batch": True}
    config = pipeline(tmp_path, 20, [KEEP, held], row_groups_in_flight=1)
    controller = make_controller(config)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, batch_cols.ENTERED.is_set, what="the first group's call")
        await until(pilot, lambda: app.grid.row_states(9) == ("done", "running"), what="the grid to show the call")
        first_group = [app.grid.row_states(row) for row in range(10)]
        assert first_group == [FILTERED if row % 4 == 3 else ("done", "running") for row in range(10)]
        assert app.grid.row_states(10) == ("waiting", "waiting"), "the next group waits for its place"
        assert "▽ filtered" in plain(app.query_one("#legend"))
        batch_cols.RELEASE.set()
        await until(pilot, lambda: app.status == "idle", what="idle")
        await until(pilot, lambda: app.grid.row_states(18) == ("done", "done"), what="the grid to catch up")
        assert [app.grid.row_states(row) for row in range(20)] == [
            FILTERED if row % 4 == 3 else ("done", "done") for row in range(20)
        ]
        assert app.failures == [], "filtered rows are not failures"
        header = plain(app.query_one("#header"))
        assert "▽ 5 filtered" in header and "failed" not in header
        await pilot.press("s")
        assert isinstance(app.screen, SummaryScreen)
        await pilot.pause()
        assert "rows 20 total · 15 done · 0 failed · 0 dropped · 5 filtered" in summary_text(app)
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to leave")
    result = controller.wait(30)
    assert result is not None and result.status == "done" and result.exit_code == 0
    assert result.output["s"].tolist() == [row * 10 for row in range(20) if row % 4 != 3]


async def test_failed_batch_cells_are_retried_by_hand_from_the_grid(tmp_path, batch_cols, make_controller):
    batch_cols.broken["on"] = True
    scores = {"name": "s", "kind": "python", "function": "tui_batch_cols:scores", "batch": True}
    controller = make_controller(pipeline(tmp_path, 8, [KEEP, scores], salvage_rounds=0, retries=0))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle" and len(app.failures) == 6, what="six failed cells")
        assert {(f["column"], f["message"]) for f in app.failures} == {("s", "scores are not ready")}
        await until(pilot, lambda: app.grid.row_states(7) == FILTERED, what="the grid")
        assert [app.grid.row_states(row) for row in range(8)] == [
            FILTERED if row % 4 == 3 else ("done", "failed") for row in range(8)
        ]
        batch_cols.broken["on"] = False
        await pilot.press("n")  # the next failed cell after the cursor (row 0): row 1, column s
        assert (app.grid.cursor_row, app.grid.cursor_column) == (1, "s")
        await pilot.press("r")
        await until(pilot, lambda: app.grid.row_states(1) == ("done", "done"), what="row 1 retried")
        assert app.grid.row_states(0) == ("done", "failed"), "a retry by hand reruns the chosen cell only"
        await pilot.press("A")  # every failed cell left: one call for them
        await until(pilot, lambda: controller.snapshot().by_column["s"]["done"] == 6, what="every kept row done")
        await until(pilot, lambda: app.failures == [], what="the failed list to empty")
        await pilot.press("s")
        await pilot.pause()
        assert "rows 8 total · 6 done · 0 failed · 0 dropped · 2 filtered" in summary_text(app)
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to leave")
    result = controller.wait(30)
    assert result is not None and result.status == "done"
    assert result.output["s"].tolist() == [0, 10, 20, 40, 50, 60]
    assert {f["action"] for f in result.failures} == {"filtered"}
    calls = [(t.row, t.rows, t.status) for t in controller.traces()[1] if t.column == "s"]
    assert calls == [(0, 6, "failed"), (1, 1, "done"), (0, 5, "done")]
