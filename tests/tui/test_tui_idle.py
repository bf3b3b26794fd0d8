"""An app over a run where nothing runs costs close to nothing: it reads the run rarely (idle, or paused
once its running cells have finished) or never again (the run has ended), and a command or a resume
makes it follow the run live again."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from tui_helpers import PROBE_DIR, TUI_DATA, pipeline, plain, until

import treadle
import treadle.tui.refresh
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions
from treadle.tui.app import TreadleApp
from treadle.tui.screens import SummaryScreen

CHECKED = [
    {"name": "a", "kind": "python", "function": "tui_cols:checked"},
    {"name": "b", "kind": "template", "template": "{{ a }}!"},
]
GATED = {"name": "a", "kind": "python", "function": "probe_cols:gated"}
QUIET_STRETCH_S = 0.6
"""A stretch of quiet time: the app polling live (12 Hz) would read the run ~7 times in it."""


def count_reads(controller: RunController) -> Counter[str]:
    """Count the app's reads of the run (snapshots, traces, failures) from now on."""
    reads: Counter[str] = Counter()
    for name in ("snapshot", "traces", "failures"):
        read = getattr(controller, name)

        def counted(*args, _read=read, _name=name, **kwargs):
            reads[_name] += 1
            return _read(*args, **kwargs)

        setattr(controller, name, counted)
    return reads


async def reads_over_a_quiet_stretch(pilot, reads: Counter[str]) -> int:
    before = reads.total()
    await pilot.pause(QUIET_STRETCH_S)
    return reads.total() - before


async def test_an_idle_run_is_not_read_until_a_retry_makes_the_app_live_again(tmp_path, tui_cols, make_controller):
    tui_cols.failing.add(3)
    controller = make_controller(pipeline(tmp_path, 20, CHECKED))
    reads = count_reads(controller)
    app = TreadleApp(controller, quiet_poll_s=60)  # the summary opens when the run goes idle
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), what="the idle run's summary")
        assert (app.status, len(app.failures)) == ("idle", 1)
        await until(pilot, lambda: app.grid.row_states(19) == ("done", "done"), what="the grid to show every row")
        await until(pilot, lambda: app.pace == "quiet", what="the app to go quiet")
        assert await reads_over_a_quiet_stretch(pilot, reads) == 0
        tui_cols.failing.clear()
        await pilot.press("A")  # retry every failed cell, from the summary
        # Only live polling sees the retried cells finish: a quiet poll would be a minute away.
        await until(pilot, lambda: app.grid.row_states(3) == ("done", "done"), what="the grid to show row 3 done")
        await until(pilot, lambda: app.status == "idle" and app.failures == [], what="the app to show the run idle")
        await until(pilot, lambda: app.pace == "quiet", what="the app to go quiet again")
        assert await reads_over_a_quiet_stretch(pilot, reads) == 0
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to close the run and leave")
    assert controller.wait(30).status == "done"


async def test_a_paused_run_is_read_once_in_a_while_and_resuming_follows_it_live(
    tmp_path, probe, make_controller, monkeypatch
):
    monkeypatch.setattr(treadle.tui.refresh, "LIVE_AFTER_COMMAND_S", 0.0)  # live only while cells run
    probe.close_gate()
    controller = make_controller(pipeline(tmp_path, 30, [GATED], max_parallel=4), base_dir=PROBE_DIR)
    reads = count_reads(controller)
    app = TreadleApp(controller, summary_on_idle=False, quiet_poll_s=60)
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        await pilot.press("p")
        assert (app.status, app.pace) == ("paused", "live")  # its running cells still finish
        probe.release_waiting()
        await until(pilot, lambda: app.snap.cells["running"] == 0, what="the app to see the running cells end")
        assert (app.pace, app.snap.cells["done"]) == ("quiet", 4)
        assert await reads_over_a_quiet_stretch(pilot, reads) == 0
        await pilot.press("p")  # resume: 4 more start and wait at the gate
        await asyncio.to_thread(probe.wait_for, lambda p: p.running == 4)
        await until(pilot, lambda: app.snap.cells["running"] == 4, what="the app to see the cells run")
        assert app.pace == "live"
        probe.open_gate()
        await until(pilot, lambda: app.status == "idle", what="the app to follow the run to its end")
        assert app.snap.cells["done"] == 30
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to close the run and leave")


@pytest.fixture
def ended_controller(tmp_path, tui_cols):
    """A run not held open: it ends by itself once its cells have finished."""
    loaded = treadle.load(pipeline(tmp_path, 10, CHECKED), base_dir=TUI_DATA)
    controller = RunController(loaded, RunOptions(out=Path(tmp_path / "run")))
    yield controller.start()
    controller.wait(30)


async def test_an_ended_run_is_not_read_again(ended_controller):
    reads = count_reads(ended_controller)
    app = TreadleApp(ended_controller, quiet_poll_s=0.05)  # were it still polling, it would be often
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.grid.row_states(9) == ("done", "done"), what="the grid to show every row")
        await until(pilot, lambda: app.pace == "stopped", what="the app to see the run end")
        assert await reads_over_a_quiet_stretch(pilot, reads) == 0
        assert isinstance(app.screen, SummaryScreen)
        assert "● done" in plain(app.query_one("#header"))


async def test_behind_the_summary_of_an_idle_run_the_panels_wait_for_it_to_close(tmp_path, tui_cols, make_controller):
    controller = make_controller(pipeline(tmp_path, 20, CHECKED))
    app = TreadleApp(controller, quiet_poll_s=0.05)  # polled often while idle: each poll could redraw
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), what="the idle run's summary")
        await until(pilot, lambda: app.pace == "quiet", what="the app to go quiet")
        shown = Counter[str]()
        add = app.timeline.add

        def counted_add(*args, **kwargs):
            shown["timeline"] += 1
            return add(*args, **kwargs)

        app.timeline.add = counted_add  # type: ignore[method-assign]
        await pilot.pause(QUIET_STRETCH_S)
        # Any change behind a modal redraws the whole screen: the timeline's window moving on waits.
        assert shown["timeline"] == 0
        await pilot.press("escape")
        await until(pilot, lambda: shown["timeline"] > 0, what="the timeline to catch up once the summary closed")
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to close the run and leave")
