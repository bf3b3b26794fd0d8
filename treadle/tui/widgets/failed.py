"""The failed cells: row, column, error class, message, attempts; the selection is what r/R/d act on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from treadle.tui.theme import COLOURS

MAX_SHOWN = 2000


class FailedTable(DataTable):
    DEFAULT_CSS = """
    FailedTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.failures: list[tuple[int, str, str, str, int]] = []
        self.total = 0

    def on_mount(self) -> None:
        self.add_column("row", key="row")
        self.add_column("column", key="column")
        self.add_column("error", key="error")
        self.add_column("tries", key="attempts")
        self.add_column("message", key="message")

    def show(self, failures: Sequence[dict[str, Any]]) -> bool:
        """Show these failures (sorted by row, column); False when nothing changed."""
        rows = sorted(
            (f["row"], f["column"], f.get("error_class") or "", f.get("message") or "", f.get("attempts") or 0)
            for f in failures
        )
        self.total = len(rows)
        rows = rows[:MAX_SHOWN]
        if rows == self.failures:
            return False
        selected = self.selected()
        self.failures = rows
        self.clear()
        red = COLOURS["failed"]
        for row, column, error, message, attempts in rows:
            self.add_row(
                str(row),
                column,
                Text(error, style=red),
                str(attempts),
                message.replace("\n", " ")[:300],
                key=f"{row}\x00{column}",
            )
        if selected is not None:
            keys = [(r[0], r[1]) for r in rows]
            if selected in keys:
                self.move_cursor(row=keys.index(selected), animate=False)
        return True

    def selected(self) -> tuple[int, str] | None:
        if not self.failures or self.cursor_row < 0 or self.cursor_row >= len(self.failures):
            return None
        row, column, *_ = self.failures[self.cursor_row]
        return row, column
