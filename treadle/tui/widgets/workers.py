"""The workers of a run on several processes (`--workers N`): per worker, row groups written and in
flight, cells in flight, model calls per second, and whether it is alive. Hidden for one process."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from treadle.engine.controller import WorkerView
from treadle.tui.theme import COLOURS

HEADER = f"{'worker':<8}{'groups done':>12}{'in flight':>11}{'cells':>7}{'calls/s':>9}"


def workers_text(workers: Sequence[WorkerView]) -> Text:
    """The panel's lines: a header, then one line per worker (a dead one dimmed, marked `dead`)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(HEADER, style="dim")
    for worker in workers:
        text.append("\n")
        mark, style = ("●", COLOURS["done"]) if worker.alive else ("✗", COLOURS["failed"])
        text.append(f"{mark} ", style=style)
        text.append(f"{worker.index:<6}", style="" if worker.alive else "dim")
        line = (
            f"{worker.groups_done:>12,}{worker.groups_in_flight:>11,}"
            f"{worker.cells_in_flight:>7,}{worker.calls_per_s:>9,.1f}"
        )
        text.append(line if worker.alive else f"{worker.groups_done:>12,}   dead", style="" if worker.alive else "dim")
    return text


class WorkersPanel(Static):
    """Shown only while the snapshot has workers (a run on several processes)."""

    DEFAULT_CSS = """
    WorkersPanel { height: auto; padding: 0 1; margin-top: 1; display: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._shown: tuple[WorkerView, ...] | None = None

    def show(self, workers: tuple[WorkerView, ...]) -> None:
        if workers == self._shown:
            return
        self._shown = workers
        self.display = bool(workers)
        if workers:
            self.update(workers_text(workers))
