"""A row a filter column turned away: dropped with the reason "filtered by <name>", which is not a failure.

It is left out of the output and of all further work like a dropped row; failures.jsonl records it
with action `filtered`, and the row counts keep it apart from failed and dropped rows. No event is sent
per filtered row (a filter may turn away most of a million rows): summary.json counts them. The
tracker keeps which filter took each row (no record per row while the run goes): failures.jsonl's
`filtered` lines are written from it at the end, and a cell's detail asks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from treadle.engine.failures import FailureHandler
from treadle.engine.generators.base import Generator
from treadle.engine.journal import Journal
from treadle.engine.policy import CellFailure
from treadle.engine.tracing import Tracer
from treadle.engine.tracker import CellTracker


class FilterDispatch(Protocol):
    """What settling a filtered row needs of the scheduler (treadle.engine.scheduler.Scheduler)."""

    tracker: CellTracker
    generators: list[Generator]
    journal: Journal
    tracer: Tracer


def filter_row(
    dispatch: FilterDispatch, failures: FailureHandler, cell: int, timing: tuple[int, float, float, float] | None = None
) -> None:
    """The filter cell `cell` (running) turned its row away; with `timing` (slot, t_ready, t_started,
    t_ended) its attempt is traced (a batch filter's call is traced once, by the batch)."""
    tracker = dispatch.tracker
    row, node = divmod(cell, tracker.n_nodes)
    if timing is not None:
        dispatch.tracer.done(row, node, failures.attempts.get(cell, 0) + 1, *timing, {})
    tracker.filter_row(row, node)
    dispatch.journal.dropped(row, filtered_by=dispatch.generators[node].name)
    failures.dropped(row)


def filter_rows(dispatch: FilterDispatch, failures: FailureHandler, node: int, rows: np.ndarray) -> None:
    """The filter `node` turned `rows` away, all at once (a batch filter's call): one tracker operation,
    one journal line."""
    dispatch.tracker.filter_rows(rows, node)
    row_list = rows.tolist()
    dispatch.journal.dropped_rows(row_list, filtered_by=dispatch.generators[node].name)
    for row in row_list:
        failures.dropped(row)


def filtered_failure(row: int, column: str) -> CellFailure:
    """The failures.jsonl line of a row the filter `column` turned away."""
    return CellFailure(
        row=row, column=column, error_class="Filtered", message=f"filtered by {column}", attempts=1, action="filtered"
    )


def cell_filtered(tracker: CellTracker, cell: int, names: Sequence[str]) -> CellFailure | None:
    """What a cell's detail shows when its filter took its row (None: it did not)."""
    row, node = divmod(cell, tracker.n_nodes)
    if tracker.filtered_by is None or tracker.filtered_by[row] != node:
        return None
    return filtered_failure(row, names[node])


def filtered_lines(tracker: CellTracker, names: Sequence[str]) -> list[tuple[dict[str, Any], np.ndarray]]:
    """failures.jsonl's `filtered` lines: per filter column, its line for row 0 and the rows it took."""
    rows, nodes = tracker.filtered_rows()
    return [(filtered_failure(0, names[node]).record(), rows[nodes == node]) for node in np.unique(nodes).tolist()]
