"""The treadle terminal app: watch and steer one run through its RunController.

The engine runs on its own thread. The app polls `controller.snapshot(rows=<rows in view>)` a dozen
times a second, drains the event queue for its log, reads new traces for the timeline, and sends
commands (pause, limits, retry, drop, cancel, close) through the controller. It never receives a
message per cell change, and it stops the engine before it exits.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.containers import Container, Vertical
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Footer, Log, Static, Tab, Tabs

from treadle.engine.controller import RunController, Snapshot
from treadle.tui.actions import ActionSpec
from treadle.tui.commands import TreadleCommands
from treadle.tui.keymap import DEFAULT_KEYS, bindings
from treadle.tui.layout import CSS, NARROW_HEIGHT, NARROW_WIDTH, PANELS
from treadle.tui.model import FINAL, RateMeter, ViewStatus, eta_s, event_line, finished_cells, view_status
from treadle.tui.screens import CellDetailScreen, ConfirmQuitScreen, HelpScreen, QuitChoice, SummaryScreen
from treadle.tui.theme import COLOURS, GLYPHS, STATES
from treadle.tui.widgets.failed import FailedTable
from treadle.tui.widgets.grid import CellGrid
from treadle.tui.widgets.header import RunHeader
from treadle.tui.widgets.limits import LimitsPanel
from treadle.tui.widgets.timeline import Timeline

TICK_HZ = 12
HEADER_EVERY = 3
"""Ticks between header updates (elapsed, rate, ETA), unless the status changes."""
TIMELINE_EVERY = 3
"""Ticks between timeline updates (about 4 Hz: one character is ~0.3 s of the 30 s window)."""
FAILURES_EVERY_S = 0.5
EVENTS_PER_TICK = 200
EVENT_BACKLOG = 5000


def _legend() -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for state in STATES:
        text.append(f"{GLYPHS[state]} {state}  ", style=COLOURS[state])
    return text


class TreadleApp(App[None]):
    """Watch and steer a started run; exits once the run has stopped."""

    TITLE = "treadle"
    CSS = CSS
    BINDINGS = bindings("app")
    COMMANDS = App.COMMANDS | {TreadleCommands}

    def __init__(
        self,
        controller: RunController,
        *,
        keymap: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        summary_on_idle: bool = True,
        show_latency: bool = True,
        tick_hz: float = TICK_HZ,
    ) -> None:
        """`clock`: seconds since the run started, for elapsed time, rate, ETA and the timeline's
        window (default: the engine's clock); tests pass a fixed one so screenshots are stable.
        `show_latency=False` leaves measured latencies out of the summary (stable screenshots too)."""
        super().__init__()
        self.controller = controller
        self._events = controller.subscribe()
        self._clock = clock
        self._user_keymap = dict(keymap or {})
        self._summary_on_idle = summary_on_idle
        self._show_latency = show_latency
        self._tick_hz = tick_hz
        first = controller.snapshot()
        self.snap: Snapshot = first
        # Events before the subscription come from the snapshot's recent ones (the queue may repeat a few).
        self._backlog = list(first.recent_events)
        self._backlog_ids = {id(event) for event in self._backlog}
        self.run_name = controller.loaded.name
        self._group_size = controller.loaded.config.run.row_group_size
        self.rate = RateMeter()
        self.status: ViewStatus = "starting"
        self._closing_run = False
        self._stop_requested = False
        self._exit_when_finished = False
        self._exit_called = False
        self._cursor_text: Text | None = None
        self._gc_hold = ExitStack()
        self._idle_summary_shown = False
        self._final_summary_shown = False
        self._failed_count = -1
        self._failures_at = float("-inf")
        self.failures: list[dict[str, Any]] = []
        self._failed_rows: list[int] = []
        self._limits_seen: object = None
        self._ticks = 0
        self._narrow = False
        self.active_panel = "grid"

    # ---- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        snap = self.snap
        self._header = RunHeader(id="header")
        self._grid = CellGrid(snap.columns, snap.rows, id="grid")
        self._cursor_line = Static("", id="grid-cursor")
        self._limits = LimitsPanel(snap.limits, snap.rates, id="limits")
        self._failed = FailedTable(id="failed")
        self._timeline = Timeline(id="timeline")
        self._log_widget = Log(max_lines=2000, id="log")
        yield self._header
        yield Tabs(*(Tab(f"{i} {name}", id=f"tab-{name}") for i, name in enumerate(PANELS, 1)), id="tabs")
        with Container(id="body"):
            with Vertical(id="grid-panel", classes="panel -active") as panel:
                panel.border_title = f"cells · {snap.rows:,} rows × {len(snap.columns)} columns"
                yield self._grid
                yield self._cursor_line
                yield Static(_legend(), id="legend")
            with Vertical(id="limits-panel", classes="panel") as panel:
                panel.border_title = "concurrency"
                yield self._limits
            with Vertical(id="failed-panel", classes="panel") as panel:
                panel.border_title = "failed cells"
                yield self._failed
            with Vertical(id="timeline-panel", classes="panel") as panel:
                panel.border_title = "timeline · attempts per execution slot"
                yield self._timeline
            with Vertical(id="log-panel", classes="panel") as panel:
                panel.border_title = "log"
                yield self._log_widget
        yield Footer()

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

    def on_mount(self) -> None:
        # Full garbage collections stall a frame for 20-50 ms (bench/tui.py): while the app runs, what
        # exists now (seed rows, graph, widgets) is left out of them and they are rarer. Undone on unmount.
        self._gc_hold.enter_context(self.controller.tuned_gc())
        if self._user_keymap:
            self.set_keymap(self._user_keymap)
        self._apply_layout(self.size.width, self.size.height)
        self.grid.focus()
        self._tick()
        self.set_interval(1 / self._tick_hz, self._tick)

    def on_unmount(self) -> None:
        self._gc_hold.close()

    def on_resize(self, event: Resize) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        """Wide screens show every panel; small ones show one at a time, as tabs."""
        narrow = width < NARROW_WIDTH or height < NARROW_HEIGHT
        self._narrow = narrow
        self._main_screen.query_one("#body").set_class(narrow, "narrow")
        self._main_screen.query_one("#tabs", Tabs).display = narrow

    @property
    def _main_screen(self):
        return self.screen_stack[0]

    @property
    def leaving(self) -> bool:
        """The run has stopped and the app has asked to exit."""
        return self._exit_called

    def _leave(self) -> None:
        self._exit_called = True
        self.exit()

    def keys_in_force(self) -> dict[str, str]:
        return {**DEFAULT_KEYS, **self._user_keymap}

    # ---- the tick ----------------------------------------------------------------------------------

    def _now(self, snap: Snapshot) -> float:
        return self._clock() if self._clock is not None else snap.elapsed_s

    def _tick(self) -> None:
        """Poll the run once: counters, the rows in view, failures (when they change), events, traces."""
        if not self.is_running or self._exit_called:
            return
        controller = self.controller
        grid = self.grid
        snap = controller.snapshot(rows=grid.wanted_rows())
        self.snap = snap
        now = self._now(snap)
        self._ticks += 1
        self.rate.add(now, finished_cells(snap))
        previous, self.status = self.status, view_status(snap, self._closing_run)
        rate = self.rate.rate()
        final = self.status in FINAL
        if self._ticks % HEADER_EVERY == 1 or self.status != previous:
            self._show_header(snap, now, rate)
        grid.update_states(snap.window, snap.by_column, snap.row_groups.get("finished", 0) * self._group_size)
        self._show_cursor()
        limits_key = (snap.limits, snap.row_groups, snap.rates)
        if limits_key != self._limits_seen:
            self._limits_seen = limits_key
            self.limits_panel.update_limits(snap.limits, snap.row_groups, snap.rates)
        self._poll_failures(snap, now)
        self._drain_events()
        if self._ticks % TIMELINE_EVERY == 1 or final:
            self._poll_traces(snap, now)
        self._after_status(previous, snap)

    def _show_header(self, snap: Snapshot, now: float, rate: float | None) -> None:
        final = self.status in FINAL
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
        events = self._events
        lines = [line for line in map(event_line, self._backlog) if line is not None]
        self._backlog = []
        backlog = events.qsize()
        if backlog > EVENT_BACKLOG:
            skipped = backlog - EVENTS_PER_TICK
            for _ in range(skipped):
                events.get_nowait()
            lines.append(f"… {skipped:,} events not shown")
        for _ in range(EVENTS_PER_TICK):
            try:
                event = events.get_nowait()
            except queue.Empty:
                break
            if self._backlog_ids:
                if id(event) in self._backlog_ids:
                    continue
                self._backlog_ids = set()
            line = event_line(event)
            if line is not None:
                lines.append(line)
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
        if self._exit_when_finished and self.controller.finished:
            self._leave()
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

    @on(CellGrid.ViewMoved)
    def _view_moved(self) -> None:
        self.call_after_refresh(self._refresh_rows)

    def _refresh_rows(self) -> None:
        """A person scrolled: fetch the rows now in view without waiting for the next tick."""
        grid = self.grid
        snap = self.controller.snapshot(rows=grid.wanted_rows())
        grid.update_states(snap.window, snap.by_column, snap.row_groups.get("finished", 0) * self._group_size)
        self._show_cursor()

    @on(CellGrid.CursorMoved)
    def _cursor_moved(self) -> None:
        self._show_cursor()

    @on(CellGrid.DetailRequested)
    def _detail_requested(self, event: CellGrid.DetailRequested) -> None:
        self.push_screen(CellDetailScreen(self.controller, event.row, event.column))

    @on(FailedTable.RowSelected)
    def _failure_selected(self, event: FailedTable.RowSelected) -> None:
        selected = self.failed_table.selected()
        if selected is not None:
            self.push_screen(CellDetailScreen(self.controller, *selected))

    @on(LimitsPanel.Requested)
    def _limit_requested(self, event: LimitsPanel.Requested) -> None:
        self._set_limit(event.name, event.total)

    @on(Tabs.TabActivated)
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab.id:
            self._show_panel(event.tab.id.removeprefix("tab-"))

    # ---- actions: the run --------------------------------------------------------------------------

    def action_pause_toggle(self) -> None:
        if self.status in FINAL or self.status in ("stopping", "closing"):
            return
        if self.snap.status == "paused":
            self.controller.resume()
            self.notify("resumed", timeout=2)
        else:
            self.controller.pause()
            self.notify("paused: no new starts; running cells finish", timeout=3)
        self._tick()

    async def action_quit(self) -> None:
        """q (and ctrl+q): close an idle run and exit; ask first while cells remain; a second q while
        stopping stops at once."""
        controller = self.controller
        if controller.finished:
            self._leave()
            return
        status = view_status(controller.snapshot(), self._closing_run)
        if status == "idle":
            self._closing_run = True
            self._exit_when_finished = True
            controller.close()
        elif status == "closing":
            return
        elif status == "stopping" or self._stop_requested:
            controller.abort()
            self._exit_when_finished = True
            self.notify("stopping now: running cells are cancelled", timeout=3)
        else:
            snap = self.snap
            self.push_screen(
                ConfirmQuitScreen(
                    snap.cells.get("running", 0),
                    snap.total_cells - finished_cells(snap),
                    controller.options.grace_s,
                    str(controller.run_dir),
                ),
                self._quit_chosen,
            )

    def _quit_chosen(self, choice: QuitChoice | None) -> None:
        if choice is None:
            return
        self._stop_requested = True
        self._exit_when_finished = True
        if choice == "abort":
            self.controller.abort()
        else:
            self.controller.cancel()
            self.notify("stopping: running cells may finish; q again stops them now", timeout=4)
        self._tick()

    def action_summary(self) -> None:
        summary = self.controller.summary()
        snap = self.snap
        if self.status == "idle":
            failed, blocked = snap.cells.get("failed", 0), snap.cells.get("blocked", 0)
            headline = f"{self.run_name}: every cell has finished"
            headline += (
                f" ({failed:,} failed, {blocked:,} blocked): the run stays open for retries"
                if failed or blocked
                else ": q closes the run"
            )
        else:
            headline = f"{self.run_name}: {self.status}"
        self.push_screen(SummaryScreen(summary, headline, self._show_latency), self._summary_chosen)

    def _summary_chosen(self, choice: str | None) -> None:
        if choice == "quit":
            self.call_later(self.action_quit)
        elif choice == "retry_all":
            self.action_retry_all()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.keys_in_force()))

    # ---- actions: failed cells ---------------------------------------------------------------------

    def _target(self) -> tuple[int, str] | None:
        """The cell r/R/d act on: the open detail, the failed panel's selection, or the grid cursor."""
        if isinstance(self.screen, CellDetailScreen):
            return self.screen.row, self.screen.column
        if isinstance(self.focused, FailedTable):
            return self.focused.selected()
        grid = self.grid
        if not grid.columns or not grid.n_rows:
            return None
        return grid.cursor_row, grid.cursor_column

    def action_retry_cell(self) -> None:
        target = self._target()
        if target is None:
            return
        row, column = target
        if self.controller.retry(cells=[target]):
            self.notify(f"retrying row {row} {column}", timeout=2)
        else:
            state = self.controller.snapshot(rows=[row]).window.get(row)
            index = self.grid.columns.index(column) if column in self.grid.columns else -1
            cell_state = state[index] if state and index >= 0 else "?"
            hint = ": R retries the row's failed cells" if cell_state == "blocked" else ""
            self.notify(f"row {row} {column} is {cell_state}, not failed{hint}", severity="warning", timeout=3)
        self._after_command()

    def action_retry_row(self) -> None:
        target = self._target()
        if target is None:
            return
        n = self.controller.retry(rows=[target[0]])
        if n:
            self.notify(f"retrying {n} cell{'s' if n != 1 else ''} of row {target[0]}", timeout=2)
        else:
            self.notify(f"row {target[0]} has no failed cells", severity="warning", timeout=3)
        self._after_command()

    def action_retry_all(self) -> None:
        n = self.controller.retry(all_failed=True)
        self.notify(f"retrying {n:,} failed cell{'s' if n != 1 else ''}", timeout=2)
        self._after_command()

    def action_drop_row(self) -> None:
        target = self._target()
        if target is None:
            return
        if self.controller.drop([target[0]]):
            self.notify(f"dropped row {target[0]}: no more work, left out of the output", timeout=3)
        self._after_command()

    # actions the cell detail screen binds (it names them app.*_at)
    action_retry_cell_at = action_retry_cell
    action_retry_row_at = action_retry_row
    action_drop_row_at = action_drop_row

    def _after_command(self) -> None:
        if isinstance(self.screen, CellDetailScreen):
            self.screen.load()
        self._tick()
        self._poll_failures(self.snap, self._now(self.snap), force=True)

    def _jump_failed(self, step: int) -> None:
        rows = self._failed_rows
        if not rows:
            self.notify("no failed cells", timeout=2)
            return
        current = self.grid.cursor_row
        if step > 0:
            row = next((r for r in rows if r > current), rows[0])
        else:
            row = next((r for r in reversed(rows) if r < current), rows[-1])
        column = next((f["column"] for f in self.failures if f["row"] == row), None)
        grid = self.grid
        col = grid.columns.index(column) if column in grid.columns else grid.cursor_col
        self._show_panel("grid")
        grid.move_cursor(row, col)

    def action_next_failed(self) -> None:
        self._jump_failed(1)

    def action_prev_failed(self) -> None:
        self._jump_failed(-1)

    # ---- actions: limits ---------------------------------------------------------------------------

    def _selected_limit(self) -> str | None:
        panel = self.limits_panel
        return panel.focused_limit() or panel.selected or None

    def _set_limit(self, name: str, total: int) -> None:
        try:
            self.controller.set_limit(name, total)
        except ValueError as exc:
            self._log_widget.write_line(f"not changed: {exc}")
            self.notify(str(exc), severity="warning", timeout=4)
            return
        self.limits_panel.show_total(name, total)
        self._tick()

    def action_limit(self, delta: int) -> None:
        name = self._selected_limit()
        if name:
            self._set_limit(name, self.controller.limits()[name] + delta)

    def action_limit_scale(self, factor: float) -> None:
        name = self._selected_limit()
        if name:
            current = self.controller.limits()[name]
            scaled = round(current * factor)
            self._set_limit(name, max(1, scaled) if factor < 1 else max(current + 1, scaled))

    def action_next_limit(self) -> None:
        name = self.limits_panel.select_next()
        if name:
            self.notify(f"+ and - now change {name}", timeout=2)

    # ---- actions: panels ---------------------------------------------------------------------------

    def _panel_focus(self, name: str) -> Widget | None:
        if name == "limits":
            sliders = self.limits_panel.query("Slider")
            return sliders.first() if sliders else None
        return self._main_screen.query_one(f"#{name}")

    def _show_panel(self, name: str) -> None:
        self.active_panel = name
        for panel in PANELS:
            self._main_screen.query_one(f"#{panel}-panel").set_class(panel == name, "-active")
        tabs = self._main_screen.query_one("#tabs", Tabs)
        if tabs.active != f"tab-{name}":
            tabs.active = f"tab-{name}"
        target = self._panel_focus(name)
        if target is not None and target.focusable:
            target.focus()

    def action_tab(self, name: str) -> None:
        self._show_panel(name)

    def run_spec(self, spec: ActionSpec) -> None:
        """Run an action of the action table (the command palette's entries)."""
        namespace = self.grid if spec.scope == "grid" else self
        self.call_later(self.run_action, spec.action, namespace)
