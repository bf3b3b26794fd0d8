"""The app's refresh loop: a dozen times a second, one snapshot of the run brings every panel up to date.

While no cell runs (idle, or paused once running cells have finished) the run changes only by a command,
so the loop slows to one poll a second; once the run has ended it stops. A command from the app ticks at
once (app_actions.py), so the loop is live again as soon as it has work to show.

`RefreshLoop` is the base of `TreadleApp` (app.py), which sets the state and widgets declared here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from rich.text import Text
from textual.app import App
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Log, Static

from treadle.engine.controller import RunController, Snapshot
from treadle.tui.event_log import EventFeed
from treadle.tui.model import FINAL, RateMeter, ViewStatus, eta_s, finished_cells, view_status
from treadle.tui.theme import COLOURS
from treadle.tui.widgets.failed import FailedTable
from treadle.tui.widgets.grid import CellGrid
from treadle.tui.widgets.header import RunHeader
from treadle.tui.widgets.limits import LimitsPanel
from treadle.tui.widgets.timeline import Timeline
from treadle.tui.widgets.workers import WorkersPanel

TICK_HZ = 12
HEADER_EVERY = 3
"""Ticks between header updates (elapsed, rate, ETA), unless the status changes."""
TIMELINE_EVERY = 3
"""Ticks between timeline updates (about 4 Hz: one character is ~0.3 s of the 30 s window)."""
FAILURES_EVERY_S = 0.5
QUIET_POLL_S = 1.0
"""Between polls while nothing runs: enough for the clock, rates decaying over the last minute, and
commands from elsewhere (`--serve`); the app's own commands tick at once."""

LIVE_AFTER_COMMAND_S = 2.0
"""The loop stays live this long after a command: its effect may reach snapshots later (the workers of a
run on several processes report it)."""

Pace = Literal["live", "quiet", "stopped"]
"""How often the loop polls: `TICK_HZ`, every `QUIET_POLL_S`, or never again (the run has ended)."""


class RefreshLoop(App[None]):
    """Polls the run (`_tick`) and shows what changed; opens the summary when the run goes idle or ends."""

    # The app's state, set by TreadleApp.__init__.
    controller: RunController
    snap: Snapshot
    status: ViewStatus
    rate: RateMeter
    run_name: str
    failures: list[dict[str, Any]]
    _clock: Callable[[], float] | None
    _event_feed: EventFeed
    _group_size: int
    _summary_on_idle: bool
    _closing_run: bool
    _exit_when_finished: bool
    _exit_called: bool
    _cursor_text: Text | None
    _idle_summary_shown: bool
    _final_summary_shown: bool
    _failed_count: int
    _failures_at: float
    _failed_rows: list[int]
    _limits_seen: object
    _ticks: int
    _tick_hz: float
    _quiet_poll_s: float
    pace: Pace
    _pace_timers: dict[Pace, Timer]
    _live_until: float
    _header_clock: float
    # Its widgets, made by TreadleApp.compose.
    _header: RunHeader
    _grid: CellGrid
    _cursor_line: Static
    _limits: LimitsPanel
    _workers_panel: WorkersPanel
    _failed: FailedTable
    _timeline: Timeline
    _log_widget: Log

    def action_summary(self) -> None:
        """Open the run's summary (the app's `summary` action, defined in app_actions.py)."""
        raise NotImplementedError

    @property
    def grid(self) -> CellGrid:
        return self._grid

    @property
    def timeline(self) -> Timeline:
        return self._timeline

    @property
    def limits_panel(self) -> LimitsPanel:
        return self._limits

    @property
    def failed_table(self) -> FailedTable:
        return self._failed

    @property
    def _main_screen(self) -> Screen[Any]:
        return self.screen_stack[0]

    @property
    def leaving(self) -> bool:
        """The run has stopped and the app has asked to exit."""
        return self._exit_called

    def _leave(self) -> None:
        self._exit_called = True
        self.exit()

    # ---- the pace ----------------------------------------------------------------------------------

    def _start_ticking(self) -> None:
        """Tick now, then on the timer the run's state calls for."""
        self.pace = "live"
        self._live_until = 0.0
        self._header_clock = 0.0
        self._pace_timers = {
            "live": self.set_interval(1 / self._tick_hz, self._tick),
            "quiet": self.set_interval(self._quiet_poll_s, self._tick, pause=True),
        }
        self._tick()

    def _pace_now(self, ended: bool) -> Pace:
        """The pace the latest snapshot calls for (`ended`: the run had ended before it was taken, so
        it shows the end)."""
        if ended:
            return "stopped"
        if time.monotonic() < self._live_until:
            return "live"
        # (a run whose status is final but whose engine has not ended yet is writing its outputs: soon over)
        quiet = self.status in ("idle", "paused") and not self.snap.cells.get("running", 0)
        return "quiet" if quiet else "live"

    def _tick_after_command(self) -> None:
        """A command was sent: show its effect now, and keep polling live while it may still arrive."""
        self._live_until = time.monotonic() + LIVE_AFTER_COMMAND_S
        self._tick()

    def _set_pace(self, pace: Pace) -> None:
        """Poll at `pace` from now on: the other timer waits, paused (a stopped run stops both)."""
        if pace == self.pace:
            return
        self.pace = pace
        for name, timer in self._pace_timers.items():
            if name == pace:
                timer.resume()
            else:
                timer.pause()

    # ---- the tick ----------------------------------------------------------------------------------

    def _now(self, snap: Snapshot) -> float:
        return self._clock() if self._clock is not None else snap.elapsed_s

    def _tick(self) -> None:
        """Poll the run once: counters, the rows in view, failures (when they change), events, traces."""
        if not self.is_running or self._exit_called:
            return
        controller = self.controller
        grid = self.grid
        ended = controller.finished
        snap = controller.snapshot(rows=grid.wanted_rows())
        self.snap = snap
        now = self._now(snap)
        self._ticks += 1
        self.rate.add(now, finished_cells(snap))
        previous, self.status = self.status, view_status(snap, self._closing_run)
        rate = self.rate.rate()
        final = self.status in FINAL
        pace = self._pace_now(ended)
        every = pace != "live"  # a slow tick shows all it has: the next one is a second away, or never
        # Under a modal screen any change behind it redraws the whole screen (its dimmed background): while
        # nothing runs, the clock and the panels' rates dying down there wait for it to close.
        covered = every and len(self.screen_stack) > 1
        if every or self._ticks % HEADER_EVERY == 1 or self.status != previous:
            self._show_header(snap, self._header_clock if covered else now, rate)
        grid.update_states(snap.window, snap.by_column, snap.row_groups.get("finished", 0) * self._group_size)
        self._show_cursor()
        limits_key = (snap.limits, snap.row_groups, snap.rates)
        if limits_key != self._limits_seen and not covered:
            self._limits_seen = limits_key
            self.limits_panel.update_limits(snap.limits, snap.row_groups, snap.rates)
        self._workers_panel.show(snap.workers)
        self._poll_failures(snap, now, force=every and pace != self.pace)  # the panel as it stays
        self._drain_events()
        if (not covered and (every or self._ticks % TIMELINE_EVERY == 1)) or final:
            self._poll_traces(snap, now)
        self._after_status(previous, snap)
        if not self._exit_called:
            self._set_pace(pace)

    def _show_header(self, snap: Snapshot, now: float, rate: float | None) -> None:
        final = self.status in FINAL
        self._header_clock = now
        self._header.show(
            self.run_name,
            snap,
            self.status,
            now,
            None if final or self.status == "idle" else rate,
            None if final else eta_s(snap, rate),
        )

    def _show_cursor(self) -> None:
        grid = self.grid
        text = Text(no_wrap=True, overflow="ellipsis")
        if grid.columns:
            states = grid.row_states(grid.cursor_row)
            text.append(f"cursor: row {grid.cursor_row} · {grid.cursor_column}")
            if states:
                state = states[grid.cursor_col]
                text.append(": ")
                text.append(state, style=COLOURS.get(state, ""))
            text.append("  (enter: details)", style="dim")
        text.append("   following the frontier" if grid.follow else "   scrolled: . follows again", style="dim")
        if text != self._cursor_text:
            self._cursor_text = text
            self._cursor_line.update(text, layout=False)

    def _poll_failures(self, snap: Snapshot, now: float, force: bool = False) -> None:
        failed = snap.cells.get("failed", 0)
        due = time.monotonic() - self._failures_at >= FAILURES_EVERY_S
        if not force and not (due and (failed != self._failed_count or (failed and self._ticks % 24 == 0))):
            return
        self._failures_at = time.monotonic()
        self._failed_count = failed
        self.failures = self.controller.failures()
        self._failed_rows = sorted({f["row"] for f in self.failures})
        table = self.failed_table
        table.show(self.failures)
        shown = f" (first {len(table.failures):,} shown)" if table.total > len(table.failures) else ""
        title = f"failed cells · {table.total:,}{shown}"
        panel = self._failed.parent
        if isinstance(panel, Widget) and panel.border_title != title:
            panel.border_title = title

    def _drain_events(self) -> None:
        lines = self._event_feed.take()
        if lines:
            self._log_widget.write_lines(lines)

    def _poll_traces(self, snap: Snapshot, now: float) -> None:
        timeline = self.timeline
        traces_of = getattr(self.controller, "traces", None)
        if traces_of is None:  # an engine without tracing: the timeline stays empty
            return
        cursor, traces = traces_of(timeline.cursor)
        timeline.cursor = cursor
        slots = snap.limits.get("slots")
        timeline.add(traces, now, slots.total if slots else None)

    def _after_status(self, previous: ViewStatus, snap: Snapshot) -> None:
        status = self.status
        if self.controller.failed_to_run or (self._exit_when_finished and self.controller.finished):
            self._leave()  # an error that ended the run: printed once the app has left the screen
            return
        if status != "idle":
            self._idle_summary_shown = False
        if status == "idle" and previous != "idle" and self._summary_on_idle and not self._idle_summary_shown:
            self._idle_summary_shown = True
            if len(self.screen_stack) == 1:
                self.action_summary()
        if status in FINAL and not self._final_summary_shown and not self._exit_when_finished:
            self._final_summary_shown = True
            if len(self.screen_stack) == 1:
                self.action_summary()

    def _refresh_rows(self) -> None:
        """A person scrolled (or the grid resized): fetch the rows now in view without waiting for the next
        tick, unless the last snapshot carried them all."""
        grid = self.grid
        rows = grid.wanted_rows()
        if all(row in grid.window for row in rows):
            return
        snap = self.controller.snapshot(rows=rows)
        grid.update_states(snap.window, snap.by_column, snap.row_groups.get("finished", 0) * self._group_size)
        self._show_cursor()
