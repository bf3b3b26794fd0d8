"""The app driven by Pilot over real runs: limits, pause, retry, drop, quit, help, following the frontier."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable, Static
from textual_slider import Slider
from tui_helpers import PROBE_DIR, pipeline, plain, until

from treadle.tui.app import TreadleApp
from treadle.tui.screens import CellDetailScreen, ConfirmQuitScreen, HelpScreen, SummaryScreen

GATED = {"name": "a", "kind": "python", "function": "probe_cols:gated"}
CHECKED = [
    {"name": "a", "kind": "python", "function": "tui_cols:checked"},
    {"name": "b", "kind": "template", "template": "{{ a }}!"},
]


async def quit_idle(pilot, app: TreadleApp) -> None:
    """Wait for the run to be idle, press q (closes it without asking) and wait for the app to leave."""
    await until(pilot, lambda: app.status == "idle", what="the run to be idle")
    await pilot.press("q")
    await until(pilot, lambda: app.leaving, what="the app to close the run and leave")


async def test_plus_and_minus_resize_the_slot_limit_and_the_observed_concurrency(tmp_path, probe, make_controller):
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 60, [GATED], max_parallel=4), base_dir=PROBE_DIR)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        await pilot.press("plus", "plus")
        assert controller.limits()["slots"] == 6
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 6)
        await pilot.press("minus", "minus", "minus")
        assert controller.limits()["slots"] == 3
        assert controller.snapshot().cells["running"] == 6  # lowering never cancels running cells
        starts = len(probe.levels)
        probe.open_gate()
        await quit_idle(pilot, app)
    result = controller.wait(30)
    assert result.status == "done"
    assert max(probe.levels[starts:]) <= 3
    assert result.summary["limits"]["slots"]["total"] == 3


async def test_moving_the_slider_sets_the_limit(tmp_path, probe, make_controller):
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 40, [GATED], max_parallel=4), base_dir=PROBE_DIR)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        slider = app.query_one("#limit-0", Slider)
        slider.focus()
        await pilot.press("right", "right", "right")  # debounced: the engine hears once the drag settles
        await until(pilot, lambda: controller.limits()["slots"] == 7, what="the slider's value to reach the engine")
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 7)
        probe.open_gate()
        await quit_idle(pilot, app)


async def test_pause_stops_new_starts_and_resume_continues(tmp_path, probe, make_controller):
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 30, [GATED], max_parallel=4), base_dir=PROBE_DIR)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        await pilot.press("p")
        assert app.status == "paused"
        assert probe.release_waiting() == 4
        await asyncio.to_thread(probe.wait_for, lambda p: p.finished == 4)
        await pilot.pause()
        snapshot = controller.snapshot()
        assert (snapshot.cells["running"], snapshot.cells["done"], len(probe.levels)) == (0, 4, 4)
        await pilot.press("space")
        assert app.status == "running"
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        probe.open_gate()
        await quit_idle(pilot, app)
    assert controller.wait(30).status == "done"


async def test_a_failed_cell_is_retried_by_key_and_becomes_done(tmp_path, tui_cols, make_controller):
    tui_cols.failing.update({3, 7})
    controller = make_controller(pipeline(tmp_path, 20, CHECKED))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle" and len(app.failures) == 2, what="two failures")
        await pilot.press("n")  # the next failed row after the cursor (row 0): row 3, column a
        assert (app.grid.cursor_row, app.grid.cursor_column) == (3, "a")
        assert app.grid.row_states(3) == ("failed", "blocked")
        tui_cols.failing.clear()
        await pilot.press("r")
        await until(pilot, lambda: controller.snapshot(rows=[3]).window[3] == ("done", "done"), what="row 3 done")
        await until(pilot, lambda: app.grid.row_states(3) == ("done", "done"), what="the grid to show it")
        await pilot.press("A")  # every failed cell left: row 7
        await until(pilot, lambda: controller.snapshot().cells["done"] == 40, what="every cell done")
        await quit_idle(pilot, app)
    result = controller.wait(30)
    assert result.status == "done"
    assert result.failures == []
    assert result.output.loc[3, "b"] == "4!"


async def test_drop_removes_the_row_from_the_output(tmp_path, tui_cols, make_controller):
    tui_cols.failing.add(5)
    controller = make_controller(pipeline(tmp_path, 12, CHECKED))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle" and app.failures, what="the failure")
        await pilot.press("3")  # the failed panel: r/R/d act on its selection
        assert isinstance(app.focused, DataTable)
        await pilot.press("d")
        await until(pilot, lambda: app.grid.row_states(5) == ("dropped", "dropped"), what="the grid to show it")
        assert app.failures == []
        await quit_idle(pilot, app)
    result = controller.wait(30)
    assert result.status == "done"
    assert 5 not in result.output["id"].tolist()
    assert len(result.output) == 11


async def test_detail_shows_the_error_and_retries_from_there(tmp_path, tui_cols, make_controller):
    tui_cols.failing.add(2)
    controller = make_controller(pipeline(tmp_path, 6, CHECKED))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle", what="idle")
        await pilot.press("n", "enter")
        assert isinstance(app.screen, CellDetailScreen)
        body = plain(app.screen.query_one("#detail-body"))
        assert "ValueError: row 2 is not ready" in body
        assert "inputs" in body
        tui_cols.failing.clear()
        await pilot.press("r")
        await until(pilot, lambda: controller.snapshot(rows=[2]).window[2] == ("done", "done"), what="row 2 done")
        await pilot.press("escape")
        assert not isinstance(app.screen, CellDetailScreen)
        await quit_idle(pilot, app)


async def test_detail_shows_the_retry_after_an_attempt_waited(tmp_path, probe, make_controller):
    probe.flaky_once_rows = {1}  # its first attempt answers "busy, retry after 10 ms"
    flaky = {"name": "a", "kind": "python", "function": "probe_cols:flaky_once"}
    controller = make_controller(pipeline(tmp_path, 3, [flaky], backoff_s=0), base_dir=PROBE_DIR)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle", what="idle")
        await pilot.press("down", "enter")
        assert isinstance(app.screen, CellDetailScreen)
        body = plain(app.screen.query_one("#detail-body"))
        assert "RetryableCellError: endpoint busy, try again (waited its Retry-After: 10 ms)" in body
        await pilot.press("escape", "s")
        assert isinstance(app.screen, SummaryScreen)
        await pilot.pause()
        summary = "\n".join(plain(static) for static in app.screen.query(Static))
        assert "attempts 4 · 1 retries · 0 timeouts · 0 failed · waited out Retry-After 1x (10 ms)" in summary
        await pilot.press("escape")
        await quit_idle(pilot, app)


async def test_the_summary_opens_when_every_cell_has_finished_and_q_there_closes_the_run(
    tmp_path, tui_cols, make_controller
):
    tui_cols.failing.add(1)
    controller = make_controller(pipeline(tmp_path, 8, CHECKED))
    app = TreadleApp(controller)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), what="the summary")
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to leave")
    result = controller.wait(30)
    assert result.status == "failed"
    assert (result.run_dir / "summary.json").is_file()


async def test_quitting_mid_run_asks_then_leaves_a_resumable_run(tmp_path, probe, make_controller):
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 40, [GATED], max_parallel=4), base_dir=PROBE_DIR)
    app = TreadleApp(controller)
    async with app.run_test(size=(80, 24)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("n")  # keep running
        assert not isinstance(app.screen, ConfirmQuitScreen)
        assert not controller.finished
        await pilot.press("q", "y")
        await until(pilot, lambda: controller.snapshot().status == "stopping", what="stopping")
        probe.open_gate()  # the running cells finish within the grace period
        await until(pilot, lambda: app.leaving, what="the app to leave")
    result = controller.wait(30)
    assert result.status == "interrupted"
    assert result.summary["rows"]["unfinished"] > 0


async def test_help_lists_the_keys_and_small_screens_switch_panels_by_number(tmp_path, tui_cols, make_controller):
    controller = make_controller(pipeline(tmp_path, 4, CHECKED))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Retry every failed cell of the run." in plain(app.screen.query_one(".help-body"))
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.query_one("#grid-panel").display and not app.query_one("#timeline-panel").display
        await pilot.press("2")
        assert app.query_one("#timeline-panel").display and not app.query_one("#grid-panel").display
        await quit_idle(pilot, app)


async def test_keys_are_remapped_by_action_id(tmp_path, probe, make_controller):
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 20, [GATED]), base_dir=PROBE_DIR)
    app = TreadleApp(controller, summary_on_idle=False, keymap={"pause": "x"})
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        await pilot.press("p")
        assert controller.snapshot().status == "running"
        await pilot.press("x")
        assert controller.snapshot().status == "paused"
        await pilot.press("x")
        probe.open_gate()
        await quit_idle(pilot, app)


async def test_the_grid_follows_the_frontier_until_the_person_scrolls(tmp_path, tui_cols, make_controller):
    tui_cols.hold_from = 300
    config = pipeline(
        tmp_path,
        500,
        [{"name": "a", "kind": "python", "function": "tui_cols:held"}],
        max_parallel=8,
        row_group_size=50,
        row_groups_in_flight=4,
    )
    controller = make_controller(config)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        grid = app.grid
        await until(pilot, lambda: controller.snapshot().cells["running"] == 8, what="8 rows held")
        await until(pilot, lambda: grid.top_row == 299, what="the grid to reach row 300")
        assert grid.follow
        await pilot.press("up")  # a person moves: the view stays where they put it
        assert not grid.follow
        await pilot.press("home")
        assert grid.top_row == 0
        await pilot.press("full_stop")
        assert grid.follow
        await until(pilot, lambda: grid.top_row == 299, what="the grid to follow again")
        tui_cols.release()
        await quit_idle(pilot, app)
    assert controller.wait(30).status == "done"


async def test_a_limit_the_engine_refuses_is_said_in_the_log_and_the_limit_stays(tmp_path, probe, make_controller):
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 10, [GATED], max_parallel=1), base_dir=PROBE_DIR)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 1)
        await pilot.press("minus")
        log = app.query_one("#log")
        await until(pilot, lambda: "not changed: limit 'slots' must be from 1" in "\n".join(log.lines), what="the log")
        assert controller.limits()["slots"] == 1
        probe.open_gate()
        await quit_idle(pilot, app)
    assert controller.wait(30).status == "done"
