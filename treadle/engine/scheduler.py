"""What runs next: a pool of worker coroutines pulling ready cells under resizable limits.

Workers are made for work that exists: never more than the execution-slot limit, nor than the cells that
were ready or running at once, so a huge limit costs nothing. A worker takes the best ready cell whose
model may start a request (treadle.engine.ready), runs it, records the outcome in the tracker (a failed
attempt goes to treadle.engine.failures) and queues the cells that became ready. Which work there is (row
groups admitted and written, retry, drop) is treadle.engine.workload's. Nothing here rescans all cells.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

from treadle.engine.batches import Batches, CallParts
from treadle.engine.cache_hits import CacheHits
from treadle.engine.capacity import Capacity
from treadle.engine.context import ContextServices
from treadle.engine.deadlines import Deadlines
from treadle.engine.errors import FatalRunError
from treadle.engine.events import EventBus, LimitChanged, Paused, Resumed, Stopping
from treadle.engine.failures import FailureHandler
from treadle.engine.filters import filter_row
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.generators.filter import RowFiltered
from treadle.engine.journal import Journal
from treadle.engine.limits import ROW_GROUPS, SLOTS
from treadle.engine.policy import FailurePolicies
from treadle.engine.ready import ReadyHeaps
from treadle.engine.row_groups import RowGroups
from treadle.engine.rows import RowStore
from treadle.engine.services import CellServices
from treadle.engine.stats import Quantiles
from treadle.engine.tracing import NullTracer, Tracer
from treadle.engine.tracker import CellState, CellTracker
from treadle.engine.workload import Workload

_RUNNING = CellState.RUNNING
_ASYNC = RunMode.ASYNC
_INLINE = RunMode.INLINE
_BATCH = RunMode.BATCH
_SLICE_S = 0.005
_CALLS_PER_SLICE = 32


class Scheduler:
    def __init__(
        self,
        tracker: CellTracker,
        generators: Sequence[Generator],
        critical_path: Sequence[int],
        store: RowStore,
        capacity: Capacity,
        policies: FailurePolicies,
        bus: EventBus,
        tracer: Tracer,
        journal: Journal,
        on_group_finished: Callable[[int], Coroutine[Any, Any, None]],
        finished_groups: Collection[int] = (),
        hold_open: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tracker = tracker
        self.generators = list(generators)
        self.store = store
        self.limits = capacity.limits
        self.rates = capacity.rates
        self.bus = bus
        self.journal = journal
        self._clock = clock
        self.pause_reason: str | None = None
        self.paused = False
        self.stopping = False
        self.fatal: FatalRunError | None = None
        self.first_row_done_at: float | None = None
        """When the first row had every cell done (the clock's time): how soon results show."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Event | None = None
        self._done = False
        """`_finished` is set (a plain flag the workers can check for each cell)."""
        self._slots = self.limits[SLOTS]
        self.row_groups = RowGroups(tracker.n_groups, self.limits[ROW_GROUPS], finished_groups)
        self._init_workers(capacity.python_threads)
        self._ready = ReadyHeaps(
            tracker, self.generators, critical_path, self.limits, self.rates, clock, lambda: self._provide_workers(1)
        )
        self._node_limit = self._ready.node_limit
        self._hits = CacheHits(tracker.n_rows * tracker.n_nodes, tracker.n_nodes, self.generators, store)
        self._cached = self._hits.values
        self.cache_hits = self._hits.marks
        if self._hits.enabled:
            self._ready.probe = self._hits.probe
        if any(not g.outputs for g in self.generators) and tracker.filtered_by is None:  # a filter: counted apart
            tracker.track_filters()
        self.tracer = tracer
        self._tracing = not isinstance(tracer, NullTracer)
        """Checked before recording a finished cell: cheaper than a call to NullTracer.done."""
        self._usage_keys = tracer.usage_keys
        self._trace_plain = tracer.record_plain
        self._pack = tracer.pack
        self.latencies = tracer.latencies if self._tracing else [Quantiles() for _ in self.generators]
        self._timeouts = [p.timeout_s for p in policies.nodes]
        self._deadlines = Deadlines(min(self._timeouts, default=1.0), clock)
        rng = random.Random(policies.jitter_seed)
        self._failure_handler = FailureHandler(self, policies, self.rates, clock, rng)
        self.failures = self._failure_handler.failures
        self.attempts = self._failure_handler.attempts
        self.error_window = policies.error_window
        self.cell_services = CellServices(self.rates, policies, tracer, clock, rng, self)
        """What calls made inside cells (ctx.llm) get from the run."""
        self._model_waiters = self.cell_services.waiters
        self.context_services: ContextServices | None = None
        parts = CallParts(self._slots, self._deadlines, self._timeouts, self._executor, self._failure_handler, clock)
        self.batches = Batches(self, parts)
        self._has_batches = any(self.batches.nodes)
        self._ready.collect_batches = self.batches.collect if self._has_batches else None
        self._workload = Workload(
            self, self._failure_handler, self._hits, on_group_finished, self._set_finished, hold_open
        )

    def _init_workers(self, python_threads: int) -> None:
        self._idle: deque[asyncio.Future[None]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._alive = 0
        self._free_slot_numbers: list[int] = []
        """Slot numbers of retired workers, for the next ones (a heap: the lowest first)."""
        self._next_slot_number = 0
        self._slice_start: float | None = None
        self._executor = ThreadPoolExecutor(python_threads, thread_name_prefix="treadle-python")

    # ---- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until every cell is finished, or until a stop lets the running cells end."""
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()
        try:
            watchdog = self._loop.create_task(self._deadlines.watch())
            self.admit_groups()
            self._workload.check_finished()
            await self._finished.wait()
            watchdog.cancel()
            self._failure_handler.cancel_retries()
            self._ready.cancel_timer()
            self._wake(len(self._idle))
            await asyncio.gather(*self._workers, return_exceptions=True)
            await self._workload.written()
        finally:
            for task in self._workers:
                task.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def abort(self) -> None:
        """Cancel running cells now (a second interrupt, or the grace period ran out)."""
        self.stopping = True
        for task in list(self._workers):
            task.cancel()
        if self._finished is not None:
            self._set_finished()

    # ---- workers ---------------------------------------------------------------------------------

    def _provide_workers(self, wanted: int) -> None:
        """Wake idle workers for `wanted` new ready cells; start new ones (up to the slot limit) for the rest."""
        missing = wanted - self._wake(wanted)
        if missing > 0 and self._alive < self._slots.total:
            self._spawn(min(missing, self._slots.total - self._alive))

    def _spawn(self, n: int) -> None:
        assert self._loop is not None
        for _ in range(n):
            self._alive += 1
            if self._free_slot_numbers:
                slot = heapq.heappop(self._free_slot_numbers)
            else:
                slot = self._next_slot_number
                self._next_slot_number += 1
            task = self._loop.create_task(self._worker(slot))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def _resize_workers(self) -> None:
        if self._alive > self._slots.total:
            self._wake(len(self._idle))
        else:
            self._provide_workers(self._ready.count())

    async def _worker(self, slot: int) -> None:
        """Runs cells one after another; `slot` numbers the worker's execution slot for traces (0 .. slots-1)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        heaps = self._ready
        take = heaps.take
        while True:
            if self._alive > self._slots.total or self._done:
                self._alive -= 1
                heapq.heappush(self._free_slot_numbers, slot)
                # A retiring worker may leave ready work behind that an idle one can take.
                self._wake(1)
                return
            # Workers share a loop iteration: a time slice, or a number of model calls started (each
            # comes back for more CPU when its connection opens, all at once). Many workers waking at
            # once (1,000 LLM calls starting) would otherwise run all their starts in one iteration;
            # yielding keeps timers, commands and I/O flowing. Inline: this runs for every cell.
            if self._slice_start is None:
                self._begin_slice()
            elif heaps.model_starts >= _CALLS_PER_SLICE or self._clock() - self._slice_start > _SLICE_S:
                await asyncio.sleep(0)
                continue
            entry = None if self.paused or self.stopping else take()
            if entry is None:
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
                continue
            try:
                await self._run_cell(entry[2], entry[3], task, slot)
            except Exception as exc:  # a bug in the engine: end the run with what is done, never hang
                self.fatal = FatalRunError(f"treadle engine error: {type(exc).__name__}: {exc}")
                self.abort()
                raise

    def _begin_slice(self) -> None:
        self._slice_start = self._clock()
        self._ready.model_starts = 0
        assert self._loop is not None
        self._loop.call_soon(self._end_slice)

    def _end_slice(self) -> None:
        self._slice_start = None

    def _set_finished(self) -> None:
        assert self._finished is not None
        self._done = True
        self._finished.set()

    def _wake(self, n: int) -> int:
        """Wake up to `n` idle workers; returns how many."""
        woken = 0
        while woken < n and self._idle:
            idle = self._idle.popleft()
            if not idle.done():
                idle.set_result(None)
                woken += 1
        return woken

    def push(self, cells: list[int], now: float | None = None) -> None:
        """Queue cells that became ready (at `now`, by default the clock's time)."""
        self._ready.push(cells, self._clock() if now is None else now)
        if self._idle or self._alive < self._slots.total:
            self._provide_workers(len(cells))

    def push_call(self, cell: int) -> None:  # a batch call (treadle.engine.batches)
        self._ready.push_call(cell, self._clock())
        self._provide_workers(1)

    def call_settled(self, first: int) -> None:
        """The cells of a batch call settled: their group may be finished, the run too."""
        self._workload.settled(first)
        if not self._slots.in_use:
            self._workload.check_finished()

    async def _run_cell(self, cell: int, t_ready: float, task: asyncio.Task, slot: int) -> None:
        tracker = self.tracker
        n_nodes = tracker.n_nodes
        row_index, node = divmod(cell, n_nodes)
        generator = self.generators[node]
        if generator.mode is _BATCH:
            return await self.batches.run(cell, t_ready, task, slot)
        row = self.store.rows[row_index]
        error: BaseException | None = None
        values: dict | None = None
        cached = self._cached.pop(cell, None) if self._cached else None
        started = self._clock()
        try:
            if cached is not None:
                values = cached
            elif (mode := generator.mode) is _INLINE:
                values = generator.generate(row)
            else:
                running = self._deadlines.running
                running[cell] = (started + self._timeouts[node], task)
                try:
                    if generator.wants_context:
                        assert self.context_services is not None
                        values = await self.context_services.run(generator, row, row_index, node, slot, self._executor)
                    elif mode is _ASYNC:
                        values = await generator.agenerate(MappingProxyType(row))
                    else:
                        assert self._loop is not None
                        values = await self._loop.run_in_executor(
                            self._executor, generator.generate, MappingProxyType(row)
                        )
                finally:
                    del running[cell]
        except asyncio.CancelledError:
            if not self._deadlines.expired(cell, task):  # an abort: the worker ends with the cell
                self._failure_handler.cancelled(cell, (slot, t_ready, started, self._clock()))
                raise
            error = TimeoutError()
        except Exception as exc:
            error = exc
        finally:
            self._slots.release()
            limit = self._node_limit[node]
            if limit is not None and cached is None:
                limit.release()
                if self._model_waiters:
                    self.cell_services.wake_model(limit.name)
        ended = self._clock()
        if tracker.state[cell] == _RUNNING:
            if error is None:
                assert values is not None
                row.update(values)
                if cached is not None:
                    self._hits.record(self.tracer, cell, slot, t_ready, started, ended)
                elif self._tracing:  # Tracer.done inlined: a method call is a third of tracing's cost per cell
                    attempt = self.attempts.get(cell, 0) + 1 if self.attempts else 1
                    if self._usage_keys[node] in values:
                        self.tracer.done(row_index, node, attempt, slot, t_ready, started, ended, values)
                    else:
                        self._trace_plain(self._pack(row_index, node, attempt, slot, t_ready, started, ended))
                else:  # while tracing, the tracer takes latencies from its records
                    self.latencies[node].append(ended - started)
                self.journal.done(row_index, node, values)
                self.error_window.attempts += 1
                ready = tracker.complete(cell)
                if ready:  # push() inlined: this runs for nearly every cell
                    self._ready.push(ready, ended)
                    if self._idle or self._alive < self._slots.total:
                        self._provide_workers(len(ready))
                elif self.first_row_done_at is None and tracker.row_settled(row_index):
                    self.first_row_done_at = ended
                # Workload.settled inlined for the common case: the cell's group is still open.
                if not tracker.group_open[cell // n_nodes // tracker.group_size]:
                    self._workload.settled(cell)
            else:
                self._settle_error(cell, error, (slot, t_ready, started, ended))
        else:  # its row was dropped while it ran
            self._failure_handler.cancelled(cell, (slot, t_ready, started, ended))
        if not self._slots.in_use and (not tracker.unfinished or self.stopping):  # its first tests, inline
            self._workload.check_finished()

    def _settle_error(self, cell: int, error: BaseException, timing: tuple[int, float, float, float]) -> None:
        if type(error) is RowFiltered:
            filter_row(self, self._failure_handler, cell, timing)
        else:
            self._failure_handler.record(cell, error, timing)
        self._workload.settled(cell)

    # ---- commands (called on the engine loop) ----------------------------------------------------

    def admit_groups(self) -> None:
        self._workload.admit()

    def pause(self, reason: str | None = None) -> None:
        """Start no new cells (a person's pause, or early stop with its reason) until `resume`."""
        if not self.paused:
            self.paused = True
            self.pause_reason = reason
            self.bus.emit(Paused(reason=reason))

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.pause_reason = None
            self.error_window.clear()
            self.cell_services.wake_all_models()
            self.bus.emit(Resumed())
            self.admit_groups()
            self._wake(len(self._idle))

    def stop(self, reason: str = "interrupted") -> None:
        """Start no new cells; the run ends when the running ones have."""
        if self.stopping:
            return
        self.stopping = True
        self.bus.emit(Stopping(reason=reason))
        self._failure_handler.cancel_retries()
        self._wake(len(self._idle))
        self._workload.check_finished()

    def model_slot_freed(self) -> None:
        """A call made inside a cell freed its model's request slot: an idle worker may be waiting for it."""
        self._wake(1)

    def pace_changed(self) -> None:
        """A model's budgets changed: waiting requests look again at when they may start."""
        if self._loop is not None:
            self.cell_services.wake_all_models()
            self._provide_workers(1)

    def set_limit(self, name: str, total: int) -> None:
        limit = self.limits[name]
        old = limit.total
        limit.total = total
        if name in self.rates:
            self.rates[name].set_ceiling(total)
        self.bus.emit(LimitChanged(limit=name, old=old, new=total))
        if self._loop is None:
            return
        self.cell_services.wake_all_models()
        if limit is self._slots:
            self._resize_workers()
        elif limit is self.row_groups.limit:
            self.admit_groups()
        else:
            self._wake(len(self._idle))

    def retry(self, cells: list[int], redo: bool = False) -> int:
        """Failed cells (with `redo` finished ones too) and their dependents back into work; returns how many."""
        return self._workload.retry(cells, redo)

    def drop(self, rows: list[int]) -> int:
        return self._workload.drop(rows)
