"""The line at the top: run name, status, elapsed, rate, ETA and overall progress."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from treadle.engine.controller import Snapshot
from treadle.tui.model import ViewStatus, clock_text, finished_cells
from treadle.tui.theme import CACHED, COLOURS, FILTERED, GLYPHS, STATUS_COLOURS

_HINTS: dict[str, str] = {
    "idle": "all cells finished: r/R/A retry, q close and quit",
    "stopping": "letting running cells finish (q again: stop now)",
    "closing": "writing the run directory",
    "paused": "no new starts (p resumes)",
}


class RunHeader(Static):
    DEFAULT_CSS = """
    RunHeader {
        height: 1;
        background: $panel;
        padding: 0 1;
    }
    """

    def show(
        self,
        name: str,
        snapshot: Snapshot,
        status: ViewStatus,
        elapsed: float | None,
        rate: float | None,
        eta: float | None,
    ) -> None:
        total = snapshot.total_cells
        finished = finished_cells(snapshot)
        pct = 100.0 * finished / total if total else 100.0
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("treadle ", style="bold")
        text.append(name, style="bold " + COLOURS["ready"])
        text.append("  ● ", style=STATUS_COLOURS.get(status, ""))
        text.append(status, style="bold " + STATUS_COLOURS.get(status, ""))
        text.append(f"  {clock_text(elapsed)}")
        text.append(f"  {rate:,.1f} cells/s" if rate is not None else "  — cells/s")
        text.append(f"  ETA {clock_text(eta)}")
        text.append(f"  {finished:,}/{total:,} cells {pct:.0f}%")
        failed = snapshot.cells.get("failed", 0)
        if failed:
            text.append(f"  ✗ {failed:,} failed", style=COLOURS["failed"])
        if snapshot.filtered:  # not failures: rows a filter column turned away
            text.append(f"  {GLYPHS[FILTERED]} {snapshot.filtered:,} filtered", style=COLOURS[FILTERED])
        if hits := snapshot.cache.get("hits"):
            text.append(f"  {GLYPHS[CACHED]} {hits:,} cached", style=COLOURS[CACHED])
        hint = _HINTS.get(status)
        if hint:
            text.append(f"  · {hint}", style="dim")
        if text != getattr(self, "_shown", None):
            self._shown = text
            self.update(text, layout=False)
