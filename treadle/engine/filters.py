"""A row a filter column turned away: dropped with the reason "filtered by <name>", which is not a failure.

It is left out of the output and of all further work like a dropped row; failures.jsonl records it
with action `filtered`, and the row counts keep it apart from failed and dropped rows. No event is sent
per filtered row (a filter may turn away most of a million rows): summary.json counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from treadle.engine.policy import CellFailure
from treadle.engine.tracker import CellTracker

if TYPE_CHECKING:
    from treadle.engine.scheduler import Scheduler


def filter_row(scheduler: Scheduler, cell: int, timing: tuple[int, float, float, float] | None = None) -> None:
    """The filter cell `cell` (running) turned its row away; with `timing` (slot, t_ready, t_started,
    t_ended) its attempt is traced (a batch filter's call is traced once, by the batch)."""
    row, node = divmod(cell, scheduler.tracker.n_nodes)
    if timing is not None:
        scheduler.tracer.done(row, node, scheduler.attempts.get(cell, 0) + 1, *timing, {})
    scheduler.tracker.filter_row(row, node)
    scheduler.journal.dropped(row)
    scheduler._failure_handler.dropped(row)


def filter_rows(scheduler: Scheduler, node: int, rows: np.ndarray) -> None:
    """The filter `node` turned `rows` away, all at once (a batch filter's call): one tracker operation,
    one journal line. The tracker keeps which filter dropped each row: failures.jsonl's `filtered`
    lines are made from it at the end."""
    scheduler.tracker.filter_rows(rows, node)
    row_list = rows.tolist()
    scheduler.journal.dropped_rows(row_list)
    for row in row_list:
        scheduler._failure_handler.dropped(row)


def filtered_failure(tracker: CellTracker, cell: int, names: Sequence[str]) -> CellFailure | None:
    """What a cell's detail shows when its filter dropped its row (None: it did not)."""
    row, node = divmod(cell, tracker.n_nodes)
    if tracker.filtered_by is None or tracker.filtered_by[row] != node:
        return None
    return _filtered(row, names[node])


def filtered_lines(tracker: CellTracker, names: Sequence[str]) -> list[tuple[dict[str, Any], np.ndarray]]:
    """failures.jsonl's `filtered` lines: per filter column, its record for row 0 and the rows it dropped."""
    rows, nodes = tracker.filtered_rows()
    return [(_filtered(0, names[node]).record(), rows[nodes == node]) for node in np.unique(nodes).tolist()]


def _filtered(row: int, column: str) -> CellFailure:
    return CellFailure(
        row=row, column=column, error_class="Filtered", message=f"filtered by {column}", attempts=1, action="filtered"
    )
