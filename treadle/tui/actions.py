"""Every action the app offers, in one table: the footer, the help screen and the command palette
read it, and keymap.py binds keys to its ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["app", "grid", "help", "confirm", "detail", "summary", "editor", "recompute", "save_file"]


@dataclass(frozen=True)
class ActionSpec:
    id: str
    """Stable id: users remap keys by it (`TreadleApp(keymap={id: keys})`)."""
    action: str
    """The Textual action string run on the scope's node (`pause_toggle`, `tab('grid')`...)."""
    title: str
    """Short label for the footer and the palette."""
    help: str
    """One sentence for the help screen and the palette."""
    scope: Scope = "app"
    footer: bool = False
    palette: bool = True


ACTIONS: tuple[ActionSpec, ...] = (
    # the run
    ActionSpec(
        "pause",
        "pause_toggle",
        "pause",
        "Pause or resume: pausing stops new starts; running cells finish.",
        footer=True,
    ),
    ActionSpec(
        "quit",
        "quit",
        "quit",
        "Quit: asks first while cells are running and leaves a resumable run "
        "directory; once the run is idle it closes it and exits.",
        footer=True,
    ),
    ActionSpec("summary", "summary", "summary", "Show the run summary (counts, latency, output paths)."),
    # failed cells
    ActionSpec(
        "retry_cell",
        "retry_cell",
        "retry",
        "Retry the selected failed cell (failed panel or grid cursor).",
        footer=True,
    ),
    ActionSpec("retry_row", "retry_row", "retry row", "Retry every failed cell of the selected row."),
    ActionSpec("retry_all", "retry_all", "retry all", "Retry every failed cell of the run.", footer=True),
    ActionSpec("drop_row", "drop_row", "drop row", "Drop the selected row: no more work, left out of the output."),
    # fixing a column (the cursor's, the failed panel's selection, or the open cell's)
    ActionSpec(
        "edit_column",
        "edit_column",
        "edit column",
        "Edit the column's prompt, system prompt, temperature, max tokens, template or filter expression; "
        "saved, it applies to the cells not started yet.",
    ),
    ActionSpec(
        "reload_function",
        "reload_function",
        "reload function",
        "Reload a python column's function (or a filter's; batch or not) from its file; new starts and batch "
        "calls use it (an import error keeps the old one).",
    ),
    ActionSpec(
        "retry_column", "retry_column", "retry column", "Retry the column's failed cells (and their dependents)."
    ),
    ActionSpec(
        "recompute_column",
        "recompute_column",
        "recompute column",
        "Run the column again for the rows that finished it, with its dependents (asks first, with the calls).",
    ),
    ActionSpec(
        "save_pipeline",
        "save_pipeline",
        "save to pipeline file",
        "Write the changes made to columns into the pipeline file (shows the diff first).",
    ),
    ActionSpec("next_failed", "next_failed", "next failed", "Move the grid cursor to the next failed row."),
    ActionSpec("prev_failed", "prev_failed", "prev failed", "Move the grid cursor to the previous failed row."),
    # limits
    ActionSpec(
        "limit_up",
        "limit(1)",
        "raise",
        "Raise the selected limit by one (slots unless a model is selected).",
        footer=True,
    ),
    ActionSpec(
        "limit_down",
        "limit(-1)",
        "lower",
        "Lower the selected limit by one; running cells are never cancelled.",
        footer=True,
    ),
    ActionSpec("limit_double", "limit_scale(2.0)", "x2", "Double the selected limit."),
    ActionSpec("limit_halve", "limit_scale(0.5)", "/2", "Halve the selected limit."),
    ActionSpec("next_limit", "next_limit", "next limit", "Select the next limit (slots, then each model)."),
    # panels
    ActionSpec("tab_grid", "tab('grid')", "grid", "Show the grid of cells (a tab on small screens)."),
    ActionSpec("tab_timeline", "tab('timeline')", "timeline", "Show the timeline of recent attempts per slot."),
    ActionSpec("tab_failed", "tab('failed')", "failed", "Show the failed cells."),
    ActionSpec("tab_log", "tab('log')", "log", "Show the event log."),
    ActionSpec("tab_limits", "tab('limits')", "limits", "Show the concurrency limits."),
    ActionSpec("help", "help", "help", "Show every key.", footer=True),
    # the grid (active when it has focus)
    ActionSpec("grid.up", "cursor(0,-1)", "up", "Move the cursor up a row.", scope="grid", palette=False),
    ActionSpec("grid.down", "cursor(0,1)", "down", "Move the cursor down a row.", scope="grid", palette=False),
    ActionSpec(
        "grid.left", "cursor(-1,0)", "left", "Move the cursor to the column on the left.", scope="grid", palette=False
    ),
    ActionSpec(
        "grid.right", "cursor(1,0)", "right", "Move the cursor to the column on the right.", scope="grid", palette=False
    ),
    ActionSpec("grid.page_up", "page(-1)", "page up", "Move the cursor up a page.", scope="grid", palette=False),
    ActionSpec("grid.page_down", "page(1)", "page down", "Move the cursor down a page.", scope="grid", palette=False),
    ActionSpec("grid.top", "jump('top')", "top", "Move the cursor to the first row.", scope="grid", palette=False),
    ActionSpec(
        "grid.bottom", "jump('bottom')", "bottom", "Move the cursor to the last row.", scope="grid", palette=False
    ),
    ActionSpec(
        "grid.detail", "detail", "details", "Show the cursor cell: value or error, attempts, inputs.", scope="grid"
    ),
    ActionSpec(
        "grid.follow", "follow", "follow", "Follow the active frontier again (the first unfinished row).", scope="grid"
    ),
    ActionSpec(
        "grid.select",
        "select",
        "mark row",
        "Mark the cursor row (again: unmark it); R, c and C then act on the marked rows.",
        scope="grid",
    ),
    # modal screens (not in the palette)
    *(
        ActionSpec(id, action, title, help, scope=scope, palette=False)  # type: ignore[arg-type]
        for id, action, title, help, scope in (
            ("help.close", "dismiss", "close", "Close the help.", "help"),
            ("confirm.stop", "choose('stop')", "stop", "Quit dialog: stop; running cells may finish.", "confirm"),
            ("confirm.abort", "choose('abort')", "stop now", "Quit dialog: stop, cancelling running cells.", "confirm"),
            ("confirm.cancel", "choose('')", "keep running", "Quit dialog: keep the run going.", "confirm"),
            ("detail.close", "dismiss", "close", "Cell detail: close.", "detail"),
            ("detail.retry_cell", "app.retry_cell_at", "retry cell", "Cell detail: retry this cell.", "detail"),
            (
                "detail.retry_row",
                "app.retry_row_at",
                "retry row",
                "Cell detail: retry the row's failed cells.",
                "detail",
            ),
            ("detail.drop_row", "app.drop_row_at", "drop row", "Cell detail: drop this row.", "detail"),
            ("detail.edit_column", "app.edit_column", "edit column", "Cell detail: edit its column.", "detail"),
            (
                "detail.reload_function",
                "app.reload_function",
                "reload function",
                "Cell detail: reload its python column's or filter's function.",
                "detail",
            ),
            ("editor.save", "save", "save", "Column editor: check and apply the change.", "editor"),
            ("editor.cancel", "cancel", "cancel", "Column editor: close, nothing applied.", "editor"),
            ("recompute.yes", "choose('yes')", "recompute", "Recompute dialog: run the column again.", "recompute"),
            ("recompute.no", "choose('no')", "cancel", "Recompute dialog: keep things as they are.", "recompute"),
            ("save_file.yes", "choose('yes')", "write", "Save dialog: write the pipeline file.", "save_file"),
            ("save_file.no", "choose('no')", "cancel", "Save dialog: leave the file as it is.", "save_file"),
            ("summary.back", "dismiss", "back", "Summary: back to the run.", "summary"),
            ("summary.quit", "choose('quit')", "close and quit", "Summary: close the run and quit.", "summary"),
            ("summary.retry_all", "choose('retry_all')", "retry all", "Summary: retry every failed cell.", "summary"),
        )
    ),
)
