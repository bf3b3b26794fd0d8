"""What runs next: a pool of worker coroutines pulling ready cells under resizable limits.

Workers are made for work that exists: never more than the execution-slot limit, nor than the cells that
were ready or running at once, so a huge limit costs nothing. A worker takes the best ready cell whose model has a
free request slot (oldest row group first, then the longest critical path), runs it, records the
outcome in the tracker and queues the cells that became ready. Nothing here rescans all cells.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import random
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType

from treadle.engine.context import ColumnContext, ContextServices
from treadle.engine.deadlines import Deadlines
from treadle.engine.errors import CellError, FatalRunError
from treadle.engine.events import (
    CellFailed,
    CellRetried,
    EventBus,
    Idle,
    LimitChanged,
    Paused,
    Resumed,
    RowDropped,
    Salvage,
    Stopping,
)
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.journal import Journal
from treadle.engine.limits import ROW_GROUPS, SLOTS, Limit
from treadle.engine.policy import (
    RATE_LIMIT_EXTRA_ATTEMPTS,
    CellFailure,
    ErrorWindow,
    NodePolicy,
    RetryPolicy,
    is_rate_limit,
    is_retryable,
)
from treadle.engine.rate_limits import ModelRate
from treadle.engine.rows import RowStore
from treadle.engine.tracing import NullTracer, Tracer, TraceStatus
from treadle.engine.tracker import CellState, CellTracker

_READY = CellState.READY
_RUNNING = CellState.RUNNING
_FAILED = CellState.FAILED
_DEGRADED = CellState.DEGRADED
_ASYNC = RunMode.ASYNC
_INLINE = RunMode.INLINE
_MAX_MESSAGE = 500
_SLICE_S = 0.005
_CALLS_PER_SLICE = 32


class _GroupStatus:
    PENDING, ACTIVE, FINISHED = range(3)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


class Scheduler:
    def __init__(
        self,
        tracker: CellTracker,
        generators: Sequence[Generator],
        critical_path: Sequence[int],
        store: RowStore,
        limits: dict[str, Limit],
        rates: dict[str, ModelRate],
        policy: RetryPolicy,
        node_policies: Sequence[NodePolicy],
        error_window: ErrorWindow,
        salvage_rounds: int,
        redact: Callable[[str], str],
        bus: EventBus,
        on_group_finished: Callable[[int], Awaitable[None]],
        python_threads: int,
        tracer: Tracer,
        journal: Journal,
        finished_groups: Collection[int] = (),
        hold_open: bool = False,
        seed: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tracker = tracker
        self.generators = list(generators)
        self.store = store
        self.limits = limits
        self.rates = rates
        """Per model limit name: when its requests may start (ceiling, budgets, adaptive pace)."""
        self.policy = policy
        self.node_policies = list(node_policies)
        self._timeouts = [p.timeout_s for p in node_policies]
        self._error_window = error_window
        self._salvage_left = salvage_rounds
        self._redact = redact
        self._salvageable: set[int] = set()
        self.pause_reason: str | None = None
        self.bus = bus
        self._on_group_finished = on_group_finished
        self._clock = clock
        self.hold_open = hold_open
        self.tracer = tracer
        self._tracing = not isinstance(tracer, NullTracer)
        """Checked before recording a finished cell: cheaper than a call to NullTracer.done."""
        self._usage_keys = tracer.usage_keys
        self._trace_plain = tracer.record_plain
        self._pack = tracer.pack
        self.journal = journal
        self._free_lanes: list[int] = []
        self._next_lane = 0
        self._idle_reported = False
        self._rng = random.Random(seed)
        self._executor = ThreadPoolExecutor(python_threads, thread_name_prefix="treadle-python")
        self._model_waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._first_started: dict[int, float] = {}
        self._slice_start: float | None = None
        self._slice_calls = 0
        self.context_services: ContextServices | None = None
        self._deadlines = Deadlines(min(self._timeouts, default=1.0), clock)
        self._slots = limits[SLOTS]
        self._row_groups = limits[ROW_GROUPS]
        # Lanes: one ready heap per distinct per-model limit, plus one for cells under no model limit.
        lane_keys = sorted({g.limit_key for g in self.generators if g.limit_key is not None})
        self._lane_rates: list[ModelRate | None] = [None] + [rates[k] for k in lane_keys]
        self._lane_of_node = [0 if g.limit_key is None else 1 + lane_keys.index(g.limit_key) for g in generators]
        self._node_limit = [None if lane == 0 else limits[lane_keys[lane - 1]] for lane in self._lane_of_node]
        self._rate_timer: asyncio.TimerHandle | None = None
        self._rate_timer_at = math.inf
        # Heap entries: (row, -critical path, cell, time it became ready): the oldest row first, so rows
        # (and row groups) finish early instead of every row waiting for the group's first column.
        self._heaps: list[list[tuple[int, int, int, float]]] = [[] for _ in self._lane_rates]
        self._neg_cp = [-cp for cp in critical_path]
        self._group_status = bytearray(tracker.n_groups)
        for group in finished_groups:
            self._group_status[group] = _GroupStatus.FINISHED
        self._next_group = 0
        self._idle: deque[asyncio.Future[None]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._alive = 0
        self._retry_timers: dict[int, asyncio.TimerHandle] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self.first_row_done_at: float | None = None
        """When the first row had every cell done (the clock's time): how soon results show."""
        self.attempts: dict[int, int] = {}
        self.failures: dict[int, CellFailure] = {}
        self.latencies = tracer.latencies if self._tracing else [array("d") for _ in self.generators]
        self.paused = False
        self.stopping = False
        self.fatal: FatalRunError | None = None
        self._finished: asyncio.Event | None = None
        self._done = False
        """`_finished` is set (a plain flag the workers can check for each cell)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until every cell is finished, or until a stop lets the running cells end."""
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()
        try:
            watchdog = self._loop.create_task(self._deadlines.watch())
            self._admit()
            self._check_finished()
            await self._finished.wait()
            watchdog.cancel()
            for timer in self._retry_timers.values():
                timer.cancel()
            if self._rate_timer is not None:
                self._rate_timer.cancel()
            self._wake(len(self._idle))
            await asyncio.gather(*self._workers, return_exceptions=True)
            while self._writes:
                await asyncio.gather(*list(self._writes))
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

    def _check_finished(self) -> None:
        # hold_open keeps a finished run waiting for a person's retry or drop until it is closed.
        if self._slots.in_use:
            return
        if self.tracker.unfinished == 0 and self._salvageable and self._salvage_left and not self.stopping:
            self._salvage()
            return
        if self.stopping or (self.tracker.unfinished == 0 and not self.hold_open):
            self._set_finished()
        elif self.tracker.unfinished == 0 and not self._idle_reported:
            self._idle_reported = True
            self.bus.emit(Idle())

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
            if self._free_lanes:
                lane = heapq.heappop(self._free_lanes)
            else:
                lane = self._next_lane
                self._next_lane += 1
            task = self._loop.create_task(self._worker(lane))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def _resize_workers(self) -> None:
        if self._alive > self._slots.total:
            self._wake(len(self._idle))
        else:
            self._provide_workers(self._ready_count())

    def _ready_count(self) -> int:
        """Ready heap entries (an upper bound: entries of dropped cells leave lazily)."""
        return sum(len(heap) for heap in self._heaps)

    async def _worker(self, lane: int) -> None:
        """Runs cells one after another; `lane` numbers the worker for traces (timeline lanes)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        while True:
            if self._alive > self._slots.total or self._done:
                self._alive -= 1
                heapq.heappush(self._free_lanes, lane)
                # A retiring worker may leave ready work behind that an idle one can take.
                self._wake(1)
                return
            # Workers share a loop iteration: a time slice, or a number of model calls started (each
            # comes back for more CPU when its connection opens, all at once). Many workers waking at
            # once (1,000 LLM calls starting) would otherwise run all their starts in one iteration;
            # yielding keeps timers, commands and I/O flowing. Inline: this runs for every cell.
            if self._slice_start is None:
                self._begin_slice()
            elif self._slice_calls >= _CALLS_PER_SLICE or self._clock() - self._slice_start > _SLICE_S:
                await asyncio.sleep(0)
                continue
            entry = self._take()
            if entry is None:
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
                continue
            try:
                await self._run_cell(entry[2], entry[3], task, lane)
            except Exception as exc:  # a bug in the engine: end the run with what is done, never hang
                self.fatal = FatalRunError(f"treadle engine error: {type(exc).__name__}: {exc}")
                self.abort()
                raise

    def _begin_slice(self) -> None:
        self._slice_start = self._clock()
        self._slice_calls = 0
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

    def _push(self, cells: list[int], now: float | None = None) -> None:
        n_nodes = self.tracker.n_nodes
        if now is None:
            now = self._clock()
        for cell in cells:
            node = cell % n_nodes
            entry = (cell // n_nodes, self._neg_cp[node], cell, now)
            heapq.heappush(self._heaps[self._lane_of_node[node]], entry)
        if self._idle or self._alive < self._slots.total:
            self._provide_workers(len(cells))

    def _take(self) -> tuple[int, int, int, float] | None:
        """The best ready heap entry whose model has a free slot, with the slots taken; or None."""
        if self.paused or self.stopping:
            return None
        state = self.tracker.state
        if len(self._heaps) == 1:  # no per-model limits (python/template columns): one heap, no slot check
            heap = self._heaps[0]
            while heap:
                entry = heapq.heappop(heap)
                if state[entry[2]] == _READY:  # else dropped while it waited
                    self._slots.acquire()
                    self.tracker.start(entry[2])
                    return entry
            return None
        best: tuple[int, int, int, float] | None = None
        best_lane = -1
        now = self._clock()
        soonest = math.inf
        for lane, heap in enumerate(self._heaps):
            while heap and state[heap[0][2]] != _READY:
                heapq.heappop(heap)  # dropped while it waited
            if not heap or (best is not None and heap[0] >= best):
                continue
            rate = self._lane_rates[lane]
            if rate is not None and (delay := rate.start_delay(now)) > 0:
                soonest = min(soonest, delay)
                continue
            best = heap[0]
            best_lane = lane
        if best is None:
            self._arm_rate_timer(now, soonest)
            return None
        heap = self._heaps[best_lane]
        heapq.heappop(heap)
        cell = best[2]
        rate = self._lane_rates[best_lane]
        if rate is not None:
            rate.started(now)
            self._slice_calls += 1
            if heap:  # the next start of this model: another worker now, or be woken when the pace allows
                delay = rate.start_delay(now)
                if delay == 0:
                    self._provide_workers(1)
                else:
                    self._arm_rate_timer(now, delay)
        self._slots.acquire()
        self.tracker.start(cell)
        return best

    def _arm_rate_timer(self, now: float, delay: float) -> None:
        """Wake a worker when a model's pace or Retry-After lets a waiting request start."""
        if delay == math.inf or delay <= 0:
            return
        at = now + delay
        if at >= self._rate_timer_at:
            return
        assert self._loop is not None
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        self._rate_timer_at = at
        self._rate_timer = self._loop.call_later(delay, self._rate_timer_fired)

    def _rate_timer_fired(self) -> None:
        self._rate_timer = None
        self._rate_timer_at = math.inf
        self._provide_workers(1)

    async def _run_cell(self, cell: int, t_ready: float, task: asyncio.Task, lane: int) -> None:
        tracker = self.tracker
        n_nodes = tracker.n_nodes
        row_index, node = divmod(cell, n_nodes)
        generator = self.generators[node]
        row = self.store.rows[row_index]
        error: BaseException | None = None
        values: dict | None = None
        started = self._clock()
        try:
            mode = generator.mode
            if mode is _INLINE:
                values = generator.generate(row)
            else:
                running = self._deadlines.running
                running[cell] = (started + self._timeouts[node], task)
                try:
                    if generator.wants_context:
                        values = await self._call_with_context(cell, lane, generator, row)
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
            if not self._deadlines.expired(cell, task):
                raise
            error = TimeoutError()
        except Exception as exc:
            error = exc
        finally:
            self._slots.release()
            limit = self._node_limit[node]
            if limit is not None:
                limit.release()
                if self._model_waiters:
                    self._wake_model(limit.name)
        ended = self._clock()
        if tracker.state[cell] == _RUNNING:
            if error is None:
                assert values is not None
                row.update(values)
                if self._tracing:  # Tracer.done inlined: a method call is a third of tracing's cost per cell
                    attempt = self.attempts.get(cell, 0) + 1 if self.attempts else 1
                    if self._usage_keys[node] in values:
                        self.tracer.done(row_index, node, attempt, lane, t_ready, started, ended, values)
                    else:
                        self._trace_plain(self._pack(row_index, node, attempt, lane, t_ready, started, ended))
                else:  # while tracing, the tracer takes latencies from its records
                    self.latencies[node].append(ended - started)
                self.journal.done(row_index, node, values)
                self._error_window.attempts += 1
                ready = tracker.complete(cell)
                if ready:
                    self._push(ready, ended)
                elif self.first_row_done_at is None and tracker.row_settled(row_index):
                    self.first_row_done_at = ended
                # _after_change inlined for the common case: the cell's group is still open.
                if not tracker.group_open[cell // n_nodes // tracker.group_size]:
                    self._after_change(cell)
            else:
                self._record_error(cell, error, (lane, t_ready, started, ended))
                self._after_change(cell)
        else:
            attempt = self.attempts.get(cell, 0) + 1
            self.tracer.record(row_index, node, attempt, lane, t_ready, started, ended, "cancelled")
        if not self._slots.in_use:
            self._check_finished()

    async def _call_with_context(self, cell: int, lane: int, generator: Generator, row: dict) -> dict:
        """Run a python function that takes `ctx`; its LLM calls end with the cell."""
        assert self.context_services is not None and self._loop is not None
        n_nodes = self.tracker.n_nodes
        ctx = ColumnContext(self.context_services, cell // n_nodes, cell % n_nodes, lane)
        try:
            if generator.mode is _ASYNC:
                values = await generator.agenerate(MappingProxyType(row), ctx)
            else:
                values = await self._loop.run_in_executor(
                    self._executor, generator.generate, MappingProxyType(row), ctx
                )
        finally:
            ctx.cancel()
        usage_key = f"{generator.outputs[0]}__usage"
        if ctx.calls and usage_key not in values:
            values[usage_key] = ctx.usage
        return values

    # ---- for calls made from inside cells (treadle.engine.context) -------------------------------------

    def clock(self) -> float:
        return self._clock()

    @property
    def rng(self) -> random.Random:
        return self._rng

    async def acquire_model(self, key: str) -> None:
        """Wait until a request to a model may start (the run unpaused, its slot, pace and Retry-After),
        then take its slot."""
        rate = self.rates[key]
        assert self._loop is not None
        while True:
            delay = math.inf if self.paused else rate.start_delay(self._clock())
            if delay == 0:
                break
            waiter = self._loop.create_future()
            self._model_waiters.setdefault(key, deque()).append(waiter)
            if delay == math.inf:
                await waiter
            else:  # the pace or a Retry-After: back when it allows, or sooner when a slot frees
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), delay)
                waiter.cancel()  # a waiter left behind would take the wake-up meant for another
        rate.started(self._clock())

    def release_model(self, key: str) -> None:
        self.rates[key].finished()
        self._wake_model(key)
        self._wake(1)  # an idle worker may be waiting for this model's slot too

    def _wake_model(self, key: str) -> None:
        waiters = self._model_waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all_models(self) -> None:
        for waiters in self._model_waiters.values():
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def trace_child(
        self,
        row: int,
        node: int,
        lane: int,
        model: str,
        attempt: int,
        times: tuple[float, float, float],
        status: TraceStatus,
        error: BaseException | None,
        usage: dict | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = None if error is None else self._redact(_one_line(error))
        child = (model, usage)
        self.tracer.record(row, node, attempt, lane, *times, status, error, message, None, child, retry_after)

    def _record_error(self, cell: int, error: BaseException, timing: tuple[int, float, float, float]) -> None:
        attempt = self.attempts.get(cell, 0) + 1
        self.attempts[cell] = attempt
        n_nodes = self.tracker.n_nodes
        node = cell % n_nodes
        policy = self.node_policies[node]
        timed_out = isinstance(error, TimeoutError)
        retryable = is_retryable(error)
        message = f"timed out after {policy.timeout_s:g} s" if timed_out else self._redact(_one_line(error))
        # A rate-limit answer says the endpoint works but is busy: waiting it out does not spend the budget.
        budget = policy.retries + (RATE_LIMIT_EXTRA_ATTEMPTS if is_rate_limit(error) else 0)
        will_retry = retryable and attempt <= budget and not self.stopping
        delay = 0.0
        retry_after = error.retry_after if isinstance(error, CellError) else None
        if will_retry:
            rate = self._lane_rates[self._lane_of_node[node]]
            if is_rate_limit(error) and rate is not None and rate.adaptive:
                delay = retry_after or 0.0  # the model's pace and its hold decide when requests go again
            else:
                delay = self.policy.delay(attempt, retry_after, self._rng)
            if policy.deadline_s is not None:
                first_start = self._first_started.setdefault(cell, timing[2])
                if self._clock() + delay - first_start > policy.deadline_s:
                    will_retry = False
                    message = f"{message} (cell deadline of {policy.deadline_s:g} s reached)"
        status = "timeout" if timed_out else "retry" if will_retry else "failed"
        honoured = retry_after if will_retry else None
        self.tracer.record(cell // n_nodes, node, attempt, *timing, status, error, message, retry_after=honoured)
        if not is_rate_limit(error) and self._error_window.record_failure():
            self._early_stop(message)
        if will_retry:
            self.tracker.wait_retry(cell)
            assert self._loop is not None
            self._retry_timers[cell] = self._loop.call_later(delay, self._requeue, cell)
            return
        row = cell // n_nodes
        failure = CellFailure(
            row=row,
            column=self.generators[node].name,
            error_class=type(error).__name__,
            message=message,
            attempts=attempt,
            action=policy.on_failure,
            retryable=retryable,
        )
        self.failures[cell] = failure
        if isinstance(error, FatalRunError):
            failure.action = "fail"
            self.tracker.fail(cell)
        elif policy.on_failure == "default":
            values = {column: policy.default for column in self.generators[node].outputs}
            self.store.rows[row].update(values)
            ready = self.tracker.complete(cell, _DEGRADED)
            if ready:
                self._push(ready)
        elif policy.on_failure == "skip_row":
            self.tracker.drop_row(row)
            self.journal.dropped(row)
        else:
            self.tracker.fail(cell)
            if retryable:
                self._salvageable.add(cell)
        self.bus.emit(
            CellFailed(
                row=failure.row,
                column=failure.column,
                error_class=failure.error_class,
                message=failure.message,
                attempts=attempt,
                action=failure.action,
            )
        )
        if isinstance(error, FatalRunError) and self.fatal is None:
            self.fatal = FatalRunError(self._redact(str(error)))
            self.stop(f"stopped early: {self.fatal}")

    def _early_stop(self, last_error: str) -> None:
        if self.paused or self.stopping:
            return
        window = self._error_window
        self.pause_reason = (
            f"stopped early: {window.failed} of the last {window.size} attempts failed (last error: {last_error})"
        )
        self.pause(self.pause_reason)

    def _salvage(self) -> None:
        """One more round for cells that spent their attempts on retryable errors (a flaky patch)."""
        self._salvage_left -= 1
        cells = sorted(self._salvageable)
        self._salvageable.clear()
        self.bus.emit(Salvage(cells=len(cells), rounds_left=self._salvage_left))
        self.retry(cells)

    def _requeue(self, cell: int) -> None:
        self._retry_timers.pop(cell, None)
        if not self.stopping and self.tracker.ready_again(cell):
            self._push([cell])

    # ---- row groups ------------------------------------------------------------------------------

    def _admit(self) -> None:
        tracker = self.tracker
        while (
            not self.stopping
            and not self.paused
            and self._row_groups.in_use < self._row_groups.total
            and self._next_group < tracker.n_groups
        ):
            group = self._next_group
            self._next_group += 1
            if self._group_status[group] == _GroupStatus.FINISHED:  # finished before a resume
                continue
            self.store.load_group(group)
            self._row_groups.acquire()
            self._group_status[group] = _GroupStatus.ACTIVE
            ready = tracker.activate_group(group)
            if ready:
                self._push(ready)
            elif tracker.group_open[group] == 0:
                self._finish_group(group)

    def _after_change(self, cell: int) -> None:
        group = self.tracker.group_of(cell)
        if self.tracker.group_open[group] == 0 and self._group_status[group] == _GroupStatus.ACTIVE:
            self._finish_group(group)
            self._admit()

    def _finish_group(self, group: int) -> None:
        self._group_status[group] = _GroupStatus.FINISHED
        self._row_groups.release()
        assert self._loop is not None
        write = self._loop.create_task(self._on_group_finished(group))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    def _reopen_group(self, group: int) -> None:
        if self._group_status[group] == _GroupStatus.FINISHED:
            self._group_status[group] = _GroupStatus.ACTIVE
            self._row_groups.acquire()

    def is_finished(self, group: int) -> bool:
        return self._group_status[group] == _GroupStatus.FINISHED

    def active_groups(self) -> list[int]:
        return [g for g, status in enumerate(self._group_status) if status == _GroupStatus.ACTIVE]

    def group_status(self) -> tuple[int, int, int]:
        """Row groups (finished, in flight, not started)."""
        finished = self._group_status.count(_GroupStatus.FINISHED)
        active = self._group_status.count(_GroupStatus.ACTIVE)
        return finished, active, len(self._group_status) - finished - active

    # ---- commands (called on the engine loop) ----------------------------------------------------

    def pause(self, reason: str | None = None) -> None:
        if not self.paused:
            self.paused = True
            self.bus.emit(Paused(reason=reason))

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.pause_reason = None
            self._error_window.clear()
            self._wake_all_models()
            self.bus.emit(Resumed())
            self._admit()
            self._wake(len(self._idle))

    def stop(self, reason: str = "interrupted") -> None:
        """Start no new cells; the run ends when the running ones have."""
        if self.stopping:
            return
        self.stopping = True
        self.bus.emit(Stopping(reason=reason))
        for timer in self._retry_timers.values():
            timer.cancel()
        self._retry_timers.clear()
        self._wake(len(self._idle))
        self._check_finished()

    def pace_changed(self) -> None:
        """A model's budgets changed: waiting requests look again at when they may start."""
        if self._loop is not None:
            self._wake_all_models()
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
        self._wake_all_models()
        if limit is self._slots:
            self._resize_workers()
        elif limit is self._row_groups:
            self._admit()
        else:
            self._wake(len(self._idle))

    def retry(self, cells: list[int]) -> int:
        """Turn failed cells (and their blocked dependents) back into work; returns how many."""
        retried = 0
        for cell in cells:
            if self.tracker.state[cell] != _FAILED:
                continue
            group = self.tracker.group_of(cell)
            self.store.load_group(group)
            self._reopen_group(group)
            ready = self.tracker.retry(cell)
            self.failures.pop(cell, None)
            self.attempts.pop(cell, None)
            self._first_started.pop(cell, None)
            self._salvageable.discard(cell)
            retried += 1
            self._idle_reported = False
            self.bus.emit(
                CellRetried(
                    row=cell // self.tracker.n_nodes,
                    column=self.generators[cell % self.tracker.n_nodes].name,
                )
            )
            if ready:
                self._push(ready)
        return retried

    def drop(self, rows: list[int]) -> int:
        dropped = 0
        for row in rows:
            if self.tracker.row_dropped(row):
                continue
            self.tracker.drop_row(row)
            self.journal.dropped(row)
            dropped += 1
            self.bus.emit(RowDropped(row=row))
            base = row * self.tracker.n_nodes
            for cell in range(base, base + self.tracker.n_nodes):
                self.failures.pop(cell, None)
                self._salvageable.discard(cell)
                timer = self._retry_timers.pop(cell, None)
                if timer is not None:
                    timer.cancel()
            self._after_change(base)
        self._check_finished()
        return dropped
