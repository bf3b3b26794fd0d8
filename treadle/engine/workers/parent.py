"""The parent of a run's worker processes: it owns the run directory and the run.

It hands out row groups (each worker holds its share of groups in flight and one more, so it never
waits for the next), shares out the limits, passes commands to every worker, merges what they report
(cell states of written groups, failures, traces, counts) and, at the end, writes output.parquet,
failures.jsonl, summary.json, trace.parquet and cells.parquet as one process does. A worker that dies
leaves its unfinished groups to the others (with the cells its journal says it finished).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import pickle
import time
from collections import deque
from typing import Any

from treadle.engine.column_edits import Versions
from treadle.engine.errors import FatalRunError
from treadle.engine.events import (
    CellFailed,
    EventBus,
    Idle,
    Paused,
    Progress,
    Resumed,
    RunFinished,
    RunStarted,
    Salvage,
    Stopping,
)
from treadle.engine.journal import replay
from treadle.engine.limits import ROW_GROUPS, SLOTS, Limit, model_limit
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.rate_limits import ModelRate
from treadle.engine.resume import Recovery
from treadle.engine.run import PROGRESS_EVERY_S, TRACE_FLUSH_EVERY_S, Run, RunOptions, RunStatus
from treadle.engine.summary_record import RunSummary
from treadle.engine.tracker import N_STATES, CellState
from treadle.engine.workers import pool
from treadle.engine.workers.merged_counts import MergedCounts
from treadle.engine.workers.messages import (
    Assign,
    CellRead,
    Command,
    Finished,
    GroupWritten,
    Retried,
    SetBudgets,
    SetLimit,
    Tick,
    WorkerMessage,
    shares,
)
from treadle.engine.workers.pool import WorkerHandle
from treadle.engine.workers.shared_limits import SharedLimits
from treadle.engine.workers.shared_rates import ReplayClock, SharedRates, on_replay_clock
from treadle.engine.workers.shared_stops import SharedEarlyStop, salvageable
from treadle.engine.workers.steering import WorkerCommands
from treadle.engine.workers.worker import WorkerSpec
from treadle.engine.workers.worker_clocks import WorkerClocks

log = logging.getLogger("treadle.workers")


class ParentRun(Run):
    """A Run whose cells run in worker processes; its tracker, tracer and failures hold what they report."""

    calls_models = False  # its workers do; langchain's import would cost the parent ~1.5 s of a core

    def __init__(
        self,
        loaded: LoadedPipeline,
        options: RunOptions,
        bus: EventBus,
        directory: RunDirectory,
        recovery: Recovery | None = None,
    ) -> None:
        self.replay_clock = ReplayClock()
        super().__init__(loaded, options, bus, directory, recovery)
        self.clocks = WorkerClocks()
        """Each worker's clock against this one (set for the transport when the workers start)."""
        self.shared_rates = SharedRates(self.rates, self.replay_clock)
        """Each model's adaptive value and pace, adapted here from every worker's answers."""
        self.early_stop = SharedEarlyStop(loaded.config.run)
        self._salvage_left = loaded.config.run.salvage_rounds
        self.n_workers, self.recovery = options.workers or loaded.config.run.workers, recovery
        self.pending = deque(g for g in range(self.tracker.n_groups) if not self.scheduler.row_groups.is_finished(g))
        """Groups not given to any worker yet (a dead worker's come back to the front)."""
        self.written = self.tracker.n_groups - len(self.pending)
        self.workers: list[WorkerHandle] = []
        self.slot_numbers = pool.SlotNumbers()  # each worker's slots, lanes of their own in the trace
        self.restored: dict[int, dict[int, dict[str, dict[str, Any]]]] = {}
        """group -> the cells a dead worker finished in it (row -> column -> values), for the next one."""
        self.shared_limits = SharedLimits(self.limits, self.rates, self.shared_rates, self.workers)
        self.merged_counts = MergedCounts(self.tracker, self.workers)
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commands = WorkerCommands(self)
        """Retry and drop routed to the workers, and what each is doing (the workers panel)."""
        self.versions = Versions()
        """The pipeline's versions (the controller's editor records them): each worker starts at the latest."""
        self.versions_in_pipeline = 0
        """How many of them `loaded` has already (a resumed run's); a worker applies the later edits."""
        self._idle_reported = False
        self.executor = options.executor or loaded.config.run.executor
        self._transport: pool.Transport | None = None

    # ---- the run -----------------------------------------------------------------------------------

    def _build_limits(self, max_parallel: int) -> tuple[dict[str, Limit], dict[str, ModelRate]]:
        """Each model's rate on the replay clock: it hears the workers' requests at the times they went."""
        limits, rates = super()._build_limits(max_parallel)
        return limits, on_replay_clock(rates, self.replay_clock, self._rate_changed)

    def _spec(self, index: int, pipeline: bytes) -> WorkerSpec:
        options = dataclasses.replace(
            self.options, out=self.directory.path, hold_open=True, workers=1, max_parallel=self._shares(SLOTS)[index]
        )
        rates = self.rates
        return WorkerSpec(
            index=index,
            pipeline=pipeline,
            base_dir=str(self.loaded.base_dir),
            options=options,
            recovery=self.recovery,
            limits={name: self._shares(name)[index] for name in self.limits},
            budgets={key: self.shared_limits.budgets(key, self.n_workers)[index] for key in rates},
            ship_groups=self._transport is not None and self._transport.ship_groups,
            versions=list(self.versions.history),
            versions_in_pipeline=self.versions_in_pipeline,
            rate_shares={key: self.shared_rates.shares(key, self.n_workers)[index] for key in rates},
        )

    def _shares(self, name: str, workers: int | None = None) -> list[int]:
        return shares(self.limits[name].total, workers or self.n_workers)

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = asyncio.Event()
        started, cpu_started = loop.time(), time.thread_time()
        self.status = "running"
        self.bus.restart_clock()
        self.tracer.t0 = time.perf_counter()
        columns, run_dir = tuple(self.node_names), str(self.directory.path)
        self.bus.emit(RunStarted(name=self.loaded.name, rows=len(self.frame), columns=columns, run_dir=run_dir))
        if self.pending:
            self.n_workers = min(self.n_workers, len(self.pending))  # a worker per group at most
            pipeline = pickle.dumps(self.loaded)
            address = self.options.ray_address or self.loaded.config.run.ray_address
            self._transport = await asyncio.to_thread(
                pool.open_transport, self.executor, address, self.n_workers, self.loaded.base_dir
            )
            self.clocks = WorkerClocks(shared=self._transport.shared_clock)
            for index in range(self.n_workers):
                spec = self._spec(index, pipeline)
                self.shared_rates.joined(index)
                self.slot_numbers.reserve(index, self._shares(SLOTS)[index])
                self.workers.append(self._transport.start_worker(spec, loop, self._on_message))
            fair = -(-len(self.pending) // len(self.workers))  # with few groups, every worker gets some
            for handle in self.workers:
                self._feed(handle, at_most=fair)
        else:
            self._done.set()
        stop_progress = asyncio.Event()
        progress = loop.create_task(self._report_progress(stop_progress))
        lag = loop.create_task(self.loop_lag.watch(self.cells_running))
        try:
            await self._done.wait()
        finally:
            stop_progress.set()
            await progress
            lag.cancel()
            if not self._done.is_set():  # the parent itself failed: its workers end too
                self.abort()
        try:
            await self._finish(started, cpu_started)
        finally:  # last: the workers' interpreters wind down while the parent writes the outputs
            await asyncio.to_thread(self._join_workers)
        self.bus.emit(RunFinished(status=self.status, wall_s=round(self.wall_s, 3), message=self.message))

    async def _finish(self, started: float, cpu_started: float) -> None:
        """Every worker has ended: the run's outputs from what they wrote and said."""
        loop = asyncio.get_running_loop()
        workers_cpu = sum(h.finished.engine_cpu_s for h in self.workers if h.finished is not None)
        await self._end(loop.time() - started, time.thread_time() - cpu_started + workers_cpu)

    def _join_workers(self) -> None:
        for handle in self.workers:
            handle.join()
        if self._transport is not None:
            self._transport.close()

    async def _report_progress(self, stop: asyncio.Event) -> None:
        """Until `stop`: a progress event every second, the merged traces to the trace file more often."""
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while True:
            try:
                await asyncio.wait_for(stop.wait(), TRACE_FLUSH_EVERY_S)
                return
            except TimeoutError:
                pass
            self.shared_limits.rebalance()
            self.shared_limits.share_rates()
            if loop.time() - last_progress >= PROGRESS_EVERY_S:
                last_progress = loop.time()
                counts = self.merged_counts.cells().reshape(-1, N_STATES).sum(axis=0)
                self.bus.emit(Progress(cells={s.label: int(counts[s]) for s in CellState if counts[s]}))
            traces = self.tracer.take_unwritten()
            try:
                await loop.run_in_executor(self._trace_writer, self.tracer.write, self.directory.trace_path, traces)
            except OSError as exc:
                self._fail(f"cannot write the run directory {self.directory.path}: {self._storage_reason(exc)}")
                return

    # ---- what workers say (on the parent's loop) ---------------------------------------------------

    def _on_message(self, handle: WorkerHandle, message: WorkerMessage | None) -> None:
        """A worker's message (None: it has ended); an error in handling it ends the run (what is
        written stays: `treadle resume` goes on), rather than leaving it waiting for what never comes."""
        try:
            self._handle(handle, message)
        except Exception as exc:
            log.debug("handling a worker's message failed", exc_info=True)
            if message is None:
                handle.alive = False
            what = "end" if message is None else type(message).__name__
            self._fail(f"internal error handling worker {handle.index}'s {what}: {type(exc).__name__}: {exc}")
        if all(not h.alive or h.finished is not None for h in self.workers):
            assert self._done is not None
            self._done.set()

    def _handle(self, handle: WorkerHandle, message: WorkerMessage | None) -> None:
        if isinstance(message, GroupWritten):
            self._group_written(handle, message)
        elif isinstance(message, Tick):
            self._tick(handle, message)
        elif isinstance(message, Retried):
            self.commands.retried(handle, message)
        elif isinstance(message, CellRead):
            self.commands.cell_read(message)
        elif isinstance(message, Finished):
            handle.finished = message
            self.merged_counts.ended(handle.index, message)
            self.shared_limits.adapt(ended=handle)
            if message.fatal is not None:
                self._fail(message.fatal)
        elif handle.finished is None and handle.alive:
            self._worker_died(handle)
        else:
            handle.alive = False
            self.commands.worker_died(handle)  # a retry it never answered counts none

    def _group_written(self, handle: WorkerHandle, message: GroupWritten) -> None:
        group = message.group
        if message.table is not None:
            self._write_sent_group(group, message.table)
        pool.apply_written_group(self.tracker, self.scheduler.failures, message)
        if not message.partial:
            self.commands.written(handle, group)
        if not message.partial and group in handle.outstanding:
            handle.outstanding.discard(group)
            self.written += 1
            self._feed(handle)

    def _write_sent_group(self, group: int, table: bytes) -> None:
        """A group file a worker sent (Ray): written on the writer thread, before the outputs read it."""
        loop = asyncio.get_running_loop()

        def write() -> None:
            try:
                pool.write_group_file(self.directory.group_path(group), table)
            except OSError as exc:
                reason = self._storage_reason(exc)
                loop.call_soon_threadsafe(self._fail, f"cannot write the run directory {self.directory.path}: {reason}")

        self._writer.submit(write)

    def _tick(self, handle: WorkerHandle, tick: Tick) -> None:
        handle.tick = tick
        if self._loop is not None:
            self.commands.ticked(handle, tick, self._loop.time())
        offset = self.clocks.heard(handle.index, tick.clock)
        if tick.traces is not None:
            pool.merge_traces(self.tracer, tick.traces, self.slot_numbers, handle.index, offset)
        if tick.latencies is not None:
            for node, ran in enumerate(tick.latencies):
                self.scheduler.latencies[node].frombytes(ran)
        for payload in tick.events:
            self.bus.emit(payload)
            if isinstance(payload, CellFailed):
                self.early_stop.last_error = payload.message
        self.shared_limits.peaks()
        if tick.first_row_done_at is not None:
            first = tick.first_row_done_at + offset
            if (self.scheduler.first_row_done_at or first) >= first:
                self.scheduler.first_row_done_at = first
        self.merged_counts.ticked(handle.index, tick)
        self.shared_rates.heard(handle.index, tick.clock, tick.signals, offset)
        self.shared_limits.adapt()
        stop_early = self.early_stop.counted(*tick.attempts)
        if stop_early is not None and not self.scheduler.paused and not self.scheduler.stopping:
            self.pause(stop_early)  # every worker's attempts filled the window: all of them pause

    def _worker_died(self, handle: WorkerHandle) -> None:
        """Its unfinished groups to the front of the queue, with the cells its journal says are done."""
        handle.alive = False
        self.commands.worker_died(handle)
        self.shared_limits.adapt(ended=handle)
        groups = sorted(handle.outstanding)
        handle.outstanding.clear()
        log.warning(
            "treadle: worker %d (%s) ended mid-run; its %d unfinished row groups go to the others",
            handle.index,
            handle.label,
            len(groups),
        )
        size = self.tracker.group_size
        journal = replay(self.directory.worker_journal_path(handle.index), lambda row: row // size not in groups)
        for row, columns in journal.done.items():
            self.restored.setdefault(row // size, {})[row] = columns
        self.pending.extendleft(reversed(groups))
        alive = [h for h in self.workers if h.alive]
        if not alive:
            self._fail("every worker process died")
            return
        self.shared_limits.send_all()
        for other in alive:
            self._feed(other)

    def _feed(self, handle: WorkerHandle, at_most: float = math.inf) -> None:
        """Give a worker groups up to its share in flight and one more (`at_most` in all); close all at the end."""
        alive = [h for h in self.workers if h.alive]
        if not handle.alive or self.scheduler.stopping:
            return
        target = min(self._shares(ROW_GROUPS, len(alive))[alive.index(handle)] + 1, at_most)
        given: list[int] = []
        while self.pending and len(handle.outstanding) + len(given) < target:
            given.append(self.pending.popleft())
        if given:
            handle.outstanding.update(given)
            done = {row: cols for g in given for row, cols in self.restored.pop(g, {}).items()}
            handle.send(Assign(given, done))
        if not self.pending and not any(h.outstanding for h in alive):
            self._all_written(alive)

    def _all_written(self, alive: list[WorkerHandle]) -> None:
        """Every group is written: a salvage round, or the workers end, or (held open for a person's
        retry) the run is idle."""
        if self._salvage(alive):
            return
        if not self.options.hold_open:
            for handle in alive:
                handle.send(Command("close", "closed"))
        elif not self._idle_reported:
            self._idle_reported = True
            self.bus.emit(Idle())

    def _salvage(self, alive: list[WorkerHandle]) -> bool:
        """A salvage round, if one is left and any cell spent its attempts on retryable errors: they run
        again on the workers that wrote them (see shared_stops.py). False: none started."""
        written_here = self.commands.writer  # a group written before a resume: its failures are not this run's
        cells = [c for c in salvageable(self.scheduler.failures) if self.tracker.group_of(c) in written_here]
        if not self._salvage_left or not cells or self.scheduler.stopping:
            return False
        self._salvage_left -= 1
        self.bus.emit(Salvage(cells=len(cells), rounds_left=self._salvage_left))
        self.commands.retry(cells)
        return any(h.outstanding for h in alive)

    def group_reopened(self) -> None:
        """A written group is in flight again (a retry of its cells)."""
        self.written -= 1
        self._idle_reported = False

    def live_status(self) -> RunStatus:
        status = super().live_status()
        if status == "idle" and (self.pending or any(h.outstanding for h in self.workers if h.alive)):
            return "running"  # a retried group: the parent's states change once it is written again
        return status

    def _fail(self, message: str) -> None:
        if self.scheduler.fatal is None:
            self.scheduler.fatal = FatalRunError(message)
            self.stop(message)
        if not any(h.alive for h in self.workers) and self._done is not None:
            self._done.set()

    # ---- commands (on the parent's loop) -----------------------------------------------------------

    def _broadcast(self, message: Command | SetLimit | SetBudgets) -> None:
        for handle in self.workers:
            handle.send(message)

    def set_limit(self, name: str, total: int) -> None:
        self.scheduler.set_limit(name, total)  # the parent's limit and its event; shares to the workers
        self.shared_limits.send_limit(name)

    def set_budgets(self, model: str, rpm: int | None, tpm: int | None) -> None:
        self.rates[model_limit(model)].set_budgets(rpm, tpm)
        self.shared_limits.send_budgets(model_limit(model))

    def pause(self, reason: str | None = None) -> None:
        if not self.scheduler.paused:
            self.scheduler.paused, self.scheduler.pause_reason = True, reason
            self.bus.emit(Paused(reason=reason))
            self._broadcast(Command("pause"))

    def resume(self) -> None:
        if self.scheduler.paused:
            self.scheduler.paused, self.scheduler.pause_reason = False, None
            self.early_stop.clear()
            self.bus.emit(Resumed())
            self._broadcast(Command("resume"))

    def stop(self, reason: str = "interrupted") -> None:
        if not self.scheduler.stopping:
            self.scheduler.stopping = True
            self.bus.emit(Stopping(reason=reason))
            self._broadcast(Command("stop", reason))

    def abort(self) -> None:
        self.stop()
        self._broadcast(Command("abort"))

    def summary_record(self) -> RunSummary:
        self.merged_counts.count_cache(self.cache)  # the workers' lookups, not the parent's (none)
        return self.merged_counts.with_requests(super().summary_record())
