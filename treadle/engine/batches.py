"""Batch columns in the scheduler: a row group's ready cells of a batch column run as one task.

The tracker knows nothing of batches: a batch column's cells become ready one by one, as any cell's.
The ready heaps hand them here instead of queueing them (`collect`). Once per loop iteration, each
(column, row group) that gained ready cells is looked at: when none of its cells is still waiting
(for an input, or for a retry's backoff), its ready cells are cut into calls of `batch_size` rows
and each call goes on the ready heap as one entry, its first cell standing for all (`members`).
Rows whose inputs failed or were dropped never become ready, so they are left out (and blocked).
A worker taking such an entry runs `run`: one execution slot, one timeout, one trace record (on its
first row) for the call; then every cell of it completes or fails together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from treadle.engine.filters import filter_rows
from treadle.engine.generators.base import Generator
from treadle.engine.generators.batch import BatchGenerator
from treadle.engine.tracker import CellState, CellTracker

if TYPE_CHECKING:
    from treadle.engine.scheduler import Scheduler

_WAITING, _READY, _RUNNING, _RETRY_WAIT = CellState.WAITING, CellState.READY, CellState.RUNNING, CellState.RETRY_WAIT
_SMALL = 64
"""More cells than this at once are collected by array (a python loop is cheaper for a few)."""


class Batches:
    def __init__(
        self, tracker: CellTracker, generators: Sequence[Generator], push_entry: Callable[[int], None]
    ) -> None:
        self._tracker = tracker
        self._push_entry = push_entry
        """Queues a call on the ready heap, under the cell standing for it."""
        self.nodes = [g if isinstance(g, BatchGenerator) else None for g in generators]
        """Per node: its batch generator, or None for a column run cell by cell."""
        self._collected: dict[tuple[int, int], list[int]] = {}
        """(node, group) -> its ready cells not yet in a call."""
        self._dirty: set[tuple[int, int]] = set()
        self.members: dict[int, list[int]] = {}
        """A queued call's first cell -> every cell of the call, that one first."""
        self._flush_scheduled = False
        self._is_batch = np.array([g is not None for g in self.nodes], dtype=bool)

    def collect(self, cells: list[int]) -> list[int]:
        """Keep the batch columns' cells among `cells` for their calls; returns the others."""
        if len(cells) > _SMALL:
            return self._collect_many(cells)
        n_nodes = self._tracker.n_nodes
        group_rows = n_nodes * self._tracker.group_size
        others: list[int] = []
        for cell in cells:
            node = cell % n_nodes
            if self.nodes[node] is None:
                others.append(cell)
                continue
            key = (node, cell // group_rows)
            self._collected.setdefault(key, []).append(cell)
            self._dirty.add(key)
        self._schedule_flush()
        return others

    def _collect_many(self, cells: list[int]) -> list[int]:
        """`collect` for many cells at once (a group admitted, a batch call done): by array, not by cell."""
        n_nodes = self._tracker.n_nodes
        array = np.array(cells, dtype=np.int64)
        nodes = array % n_nodes
        batch = self._is_batch[nodes]
        keys = array[batch] // (n_nodes * self._tracker.group_size) * n_nodes + nodes[batch]
        unique, inverse = np.unique(keys, return_inverse=True)
        for index, key in enumerate(unique.tolist()):
            group, node = divmod(key, n_nodes)
            ours = array[batch] if len(unique) == 1 else array[batch][inverse == index]
            self._collected.setdefault((node, group), []).extend(ours.tolist())
            self._dirty.add((node, group))
        self._schedule_flush()
        return array[~batch].tolist()

    def recheck(self, cell: int) -> None:
        """`cell` failed or its row was dropped: the waiting batch cells of its group may be blocked now,
        so the ready ones may go; a queued call whose first row was dropped gets another first cell."""
        tracker = self._tracker
        row = cell // tracker.n_nodes
        group = row // tracker.group_size
        for key in self._collected:
            if key[1] == group:
                self._dirty.add(key)
        if tracker.row_dropped(row):
            for node, generator in enumerate(self.nodes):
                cells = None if generator is None else self.members.pop(row * tracker.n_nodes + node, None)
                rest = [c for c in cells or () if tracker.state[c] == _READY]
                if rest:
                    self.members[rest[0]] = rest
                    self._push_entry(rest[0])
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        tracker = self._tracker
        n_nodes = tracker.n_nodes
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            node, group = key
            rows = tracker.group_rows(group)
            column = tracker.state[rows.start * n_nodes + node : rows.stop * n_nodes : n_nodes]
            if _WAITING in column or _RETRY_WAIT in column:
                continue
            collected = np.array(self._collected.pop(key, []), dtype=np.int64)
            cells = np.sort(collected[tracker.in_state(collected, _READY)]).tolist()
            generator = self.nodes[node]
            assert generator is not None
            size = generator.batch_size or len(cells) or 1
            for start in range(0, len(cells), size):
                call = cells[start : start + size]
                self.members[call[0]] = call
                self._push_entry(call[0])

    def take(self, first: int) -> list[int]:
        """The cells of the call `first` stands for (already started by the heap), each now running."""
        cells = self.members.pop(first, [first])
        return [first, *self._tracker.start_many(np.array(cells[1:], dtype=np.int64)).tolist()]

    def recheck_rows(self, rows: list[int]) -> None:
        """`rows` (of one group) were dropped together: `recheck` for all of them at once."""
        tracker = self._tracker
        group = rows[0] // tracker.group_size
        for key in self._collected:
            if key[1] == group:
                self._dirty.add(key)
        for first in [c for c in self.members if tracker.row_dropped(c // tracker.n_nodes)]:
            rest = [c for c in self.members.pop(first) if tracker.state[c] == _READY]
            if rest:
                self.members[rest[0]] = rest
                self._push_entry(rest[0])
        self._schedule_flush()


async def run_call(scheduler: Scheduler, first: int, t_ready: float, task: asyncio.Task, slot: int) -> None:
    """Run one batch call (the scheduler's worker took `first`) and settle its cells."""
    tracker = scheduler.tracker
    batches = scheduler.batches
    n_nodes = tracker.n_nodes
    cells = batches.take(first)
    node = first % n_nodes
    generator = batches.nodes[node]
    assert generator is not None
    row_numbers = [cell // n_nodes for cell in cells]
    error: BaseException | None = None
    values: dict[str, list] = {}
    keep: np.ndarray | None = None
    deadlines = scheduler._deadlines
    started = scheduler._clock()
    deadlines.running[first] = (started + scheduler._timeouts[node], task)
    try:
        frame = generator.frame(scheduler.store.columns(row_numbers), row_numbers)
        if generator.is_async:
            result = await generator.function(frame)
        else:
            result = await asyncio.get_running_loop().run_in_executor(scheduler._executor, generator.function, frame)
        values, keep = generator.split(result, len(cells))
    except asyncio.CancelledError:
        if not deadlines.expired(first, task):
            raise
        error = TimeoutError()
    except Exception as exc:
        error = exc
    finally:
        del deadlines.running[first]
        scheduler._slots.release()
    ended = scheduler._clock()
    if error is None:
        _done(scheduler, cells, values, keep, (slot, t_ready, started, ended))
    else:
        failures = scheduler._failure_handler
        for cell in cells:
            if tracker.state[cell] == _RUNNING:
                # One trace record (and one early-stop count) for the call, on its first row.
                failures.record(cell, error, (slot, t_ready, started, ended), traced=cell == first)
    scheduler._after_change(first)
    if not scheduler._slots.in_use:
        scheduler._check_finished()


def _done(
    scheduler: Scheduler,
    cells: list[int],
    values: dict[str, list],
    keep: np.ndarray | None,
    timing: tuple[int, float, float, float],
) -> None:
    """The call's cells done together (one tracker operation, one journal line); a filter's rows it
    turned away dropped together."""
    tracker = scheduler.tracker
    n_nodes = tracker.n_nodes
    first = cells[0]
    row, node = divmod(first, n_nodes)
    slot, t_ready, started, ended = timing
    attempt = scheduler.attempts.get(first, 0) + 1
    scheduler.tracer.done(row, node, attempt, slot, t_ready, started, ended, {k: v[0] for k, v in values.items()})
    if not scheduler._tracing:
        scheduler.latencies[node].append(ended - started)
    cell_array = np.array(cells, dtype=np.int64)
    running = tracker.in_state(cell_array, _RUNNING)  # else its row was dropped while the call ran
    if keep is not None:
        dropped = cell_array[running & ~keep] // n_nodes
        if len(dropped):
            filter_rows(scheduler, node, dropped)
            scheduler.batches.recheck_rows(dropped.tolist())
        running &= keep
    done = cell_array[running]
    if not running.all():
        positions = np.flatnonzero(running).tolist()
        values = {key: [column[i] for i in positions] for key, column in values.items()}
    ready = tracker.complete_many(done)
    if len(done):
        rows = (done // n_nodes).tolist()
        scheduler.store.set_columns(rows, values)
        scheduler.journal.done_call(node, rows, values)
    scheduler._error_window.attempts += 1
    if ready:
        scheduler.push(ready, ended)
