"""A row a filter column turned away: dropped with the reason "filtered by <name>", which is not a failure.

It is left out of the output and of all further work like a dropped row; failures.jsonl records it
with action `filtered`, and the row counts keep it apart from failed and dropped rows. No event is sent
per filtered row (a filter may turn away most of a million rows): summary.json counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.engine.policy import CellFailure

if TYPE_CHECKING:
    from treadle.engine.scheduler import Scheduler


def filter_row(scheduler: Scheduler, cell: int, timing: tuple[int, float, float, float] | None = None) -> None:
    """The filter cell `cell` (running) turned its row away; with `timing` (slot, t_ready, t_started,
    t_ended) its attempt is traced (a batch filter's call is traced once, by the batch)."""
    tracker = scheduler.tracker
    row, node = divmod(cell, tracker.n_nodes)
    if timing is not None:
        scheduler.tracer.done(row, node, scheduler.attempts.get(cell, 0) + 1, *timing, {})
    name = scheduler.generators[node].name
    tracker.filter_row(row)
    scheduler.journal.dropped(row)
    scheduler._failure_handler.dropped(row)
    scheduler.failures[cell] = CellFailure(
        row=row, column=name, error_class="Filtered", message=f"filtered by {name}", attempts=1, action="filtered"
    )
