"""Retry and drop across worker processes, and what each worker is doing for the workers panel.

A command about cells goes to the worker that holds their row group, or else to the one that wrote it:
a worker keeps the cell states of every group it ran, so it retries a written group's failed cells as
one process does (the group is in flight again, then written again). A group whose writer has ended
runs again on another worker, with the cells the journals say are done restored.
"""

from __future__ import annotations

import concurrent.futures
import itertools
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from treadle.engine.controller import RunController
from treadle.engine.engine_thread import COMMAND_TIMEOUT_S
from treadle.engine.journal import replay
from treadle.engine.limits import ROW_GROUPS, SLOTS
from treadle.engine.policy import CellFailure
from treadle.engine.tracker import CellState
from treadle.engine.views import WorkerView
from treadle.engine.workers.messages import Assign, CellRead, Drop, ParentMessage, ReadCell, Retried, Retry, Tick
from treadle.engine.workers.pool import WorkerHandle

if TYPE_CHECKING:
    from treadle.engine.snapshots import CellReading
    from treadle.engine.workers.parent import ParentRun

CALLS_WINDOW_S = 2.0
"""How far back calls/s looks."""


@dataclass
class _Answer:
    """A retry sent to some workers: how many cells they turned back into work so far."""

    future: concurrent.futures.Future[int]
    waiting: set[int]
    count: int = 0


@dataclass
class _Calls:
    """A worker's model requests started, as its ticks reported them: (loop time, total) pairs."""

    seen: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, total: int) -> None:
        self.seen.append((now, total))
        while len(self.seen) > 2 and now - self.seen[1][0] >= CALLS_WINDOW_S:
            self.seen.popleft()

    def per_s(self) -> float:
        if len(self.seen) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.seen[0], self.seen[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class WorkerCommands:
    """The parent's routing of retry and drop, and its record of who wrote which group (on its loop)."""

    def __init__(self, run: ParentRun) -> None:
        self.run = run
        self.writer: dict[int, WorkerHandle] = {}
        """group -> the worker that last wrote it."""
        self._answers: dict[int, _Answer] = {}
        self._requests = itertools.count()
        self._calls: dict[int, _Calls] = {}
        self._cells_asked: dict[int, tuple[int, concurrent.futures.Future[CellReading | None]]] = {}
        """request -> (the worker asked, the future of its answer)."""

    # ---- what the parent hears ---------------------------------------------------------------------

    def written(self, handle: WorkerHandle, group: int) -> None:
        self.writer[group] = handle

    def ticked(self, handle: WorkerHandle, tick: Tick, now: float) -> None:
        self._calls.setdefault(handle.index, _Calls()).add(now, tick.calls)

    def retried(self, handle: WorkerHandle, message: Retried) -> None:
        answer = self._answers.get(message.request)
        if answer is not None:
            answer.count += message.count
            self._answered(message.request, handle.index)

    def cell_read(self, message: CellRead) -> None:
        asked = self._cells_asked.pop(message.request, None)
        if asked is not None:
            asked[1].set_result(message.reading)

    def worker_died(self, handle: WorkerHandle) -> None:
        """Retries it was asked for count none from it; cells asked of it have no reading."""
        for request in list(self._answers):
            self._answered(request, handle.index)
        for request, (index, future) in list(self._cells_asked.items()):
            if index == handle.index:
                del self._cells_asked[request]
                future.set_result(None)

    def _answered(self, request: int, index: int) -> None:
        answer = self._answers[request]
        answer.waiting.discard(index)
        if not answer.waiting:
            del self._answers[request]
            answer.future.set_result(answer.count)

    # ---- commands ----------------------------------------------------------------------------------

    def retry(
        self, cells: Iterable[int], all_failed: bool = False, held_nodes: Collection[int] | None = None
    ) -> concurrent.futures.Future[int]:
        """Send each cell to the worker that holds or wrote its group; the future: how many they retried.
        `all_failed`: every failed cell, of groups written (the parent's states) and held (the workers');
        `held_nodes`: the failed cells of those columns in the groups held too. A group whose writer has
        ended runs again on another worker (`_hand_over`)."""
        tracker = self.run.tracker
        by_worker: dict[int, list[int]] = {}
        if all_failed:
            cells = [*cells, *tracker.cells_in(CellState.FAILED)]
        held_failed = all_failed or held_nodes is not None
        if held_failed:
            by_worker = {h.index: [] for h in self.run.workers if h.alive and h.outstanding}
        reopened: dict[int, WorkerHandle] = {}
        handed: set[int] = set()
        for cell in cells:
            group = tracker.group_of(cell)
            handle = self.holder(group) or reopened.get(group)
            if handle is None and group not in handed:
                if tracker.state[cell] != CellState.FAILED:  # a written group's states are its writer's
                    continue
                writer = self._writer(group, f"retry row {cell // tracker.n_nodes}", skip_unknown=all_failed)
                if writer is not None and writer.alive:
                    handle = reopened[group] = writer
                elif writer is not None:
                    handed.add(group)
            if handle is not None:
                by_worker.setdefault(handle.index, []).append(cell)
        for group, handle in reopened.items():  # in flight again until its writer writes it again
            handle.outstanding.add(group)
            self.run.group_reopened()
        n, spans = tracker.n_nodes, map(tracker.group_rows, handed)
        handed_cells = sum(tracker.state.count(CellState.FAILED, r.start * n, r.stop * n) for r in spans)
        for group in handed:
            self._hand_over(group)
        nodes = tuple(held_nodes or ())
        return self.ask(
            by_worker, lambda request, index: Retry(request, by_worker[index], held_failed, nodes), handed_cells
        )

    def ask(
        self, workers: Iterable[int], message: Callable[[int, int], ParentMessage], count: int = 0
    ) -> concurrent.futures.Future[int]:
        """Send each of `workers` `message(request, its index)`; the future: `count` plus the counts they
        answer (`Retried` under that request; a worker that dies first counts none)."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        waiting = set(workers)
        if not waiting:
            future.set_result(count)
            return future
        request = next(self._requests)
        self._answers[request] = _Answer(future, waiting, count)
        for index in waiting:
            self.run.workers[index].send(message(request, index))
        return future

    def read_cell(self, row: int, node: int) -> concurrent.futures.Future[CellReading | None] | None:
        """A cell as the worker holding its group reads it (the parent has its row only once the group
        is written); None if no live worker holds it."""
        handle = self.holder(row // self.run.tracker.group_size)
        if handle is None:
            return None
        request = next(self._requests)
        future: concurrent.futures.Future[CellReading | None] = concurrent.futures.Future()
        self._cells_asked[request] = (handle.index, future)
        handle.send(ReadCell(request, row, node))
        return future

    def _hand_over(self, group: int) -> None:
        """A written group whose writer has ended runs again on the live worker holding fewest groups:
        every failed cell of it is retried; the cells the journals say are done are not run again, and
        dropped rows stay dropped."""
        run = self.run
        del self.writer[group]
        rows = run.tracker.group_rows(group)
        done: dict[int, dict[str, dict[str, Any]]] = {}
        dropped: dict[int, str | None] = {}
        for worker in run.workers:  # a group another worker took over holds cells done in both journals
            journal = replay(run.directory.worker_journal_path(worker.index), lambda row: row not in rows)
            for row, columns in journal.done.items():
                done.setdefault(row, {}).update(columns)
            dropped.update({row: journal.filtered.get(row) for row in journal.dropped if row in rows})
        handle = min((h for h in run.workers if h.alive), key=lambda h: len(h.outstanding))
        handle.outstanding.add(group)
        run.group_reopened()
        handle.send(Assign([group], done, dropped))

    def drop(self, rows: Iterable[int]) -> int:
        """Send each row to the worker that holds its group; a written group's row is dropped in the
        parent's states (the output leaves it out) and journaled by its writer, or by any live worker
        if that one has ended. Returns how many rows were not dropped yet."""
        run = self.run
        tracker = run.tracker
        alive = [h for h in run.workers if h.alive]
        by_worker: dict[int, list[int]] = {}
        written: list[int] = []
        for row in dict.fromkeys(rows):
            if not 0 <= row < tracker.n_rows or tracker.row_dropped(row) or not alive:
                continue
            group = row // tracker.group_size
            handle = self.holder(group)
            if handle is None:
                writer = self.writer.get(group)
                handle = writer if writer is not None and writer.alive else alive[0]
                written.append(row)
            by_worker.setdefault(handle.index, []).append(row)
        n = tracker.n_nodes
        for row in written:
            tracker.drop_row(row)
            for cell in range(row * n, (row + 1) * n):
                run.scheduler.failures.pop(cell, None)
        for index, chosen in by_worker.items():
            run.workers[index].send(Drop(chosen))
        return sum(len(chosen) for chosen in by_worker.values())

    def holder(self, group: int) -> WorkerHandle | None:
        """The live worker holding `group` (given to it, not reported written yet)."""
        return next((h for h in self.run.workers if h.alive and group in h.outstanding), None)

    def _writer(self, group: int, what: str, skip_unknown: bool = False) -> WorkerHandle | None:
        """The worker that wrote `group` in this run (it may have ended since); for a group written
        before (a resumed run), None with `skip_unknown`, else a ValueError saying why not."""
        handle = self.writer.get(group)
        if handle is None and not skip_unknown:
            raise ValueError(f"cannot {what} in this run: its row group {group} was written before this run started")
        return handle

    # ---- what the UIs see ---------------------------------------------------------------------------

    def _held_ticks(self) -> list[tuple[WorkerHandle, Tick]]:
        return [(h, h.tick) for h in self.run.workers if h.alive and h.tick is not None]

    def failures(self) -> list[CellFailure]:
        """Failed cells now: of written groups from the parent, of held ones from their worker's last tick."""
        group_of = self.run.tracker.group_of
        held: set[int] = set()
        failures: list[CellFailure] = []
        for handle, tick in self._held_ticks():
            groups = handle.outstanding.intersection(tick.groups)
            held |= groups
            failures += [failure for cell, failure in tick.failures if group_of(cell) in groups]
        written = [f for cell, f in self.run.scheduler.failures.items() if group_of(cell) not in held]
        return written + failures

    def held_row_states(self, rows: Iterable[int]) -> dict[int, bytes]:
        """The cell states of those `rows` whose group a worker holds, as its last tick reported them
        (the parent's own states of a group change only once it is written)."""
        tracker = self.run.tracker
        n, size = tracker.n_nodes, tracker.group_size
        where: dict[int, tuple[bytes, int]] = {}
        for handle, tick in self._held_ticks():
            if not tick.states:
                continue
            offset = 0
            for group in tick.groups:
                if group in handle.outstanding:
                    where[group] = (tick.states, offset)
                offset += len(tracker.group_rows(group)) * n
        held: dict[int, bytes] = {}
        for row in rows:
            if (found := where.get(row // size)) is not None:
                states, offset = found
                start = offset + (row - row // size * size) * n
                held[row] = states[start : start + n]
        return held

    def views(self) -> tuple[WorkerView, ...]:
        done: dict[int, int] = {}
        for handle in self.writer.values():
            done[handle.index] = done.get(handle.index, 0) + 1
        return tuple(
            WorkerView(
                index=h.index,
                alive=h.alive,
                groups_done=done.get(h.index, 0),
                groups_in_flight=h.tick.in_use.get(ROW_GROUPS, 0) if h.alive and h.tick is not None else 0,
                cells_in_flight=h.tick.in_use.get(SLOTS, 0) if h.alive and h.tick is not None else 0,
                calls_per_s=round(self._calls[h.index].per_s(), 1) if h.alive and h.index in self._calls else 0.0,
                pid=h.pid,
            )
            for h in self.run.workers
        )


class RoutedCellCommands(RunController):
    """Retry and drop of a run on several worker processes (the base of WorkersController)."""

    _run: ParentRun

    def retry(
        self,
        cells: Iterable[tuple[int, str]] = (),
        rows: Iterable[int] = (),
        all_failed: bool = False,
        columns: Iterable[str] | None = None,
    ) -> int:
        """As for one process; the workers holding (or having written) the rows retry them, and this
        waits for how many cells they took. A row whose group was written by a worker that has ended
        raises ValueError."""
        ids = [self.cell_id(row, column) for row, column in cells]
        chosen = list(rows)
        names = None if columns is None else self._known_columns(columns)
        if names is None:
            n = len(self._run.node_names)
            ids += [row * n + node for row in chosen for node in range(n)]

        def retry() -> concurrent.futures.Future[int]:
            held_nodes = None
            if names is not None:
                ids.extend(self._edits.failed_cells(names, chosen or None))
                if not chosen:  # every failed cell of the columns: the held groups' too, which their workers know
                    held_nodes = [self._run.node_names.index(name) for name in names]
            return self._run.commands.retry(ids, all_failed=all_failed and names is None, held_nodes=held_nodes)

        return self._counted(self._call(retry))

    def _counted(self, answer: concurrent.futures.Future[int] | None) -> int:
        """What the workers answered (0: the run is over, or they did not answer in time)."""
        if answer is None:
            return 0
        try:
            return answer.result(COMMAND_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return 0

    def failures(self) -> list[dict[str, Any]]:
        def failures() -> list[dict[str, Any]]:
            return [f.record() for f in self._run.commands.failures() if f.action != "filtered"]

        return self._call(failures) or []

    def drop(self, rows: Iterable[int]) -> int:
        selected = list(rows)
        return self._call(lambda: self._run.commands.drop(selected)) or 0
