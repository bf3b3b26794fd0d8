"""The work of a run as the scheduler's workers find it: row groups admitted, finished and written, cells
put back into work (retry), rows taken out (drop), and whether anything is left.

Groups are admitted in order while the limit on groups in flight has room (their rows load, their first
cells become ready). A group is finished when its last cell settles and its file is written off the loop;
only then does its place admit the next (row_groups.py: finished rows never pile up waiting for the disk).
A retry reopens a finished group. Once no cell is left (salvage retried, if any), the run ends, or, held
open for a person's retry or drop, it is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from treadle.engine.batches import Batches
from treadle.engine.cache_hits import CacheHits
from treadle.engine.events import CellRetried, EventBus, Idle, RowDropped
from treadle.engine.failures import FailureHandler
from treadle.engine.generators.base import Generator
from treadle.engine.journal import Journal
from treadle.engine.limits import SLOTS, Limit
from treadle.engine.row_groups import RowGroups
from treadle.engine.rows import RowStore
from treadle.engine.tracker import CellTracker


class Dispatch(Protocol):
    """What the workload needs of the scheduler (treadle.engine.scheduler.Scheduler)."""

    tracker: CellTracker
    generators: list[Generator]
    store: RowStore
    journal: Journal
    bus: EventBus
    limits: dict[str, Limit]
    batches: Batches
    row_groups: RowGroups
    """Read when used: a worker process's run puts its own in place (workers/worker.py)."""
    paused: bool
    stopping: bool

    def push(self, cells: list[int], now: float | None = None) -> None:
        """Queue cells that became ready."""


class Workload:
    def __init__(
        self,
        dispatch: Dispatch,
        failures: FailureHandler,
        hits: CacheHits,
        on_group_finished: Callable[[int], Coroutine[Any, Any, None]],
        on_finished: Callable[[], None],
        hold_open: bool,
    ) -> None:
        """`on_group_finished` writes a group's file; `on_finished`: the run has nothing left to do."""
        self._dispatch = dispatch
        self._slots = dispatch.limits[SLOTS]
        self._failures = failures
        self._hits = hits
        self._recheck = dispatch.batches.recheck if any(dispatch.batches.nodes) else None
        """The batch columns' second look at a group one of whose cells settled (None: no batch column)."""
        self._on_group_finished = on_group_finished
        self._on_finished = on_finished
        self._hold_open = hold_open
        self._idle_reported = False
        self._writes: set[asyncio.Task[None]] = set()

    # ---- row groups ------------------------------------------------------------------------------

    def admit(self) -> None:
        """Admit groups while their limit has room (not while paused or stopping)."""
        dispatch = self._dispatch
        tracker = dispatch.tracker
        while not dispatch.stopping and not dispatch.paused and (group := dispatch.row_groups.admit_next()) is not None:
            dispatch.store.load_group(group)
            ready = tracker.activate_group(group)
            if ready:
                dispatch.push(ready)
            elif tracker.group_open[group] == 0:
                self._finish_group(group)

    def settled(self, cell: int) -> None:
        """`cell` settled (or its row was dropped): its group is finished if that was its last open cell."""
        tracker = self._dispatch.tracker
        group = tracker.group_of(cell)
        if self._recheck is not None:
            self._recheck(cell)
        if tracker.group_open[group] == 0:
            self._finish_group(group)  # its place admits the next group once its file is written

    def _finish_group(self, group: int) -> bool:
        """Finish a group in flight and write its file; False if it was not in flight."""
        if not self._dispatch.row_groups.finish(group):
            return False
        write = asyncio.get_running_loop().create_task(self._write_group(group))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        return True

    async def _write_group(self, group: int) -> None:
        """Write a finished group's file; only then may its place admit the next group (backpressure)."""
        try:
            await self._on_group_finished(group)
        finally:
            if self._dispatch.row_groups.written(group):
                self.admit()

    async def written(self) -> None:
        """Wait for the group writes under way (and those they lead to)."""
        while self._writes:
            await asyncio.gather(*list(self._writes))

    # ---- the end ---------------------------------------------------------------------------------

    def check_finished(self) -> None:
        """No cell running: the run ends if nothing is left (or it is stopping), after any salvage round."""
        # hold_open keeps a finished run waiting for a person's retry or drop until it is closed.
        if self._slots.in_use:
            return
        tracker, stopping = self._dispatch.tracker, self._dispatch.stopping
        if tracker.unfinished == 0 and not stopping and (salvage := self._failures.take_salvage()):
            self.retry(salvage)
            return
        if stopping or (tracker.unfinished == 0 and not self._hold_open):
            self._on_finished()
        elif tracker.unfinished == 0 and not self._idle_reported:
            self._idle_reported = True
            self._dispatch.bus.emit(Idle())

    # ---- commands (called on the engine loop) ----------------------------------------------------

    def retry(self, cells: list[int], redo: bool = False) -> int:
        """Failed cells (with `redo` finished ones too) and their dependents back into work; returns how many."""
        dispatch = self._dispatch
        tracker = dispatch.tracker
        retried = 0
        for cell in cells:
            if (ready := tracker.rerun(cell, redo)) is None:
                continue
            group = tracker.group_of(cell)
            dispatch.store.load_group(group)
            dispatch.row_groups.reopen(group)
            self._failures.retried(cell)
            self._hits.bypass(cell)  # an llm cell asks its model again, not the response cache
            retried += 1
            self._idle_reported = False
            row, node = divmod(cell, tracker.n_nodes)
            dispatch.bus.emit(CellRetried(row=row, column=dispatch.generators[node].name))
            if ready:
                dispatch.push(ready)
        return retried

    def drop(self, rows: list[int]) -> int:
        """Take rows out of work and output; returns how many were not dropped already."""
        dispatch = self._dispatch
        tracker = dispatch.tracker
        dropped = 0
        for row in rows:
            if tracker.row_dropped(row):
                continue
            tracker.drop_row(row)
            dispatch.journal.dropped(row)
            dropped += 1
            dispatch.bus.emit(RowDropped(row=row))
            self._failures.dropped(row)
            self.settled(row * tracker.n_nodes)
        self.check_finished()
        return dropped
