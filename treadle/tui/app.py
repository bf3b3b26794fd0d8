"""The treadle terminal app: watch and steer one run through its RunController.

The engine runs on its own thread. The app polls `controller.snapshot(rows=<rows in view>)` a dozen
times a second while cells run (once a second while none does, never once the run has ended: refresh.py),
drains the event queue for its log, reads new traces for the timeline, and sends
commands (pause, limits, retry, drop, cancel, close) through the controller. It never receives a
message per cell change, and it stops the engine before it exits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.containers import Container, Vertical
from textual.events import Resize
from textual.widgets import Footer, Log, Static, Tab, Tabs

from treadle.engine.controller import RunController, Snapshot
from treadle.tui.app_actions import AppActions
from treadle.tui.commands import TreadleCommands
from treadle.tui.event_log import EventFeed
from treadle.tui.function_watch import FunctionWatch
from treadle.tui.keymap import bindings
from treadle.tui.layout import CSS, NARROW_HEIGHT, NARROW_WIDTH, PANELS
from treadle.tui.model import RateMeter, ViewStatus
from treadle.tui.refresh import QUIET_POLL_S, TICK_HZ
from treadle.tui.screens import CellDetailScreen
from treadle.tui.theme import CACHED, COLOURS, FILTERED, GLYPHS, STATES
from treadle.tui.widgets.failed import FailedTable
from treadle.tui.widgets.grid import CellGrid
from treadle.tui.widgets.header import RunHeader
from treadle.tui.widgets.limits import LimitsPanel
from treadle.tui.widgets.timeline import Timeline
from treadle.tui.widgets.workers import WorkersPanel


def _legend(columns: Sequence[Any], uses_cache: bool) -> Text:
    """The grid's marks this run can show (the line has no room to spare): `degraded` only where a column
    falls back to a default, `cached` with the response cache, `filtered` with a filter column."""
    degrades = any(not isinstance(c.on_failure, str) for c in columns)  # `on_failure: {default: ...}`
    states = [state for state in STATES if state != "degraded" or degrades]
    filters = any(c.kind == "filter" for c in columns)
    text = Text(no_wrap=True, overflow="ellipsis")
    for state in (*states, *[CACHED] * uses_cache, *[FILTERED] * filters):
        text.append(f"{GLYPHS[state]} {state} ", style=COLOURS[state])
    return text


class TreadleApp(AppActions):
    """Watch and steer a started run; exits once the run has stopped.

    Its refresh loop is in refresh.py (`RefreshLoop`), its actions in app_actions.py (`AppActions`),
    the log's lines in event_log.py; here: its state, layout and the messages its widgets send."""

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
        quiet_poll_s: float = QUIET_POLL_S,
    ) -> None:
        """`clock`: seconds since the run started, for elapsed time, rate, ETA and the timeline's
        window (default: the engine's clock); tests pass a fixed one so screenshots are stable.
        `show_latency=False` leaves measured latencies out of the summary (stable screenshots too).
        `tick_hz`: polls a second while cells run; `quiet_poll_s`: seconds between polls while none does."""
        super().__init__()
        self.controller = controller
        self._clock = clock
        self._user_keymap = dict(keymap or {})
        self._summary_on_idle = summary_on_idle
        self._show_latency = show_latency
        self._tick_hz = tick_hz
        self._quiet_poll_s = quiet_poll_s
        first = controller.snapshot()
        self.snap: Snapshot = first
        # Events before the subscription come from the snapshot's recent ones (the queue may repeat a few).
        self._event_feed = EventFeed(controller.subscribe(), first.recent_events)
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
        self.active_panel = "grid"

    # ---- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        snap = self.snap
        self._header = RunHeader(id="header")
        self._grid = CellGrid(snap.columns, snap.rows, id="grid")
        self._cursor_line = Static("", id="grid-cursor")
        self._limits = LimitsPanel(snap.limits, snap.rates, id="limits")
        self._workers_panel = WorkersPanel(id="workers")
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
                yield Static(_legend(self.controller.loaded.config.columns, bool(snap.cache)), id="legend")
            with Vertical(id="limits-panel", classes="panel") as panel:
                panel.border_title = "concurrency"
                yield self._limits
                yield self._workers_panel
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

    def on_mount(self) -> None:
        # Full garbage collections stall a frame for 20-50 ms (bench/tui.py): while the app runs, what
        # exists now (seed rows, graph, widgets) is left out of them and they are rarer. Undone on unmount.
        self._gc_hold.enter_context(self.controller.tuned_gc())
        if self._user_keymap:
            self.set_keymap(self._user_keymap)
        self._apply_layout(self.size.width, self.size.height)
        self.grid.focus()
        self._start_ticking()
        self._function_watch = FunctionWatch(self.controller)
        self.set_interval(1.0, self._reload_changed_functions)

    def on_unmount(self) -> None:
        self._gc_hold.close()

    def on_resize(self, event: Resize) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        """Wide screens show every panel; small ones show one at a time, as tabs."""
        narrow = width < NARROW_WIDTH or height < NARROW_HEIGHT
        self._main_screen.query_one("#body").set_class(narrow, "narrow")
        self._main_screen.query_one("#tabs", Tabs).display = narrow

    # ---- what the widgets ask for -------------------------------------------------------------------

    @on(CellGrid.ViewMoved)
    def _view_moved(self) -> None:
        self.call_after_refresh(self._refresh_rows)

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
