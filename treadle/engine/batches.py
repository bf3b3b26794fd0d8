"""Batch columns in the scheduler: a row group's ready cells of a batch column run as one task.

The tracker knows nothing of batches: a batch column's cells become ready one by one, as any cell's.
The ready heaps hand them here instead of queueing them (`collect`). Once per loop iteration, each
(column, row group) that gained ready cells is looked at: when none of its cells is still waiting
(for an input, or for a retry's backoff), its ready cells are cut into calls of `batch_size` rows
and each call goes on the ready heap as one entry, its first cell standing for all (`members`).
Rows whose inputs failed or were dropped never become ready, so they are left out (and blocked).
A worker taking such an entry runs `run`: one execution slot, one timeout, one trace record (on its
first row, with `rows`) for the call; then every cell of it completes or fails together. What this
needs of the scheduler is `BatchDispatch`; the parts a call runs with (slots, deadlines, threads,
failure handling) come as `CallParts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from treadle.engine.context import ColumnContext, ContextServices
from treadle.engine.deadlines import Deadlines
from treadle.engine.failures import FailureHandler
from treadle.engine.filters import filter_rows
from treadle.engine.generators.base import Generator
from treadle.engine.generators.batch import BatchGenerator
from treadle.engine.journal import Journal
from treadle.engine.limits import Limit
from treadle.engine.rows import RowStore
from treadle.engine.stats import Quantiles
from treadle.engine.tracing import NullTracer, Tracer
from treadle.engine.tracker import CellState, CellTracker

_WAITING, _READY, _RUNNING, _RETRY_WAIT = CellState.WAITING, CellState.READY, CellState.RUNNING, CellState.RETRY_WAIT
_SMALL = 64
"""More cells than this at once are collected by array (a python loop is cheaper for a few)."""


class BatchDispatch(Protocol):
    """What batch calls need of the scheduler (treadle.engine.scheduler.Scheduler)."""

    tracker: CellTracker
    generators: list[Generator]
    store: RowStore
    journal: Journal
    tracer: Tracer
    latencies: list[Quantiles]
    """Per node, run times of successful attempts (a call's once), when the tracer keeps none."""
    context_services: ContextServices | None

    def push(self, cells: list[int], now: float | None = None) -> None:
        """Queue cells that became ready."""

    def push_call(self, cell: int) -> None:
        """Queue a call on the ready heap, under the cell standing for it."""

    def call_settled(self, first: int) -> None:
        """The cells of the call `first` stands for settled: their group may be finished, the run too."""


@dataclass(frozen=True)
class CallParts:
    """The run's parts a batch call runs with (the scheduler's)."""

    slots: Limit
    """The execution slots: the call holds one, taken by the ready heap, released here."""
    deadlines: Deadlines
    timeouts: Sequence[float]
    """Per node: its timeout, for the whole call."""
    threads: Executor
    """Where a sync batch function runs."""
    failures: FailureHandler
    clock: Callable[[], float]


class Batches:
    """The batch columns of a run: their ready cells collected per row group, their calls run."""

    def __init__(self, dispatch: BatchDispatch, parts: CallParts) -> None:
        self._dispatch = dispatch
        self._parts = parts
        self._tracker = dispatch.tracker
        self._push_entry = dispatch.push_call
        self._tracing = not isinstance(dispatch.tracer, NullTracer)
        self.nodes = [g if isinstance(g, BatchGenerator) else None for g in dispatch.generators]
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

    async def run(self, first: int, t_ready: float, task: asyncio.Task, slot: int) -> None:
        """Run the call `first` stands for (a worker took it from the ready heap) and settle its cells."""
        dispatch, parts, tracker = self._dispatch, self._parts, self._tracker
        cells = self.take(first)
        row_numbers = [cell // tracker.n_nodes for cell in cells]
        node = first % tracker.n_nodes
        error: BaseException | None = None
        values: dict[str, list] = {}
        keep: np.ndarray | None = None
        usage: dict[str, int] | None = None
        started = parts.clock()
        parts.deadlines.running[first] = (started + parts.timeouts[node], task)
        try:
            (values, keep), usage = await self._call(node, row_numbers, slot)
        except asyncio.CancelledError:
            if not parts.deadlines.expired(first, task):  # an abort: the worker ends with the call
                self._cancelled(cells, (slot, t_ready, started, parts.clock()))
                raise
            error = TimeoutError()
        except Exception as exc:
            error = exc
        finally:
            del parts.deadlines.running[first]
            parts.slots.release()
        timing = (slot, t_ready, started, parts.clock())
        if error is None:
            self._done(cells, values, keep, usage, timing)
        else:
            rows = np.array(row_numbers)
            for cell in cells:
                if tracker.state[cell] == _RUNNING:
                    # One trace record (and one early-stop count) for the call, on its first row.
                    parts.failures.record(cell, error, timing, traced=cell == first, rows=rows)
        dispatch.call_settled(first)

    async def _call(
        self, node: int, row_numbers: list[int], slot: int
    ) -> tuple[tuple[dict[str, list], np.ndarray | None], dict[str, int] | None]:
        """The values from one call of the node's function (`BatchGenerator.split`), and the tokens of
        its ctx calls (if any)."""
        generator = self.nodes[node]
        assert generator is not None
        frame = generator.frame(self._dispatch.store.columns(row_numbers), row_numbers)
        ctx = None
        if generator.wants_context:  # one ctx for the call: its model calls are traced on its first row
            assert self._dispatch.context_services is not None
            ctx = ColumnContext(self._dispatch.context_services, row_numbers[0], node, slot)
        arguments: tuple[Any, ...] = (frame,) if ctx is None else (frame, ctx)
        try:
            if generator.is_async:
                result = await generator.function(*arguments)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._parts.threads, generator.function, *arguments)
        finally:
            if ctx is not None:
                ctx.cancel()
        return generator.split(result, len(row_numbers)), ctx.usage if ctx is not None and ctx.calls else None

    def _cancelled(self, cells: list[int], timing: tuple[int, float, float, float]) -> None:
        """An abort cut the call off: traced once, as cancelled; its running cells are ready again."""
        tracker, first = self._tracker, cells[0]
        row, node = divmod(first, tracker.n_nodes)
        attempt = self._parts.failures.attempts.get(first, 0) + 1
        rows = np.array(cells) // tracker.n_nodes
        self._dispatch.tracer.record(row, node, attempt, *timing, "cancelled", rows=rows)
        for cell in cells:
            if tracker.state[cell] == _RUNNING:
                tracker.cancel(cell)

    def _done(
        self,
        cells: list[int],
        values: dict[str, list],
        keep: np.ndarray | None,
        usage: dict[str, int] | None,
        timing: tuple[int, float, float, float],
    ) -> None:
        """The call's cells done together (one tracker operation, one journal line); the rows a filter
        turned away dropped together."""
        dispatch, failures, tracker = self._dispatch, self._parts.failures, self._tracker
        n_nodes = tracker.n_nodes
        first = cells[0]
        row, node = divmod(first, n_nodes)
        attempt = failures.attempts.get(first, 0) + 1
        tokens = None if usage is None else {dispatch.tracer.usage_keys[node]: usage}
        cell_array = np.array(cells, dtype=np.int64)
        dispatch.tracer.record(row, node, attempt, *timing, "done", values=tokens, rows=cell_array // n_nodes)
        if not self._tracing:
            dispatch.latencies[node].append(timing[3] - timing[2])
        running = tracker.in_state(cell_array, _RUNNING)  # else its row was dropped while the call ran
        if keep is not None:
            dropped = cell_array[running & ~keep] // n_nodes
            if len(dropped):
                filter_rows(dispatch, failures, node, dropped)
                self.recheck_rows(dropped.tolist())
            running &= keep
        done = cell_array[running]
        if not running.all():
            positions = np.flatnonzero(running).tolist()
            values = {key: [column[i] for i in positions] for key, column in values.items()}
        ready = tracker.complete_many(done)
        if len(done):
            rows = (done // n_nodes).tolist()
            dispatch.store.set_columns(rows, values)
            dispatch.journal.done_call(node, rows, values)
        failures.error_window.attempts += 1
        if ready:
            dispatch.push(ready, timing[3])
