"""A row a filter column turned away: dropped with the reason "filtered by <name>", which is not a failure.

It is left out of the output and of all further work like a dropped row; failures.jsonl records it
with action `filtered`, and the row counts keep it apart from failed and dropped rows. No event is sent
per filtered row (a filter may turn away most of a million rows): summary.json counts them.
"""

from __future__ import annotations

from typing import Protocol

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
    name = dispatch.generators[node].name
    tracker.filter_row(row)
    dispatch.journal.dropped(row, filtered_by=name)
    failures.dropped(row)
    failures.failures[cell] = filtered_failure(row, name)


def filtered_failure(row: int, column: str) -> CellFailure:
    """The failures.jsonl line of a row the filter `column` turned away."""
    return CellFailure(
        row=row, column=column, error_class="Filtered", message=f"filtered by {column}", attempts=1, action="filtered"
    )
