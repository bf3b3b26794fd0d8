"""Fixing a column from the app: the editor of an llm column's prompts and parameters, a template
column's template or a filter's expression, the confirmation before a column is recomputed, and the
diff shown before the changes are written into the pipeline file.

The editor checks the text as it is typed (a quarter of a second after the last key) the way `treadle
validate` would, through `controller.check_column`: a Jinja2 syntax error or an unknown field shows
under the text, with the fields the column may read listed above it. Saving checks again and applies
through `controller.update_column`; a refused change stays in the editor, and nothing is applied.
"""

from __future__ import annotations

from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, Static, TextArea

from treadle.tui.keymap import bindings
from treadle.tui.screens import modal_css

CHECK_AFTER_S = 0.25
"""The editor checks the text this long after the last key."""
_TEXT_FIELDS = ("prompt", "system", "template", "expression")
_NUMBER_FIELDS = ("temperature", "max_tokens")


class ColumnEditorScreen(ModalScreen[int | None]):
    """Edit one column; dismissed with the new pipeline version, or None when nothing was applied."""

    BINDINGS = bindings("editor")
    DEFAULT_CSS = (
        modal_css("ColumnEditorScreen")
        + """
    ColumnEditorScreen > Vertical { width: 110; height: 90%; }
    ColumnEditorScreen VerticalScroll { height: 1fr; }
    ColumnEditorScreen TextArea { height: auto; min-height: 4; max-height: 14; }
    ColumnEditorScreen Horizontal { height: auto; }
    ColumnEditorScreen Input { width: 24; margin-right: 2; }
    ColumnEditorScreen #editor-fields { color: $text-muted; }
    ColumnEditorScreen #editor-check { height: auto; margin-top: 1; }
    ColumnEditorScreen .label { margin-top: 1; text-style: bold; }
    """
    )

    def __init__(self, controller: Any, column: str) -> None:
        super().__init__()
        self.controller = controller
        self.column = column
        self.settings = controller.column_settings(column)
        self.problem: str | None = None
        """The change's problem at the last check (None: it would be applied)."""
        self._check_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        settings = self.settings
        values = settings.values
        title = f"edit {self.column} · {settings.kind} column · version {settings.version}"
        with Vertical():
            yield Static(title, classes="title")
            yield Static(f"fields it may read: {', '.join(settings.available) or '(none)'}", id="editor-fields")
            with VerticalScroll():
                for name in _TEXT_FIELDS:
                    if name in values:
                        yield Label(name, classes="label")
                        yield TextArea(values[name] or "", id=f"edit-{name}", soft_wrap=True, show_line_numbers=True)
                if any(name in values for name in _NUMBER_FIELDS):
                    yield Label("temperature · max_tokens (empty: the model's)", classes="label")
                    with Horizontal():
                        temperature, max_tokens = values["temperature"], values["max_tokens"]
                        yield Input(_text(temperature), placeholder="temperature", type="number", id="edit-temperature")
                        yield Input(_text(max_tokens), placeholder="max_tokens", type="integer", id="edit-max_tokens")
            yield Static("", id="editor-check")
            yield Static("ctrl+s save (for the cells not started yet) · esc cancel", classes="keys")

    def on_mount(self) -> None:
        self.query(TextArea).first().focus()
        self.check()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._check_soon()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._check_soon()

    def _check_soon(self) -> None:
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(CHECK_AFTER_S, self.check)

    def changes(self) -> dict[str, Any]:
        """What the editor says now, as `update_column` takes it; ValueError for a number that is not one."""
        changes: dict[str, Any] = {}
        for name in self.settings.values:
            if name in _TEXT_FIELDS:
                text = self.query_one(f"#edit-{name}", TextArea).text
                changes[name] = None if name == "system" and not text.strip() else text
            else:
                raw = self.query_one(f"#edit-{name}", Input).value.strip()
                try:
                    changes[name] = None if not raw else (float(raw) if name == "temperature" else int(raw))
                except ValueError:
                    raise ValueError(f"{self.column}.{name}: {raw!r} is not a number") from None
        return changes

    def check(self) -> str | None:
        """Check the editor's text now; shows and returns the problem (None: it would be applied)."""
        try:
            self.problem = self.controller.check_column(self.column, **self.changes())
        except ValueError as exc:
            self.problem = str(exc)
        self._show(self.problem)
        return self.problem

    def _show(self, problem: str | None) -> None:
        text = Text("✗ ", style="bold red").append(problem) if problem else Text("✓ valid", style="green")
        self.query_one("#editor-check", Static).update(text)

    def action_save(self) -> None:
        if self.check() is not None:
            return
        try:
            version = self.controller.update_column(self.column, **self.changes())
        except ValueError as exc:  # the pipeline changed meanwhile (another edit)
            self.problem = str(exc)
            self._show(self.problem)
            return
        self.dismiss(version)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class ConfirmRecomputeScreen(ModalScreen[bool]):
    """Asked before a column is recomputed: how many cells and model calls it makes."""

    BINDINGS = bindings("recompute")
    DEFAULT_CSS = (
        modal_css("ConfirmRecomputeScreen")
        + """
    ConfirmRecomputeScreen > Vertical { width: 72; }
    ConfirmRecomputeScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmRecomputeScreen Button { margin-right: 2; }
    """
    )

    def __init__(self, column: str, cells: int, calls: int) -> None:
        super().__init__()
        self.column = column
        self.cells = cells
        self.calls = calls

    def compose(self) -> ComposeResult:
        calls = (
            f"{self.calls:,} model call{'s' if self.calls != 1 else ''}, asked of the model again (not the "
            "response cache)"
            if self.calls
            else "no model calls"
        )
        text = (
            f"Run {self.column} again for {self.cells:,} finished row{'s' if self.cells != 1 else ''}, "
            f"with the columns after it: {calls}."
        )
        with Vertical():
            yield Static(f"Recompute {self.column}?", classes="title")
            yield Static(text)
            with Horizontal():
                yield Button("Recompute (y)", id="yes", variant="warning")
                yield Button("Cancel (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice == "yes")


class PipelineDiffScreen(ModalScreen[bool]):
    """The changes as a diff of the pipeline file, before they are written into it."""

    BINDINGS = bindings("save_file")
    DEFAULT_CSS = (
        modal_css("PipelineDiffScreen")
        + """
    PipelineDiffScreen > Vertical { width: 120; height: 90%; }
    PipelineDiffScreen VerticalScroll { height: 1fr; }
    """
    )

    def __init__(self, diff: str) -> None:
        super().__init__()
        self.diff = diff

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Write the changes into the pipeline file?", classes="title")
            with VerticalScroll():
                yield Static(Syntax(self.diff, "diff", theme="ansi_dark", word_wrap=True))
            yield Static("y write the file · n or esc keep it as it is", classes="keys")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice == "yes")
