"""The app's actions: what its keys, the command palette and the cell detail screen do to the run.

Commands go to the run through the controller; each is followed by a tick, so the panels show its
effect at once, and the refresh loop polls live a while (refresh.py). `AppActions` is a base of
`TreadleApp` (app.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from textual.widget import Widget
from textual.widgets import Tabs

from treadle.tui.actions import ActionSpec
from treadle.tui.column_editor import ColumnEditorScreen, ConfirmRecomputeScreen, PipelineDiffScreen
from treadle.tui.function_watch import FunctionWatch
from treadle.tui.keymap import DEFAULT_KEYS
from treadle.tui.layout import PANELS
from treadle.tui.model import FINAL, finished_cells, view_status
from treadle.tui.refresh import RefreshLoop
from treadle.tui.screens import CellDetailScreen, ConfirmQuitScreen, HelpScreen, QuitChoice, SummaryScreen
from treadle.tui.widgets.failed import FailedTable

T = TypeVar("T")


class AppActions(RefreshLoop):
    """The `action_*` methods the bindings and the action table (actions.py) name."""

    # Set by TreadleApp.__init__.
    _user_keymap: dict[str, str]
    _stop_requested: bool
    _show_latency: bool
    _function_watch: FunctionWatch
    active_panel: str

    def keys_in_force(self) -> dict[str, str]:
        return {**DEFAULT_KEYS, **self._user_keymap}

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
        self._tick_after_command()

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
            self._tick_after_command()
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
        self._tick_after_command()

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

    def _refused(self, command: Callable[[], T]) -> T | None:
        """A command's result; None, told to the person, if the run refuses it (ValueError: why)."""
        try:
            return command()
        except ValueError as exc:
            self._log_widget.write_line(str(exc))
            self.notify(str(exc), severity="error", timeout=6)
            return None

    def action_retry_cell(self) -> None:
        target = self._target()
        if target is None:
            return
        row, column = target
        retried = self._refused(lambda: self.controller.retry(cells=[target]))
        if retried is None:
            return
        if retried:
            self.notify(f"retrying row {row} {column}", timeout=2)
        else:
            state = self.controller.snapshot(rows=[row]).window.get(row)
            index = self.grid.columns.index(column) if column in self.grid.columns else -1
            cell_state = state[index] if state and index >= 0 else "?"
            hint = ": R retries the row's failed cells" if cell_state == "blocked" else ""
            self.notify(f"row {row} {column} is {cell_state}, not failed{hint}", severity="warning", timeout=3)
        self._after_command()

    def _marked_rows(self) -> list[int] | None:
        """The rows marked in the grid (`v`), which R, c and C act on; None when none is."""
        return sorted(self.grid.selected) or None

    def action_retry_row(self) -> None:
        marked = self._marked_rows()
        target = self._target()
        if target is None:
            return
        rows = marked or [target[0]]
        n = self._refused(lambda: self.controller.retry(rows=rows))
        if n is None:
            return
        where = f"row {rows[0]}" if len(rows) == 1 else f"{len(rows):,} marked rows"
        if n:
            self.notify(f"retrying {n} cell{'s' if n != 1 else ''} of {where}", timeout=2)
            self.grid.clear_selection()
        else:
            self.notify(f"{where} {'has' if len(rows) == 1 else 'have'} no failed cells", severity="warning", timeout=3)
        self._after_command()

    def action_retry_all(self) -> None:
        n = self._refused(lambda: self.controller.retry(all_failed=True))
        if n is None:
            return
        self.notify(f"retrying {n:,} failed cell{'s' if n != 1 else ''}", timeout=2)
        self._after_command()

    def action_drop_row(self) -> None:
        target = self._target()
        if target is None:
            return
        if self._refused(lambda: self.controller.drop([target[0]])):
            self.notify(f"dropped row {target[0]}: no more work, left out of the output", timeout=3)
        self._after_command()

    # ---- actions: fixing a column (tui/column_editor.py) --------------------------------------------

    def _target_column(self) -> str | None:
        target = self._target()
        return None if target is None else target[1]

    def action_edit_column(self) -> None:
        column = self._target_column()
        if column is None:
            return
        settings = self.controller.column_settings(column)
        if not settings.values:
            hint = f": F5 reloads {settings.function}" if settings.function else ""
            self.notify(f"{column} is a {settings.kind} column, it has no text to edit{hint}", timeout=4)
            return
        self.push_screen(ColumnEditorScreen(self.controller, column), lambda v: self._column_edited(column, v))

    def _column_edited(self, column: str, version: int | None) -> None:
        if version is None:
            return
        message = f"{column}: version {version} applies to its cells not started yet; c retries its failed cells"
        self._log_widget.write_line(message)
        self.notify(message, timeout=5)
        self._after_command()

    def _reload_changed_functions(self) -> None:
        """Once a second: python columns and filters whose function's file changed are reloaded, as F5 does."""
        for column in self._function_watch.changed():
            self._reload(column, f"{column}: its function's file changed; ")

    def action_reload_function(self) -> None:
        column = self._target_column()
        if column is not None:
            self._reload(column)

    def _reload(self, column: str, why: str = "") -> None:
        try:
            version = self.controller.reload_function(column)
        except ValueError as exc:
            self._log_widget.write_line(f"{why}not reloaded: {exc}")
            self.notify(f"{why}not reloaded: {exc}", severity="error", timeout=8)
            return
        self._function_watch.seen(column)
        self._column_edited(column, version)

    def action_retry_column(self) -> None:
        column = self._target_column()
        if column is None:
            return
        marked = self._marked_rows()
        n = self._refused(lambda: self.controller.retry(columns=[column], rows=marked or ()))
        if n is None:
            return
        where = f"{column}" + (f" in {len(marked):,} marked rows" if marked else "")
        if n:
            self.notify(f"retrying {n:,} failed cell{'s' if n != 1 else ''} of {where}", timeout=3)
            self.grid.clear_selection()
        else:
            self.notify(f"{where}: no failed cells", severity="warning", timeout=3)
        self._after_command()

    def action_recompute_column(self) -> None:
        column = self._target_column()
        if column is None:
            return
        marked = self._marked_rows()
        plan = self._refused(lambda: self.controller.recompute_plan(column, marked))
        if plan is None:
            return
        if not plan.cells:
            where = " among the marked rows" if marked else ""
            self.notify(f"{column} has no finished rows to recompute now{where}", severity="warning", timeout=3)
            return

        def chosen(yes: bool | None) -> None:
            if yes:
                n = self.controller.recompute(column, marked)
                self.notify(f"recomputing {n:,} cell{'s' if n != 1 else ''} of {column}", timeout=3)
                self.grid.clear_selection()
                self._after_command()

        self.push_screen(ConfirmRecomputeScreen(column, plan.cells, plan.calls), chosen)

    def action_save_pipeline(self) -> None:
        try:
            diff = self.controller.pipeline_file_edit()
        except ValueError as exc:
            self.notify(f"not saved: {exc}", severity="error", timeout=6)
            return
        if not diff:
            self.notify("the pipeline file already holds every change made", timeout=3)
            return

        def chosen(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.controller.pipeline_file_edit(save=True)
            except (ValueError, OSError) as exc:
                self.notify(f"not saved: {exc}", severity="error", timeout=6)
                return
            self._log_widget.write_line(f"saved the changes into {self.controller.loaded.path}")
            self.notify(f"saved into {self.controller.loaded.path}", timeout=4)

        self.push_screen(PipelineDiffScreen(diff), chosen)

    # actions the cell detail screen binds (it names them app.*_at)
    action_retry_cell_at = action_retry_cell
    action_retry_row_at = action_retry_row
    action_drop_row_at = action_drop_row

    def _after_command(self) -> None:
        if isinstance(self.screen, CellDetailScreen):
            self.screen.load()
        self._tick_after_command()
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
        self._tick_after_command()

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
