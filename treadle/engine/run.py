"""One run of a pipeline on the engine loop: builds its parts, runs the scheduler, writes the run dir."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from treadle.engine.capacity import Capacity
from treadle.engine.context import ContextServices
from treadle.engine.errors import FatalRunError, StorageError
from treadle.engine.events import EventBus, LimitAdapted, Progress, RunFinished, RunStarted
from treadle.engine.filters import filtered_lines
from treadle.engine.gc_tuning import GC_TUNING
from treadle.engine.generators import build_generators
from treadle.engine.generators.llm import LLMGenerator
from treadle.engine.graph import Node
from treadle.engine.journal import Journal
from treadle.engine.limits import PYTHON_THREADS_DEFAULT_MAX, ROW_GROUPS, SLOTS, Limit, model_limit
from treadle.engine.loop_health import LoopLag
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline import ColumnConfig, DefaultOnFailure, LLMColumn
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.policy import ErrorWindow, FailurePolicies, NodePolicy, NoWindow, RetryPolicy
from treadle.engine.rate_limits import Change, ModelRate
from treadle.engine.response_cache import CacheMode, attach_cache, emit_cache_problems, open_run_cache
from treadle.engine.resume import Recovery
from treadle.engine.rows import GroupValues, RowStore
from treadle.engine.run_summary import run_summary
from treadle.engine.scheduler import Scheduler
from treadle.engine.secrets import Redactor, read_api_key
from treadle.engine.stats import LimitChanges
from treadle.engine.summary_record import RunSummary
from treadle.engine.tracing import NullTracer, Tracer
from treadle.engine.tracker import CellState, CellTracker

RunStatus = Literal["starting", "running", "paused", "stopping", "idle", "done", "failed", "interrupted"]
"""idle: every cell finished, the run held open for retries (RunOptions.hold_open)."""
_FINAL = ("done", "failed", "interrupted")
PROGRESS_EVERY_S = 1.0
TRACE_FLUSH_EVERY_S = 0.25
"""Traces go to the run's trace file this often: a killed run loses at most this much of its trace."""


@dataclass(frozen=True)
class RunOptions:
    out: Path | None = None
    """Run directory; default runs/<name>-<timestamp>."""
    rows: int | None = None
    """Run only the first N seed rows."""
    max_parallel: int | None = None
    """Override of run.max_parallel (execution slots)."""
    grace_s: float = 30.0
    """After a stop, how long running cells may take before they are cancelled."""
    hold_open: bool = False
    """Keep the run open when every cell has finished, so failed cells can still be retried;
    `RunController.close()` ends it."""
    cache: CacheMode = "use"
    """The response cache: `use`, `off` (--no-cache) or `refresh` (--refresh-cache)."""
    workers: int | None = None
    """Override of run.workers (engine processes; 1 runs in this process)."""
    executor: Literal["local", "ray"] | None = None
    """Override of run.executor (where the workers run)."""
    ray_address: str | None = None
    """Override of run.ray_address."""


def node_policy(loaded: LoadedPipeline, column: ColumnConfig) -> NodePolicy:
    """A column's retries, timeout and fallback: its own settings, else its model's, else the run's."""
    run = loaded.config.run
    model = loaded.config.models.get(column.model) if isinstance(column, LLMColumn) else None
    retries = column.retries if column.retries is not None else getattr(model, "retries", None)
    timeout = column.timeout_s or (model.timeout_s if model is not None else None) or run.timeout_s
    retries = retries if retries is not None else run.retries
    deadline = column.deadline_s or run.cell_deadline_s
    on_failure = column.on_failure
    if isinstance(on_failure, DefaultOnFailure):
        return NodePolicy(retries, timeout, "default", on_failure.default, deadline)
    return NodePolicy(retries, timeout, on_failure, deadline_s=deadline)


def failure_policies(loaded: LoadedPipeline, nodes: list[Node]) -> FailurePolicies:
    """The run's retries and backoff, each node's policy, early stop, salvage, and the keys no error shows."""
    run, models = loaded.config.run, loaded.config.models
    return FailurePolicies(
        retry=RetryPolicy(backoff_s=run.backoff_s),
        nodes=[node_policy(loaded, node.config) for node in nodes],
        error_window=(
            ErrorWindow(run.early_stop.window, run.early_stop.error_rate) if run.early_stop is not None else NoWindow()
        ),
        salvage_rounds=run.salvage_rounds,
        redact=Redactor(read_api_key(m.api_key_env, loaded.base_dir) or "" for m in models.values()),
    )


class Run:
    calls_models = True
    """False where other processes make the model calls (a workers' parent): it never imports their client."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        options: RunOptions,
        bus: EventBus,
        directory: RunDirectory,
        recovery: Recovery | None = None,
    ) -> None:
        self.loaded = loaded
        self.options = options
        self.bus = bus
        self.directory = directory
        config = loaded.config
        self.frame = loaded.seed.frame if options.rows is None else loaded.seed.frame.head(options.rows)
        self.node_names = list(loaded.graph.order)
        nodes = [loaded.graph.nodes[name] for name in self.node_names]
        self.tracker = self._build_tracker(nodes)
        self.output_columns = [*loaded.seed.fields, *(c for node in nodes for c in node.outputs)]
        max_parallel = options.max_parallel or config.run.max_parallel
        self.limits, self.rates = self._build_limits(max_parallel)
        self.store = RowStore.for_columns(self.frame, config.run.row_group_size, config.columns)
        self.journal = Journal(directory.journal_path, self.node_names, on_error=self._storage_failed)
        finished_groups = set() if recovery is None else recovery.restore(self.tracker, self.store, self.node_names)
        self.generators = build_generators(loaded, import_clients=self.calls_models)
        self.cache = open_run_cache(config, loaded.base_dir, options.cache)
        attach_cache(self.generators, config, self.cache)
        tracer_class = Tracer if config.run.trace else NullTracer
        self.tracer = tracer_class(
            self.node_names,
            [g.limit_key.removeprefix("model:") if g.limit_key else None for g in self.generators],
            t0=time.perf_counter(),
        )
        self.scheduler = Scheduler(
            tracker=self.tracker,
            generators=self.generators,
            critical_path=[node.critical_path for node in nodes],
            store=self.store,
            capacity=Capacity(
                limits=self.limits,
                rates=self.rates,
                python_threads=config.run.python_threads or min(max_parallel, PYTHON_THREADS_DEFAULT_MAX),
            ),
            policies=failure_policies(loaded, nodes),
            bus=bus,
            on_group_finished=self._write_group,
            tracer=self.tracer,
            journal=self.journal,
            finished_groups=finished_groups,
            hold_open=options.hold_open,
        )
        if recovery is not None:  # failures.jsonl keeps the lines of rows that stay skipped
            self.scheduler.failures.update(recovery.failures_by_cell(self.node_names, self.tracker.n_rows))
        self.context_services = ContextServices(loaded, self.scheduler.cell_services)
        self.scheduler.context_services = self.context_services
        self.context_services.cache = self.cache if self.cache is not None and self.cache.usable else None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="treadle-writer")
        self._groups_queued = 0
        """Group writes handed to the writer thread and not yet done (both threads count: the lock)."""
        self._queued_lock = threading.Lock()
        # Trace batches have their own thread: behind row-group writes they would arrive late and in
        # large batches; at the end, the trace is folded into trace.parquet there while outputs are written.
        self._trace_writer = ThreadPoolExecutor(1, thread_name_prefix="treadle-trace")
        self.loop_lag = LoopLag()
        self.status: RunStatus = "starting"
        self.message: str | None = None
        self.wall_s, self.engine_cpu_s = 0.0, 0.0
        """engine_cpu_s: the CPU time of the engine loop's thread while the cells ran: near wall_s, the
        engine itself was what bounded the run (cheap cells), not the endpoint."""
        self.summary: dict[str, Any] = {}

    def _build_tracker(self, nodes: list[Node]) -> CellTracker:
        """Cell states over the rows to run, nodes numbered in topological order."""
        index = {name: i for i, name in enumerate(self.node_names)}
        return CellTracker(
            n_rows=len(self.frame),
            upstream=[[index[u] for u in node.upstream] for node in nodes],
            downstream=[[index[d] for d in node.downstream] for node in nodes],
            group_size=self.loaded.config.run.row_group_size,
        )

    def _build_limits(self, max_parallel: int) -> tuple[dict[str, Limit], dict[str, ModelRate]]:
        """The run's limits (row groups, execution slots, one per model) and each model's request rate."""
        config = self.loaded.config
        limits: dict[str, Limit] = {
            ROW_GROUPS: Limit(ROW_GROUPS, config.run.row_groups_in_flight),
            SLOTS: Limit(SLOTS, max_parallel),
        }
        rates: dict[str, ModelRate] = {}
        for name, model in config.models.items():  # every model: python columns may call any through ctx
            key = model_limit(name)
            limits[key] = Limit(key, model.max_parallel)
            rates[key] = ModelRate(
                limits[key],
                rpm=model.rpm,
                tpm=model.tpm,
                adaptive=model.adaptive,
                clock=time.perf_counter,
                on_change=functools.partial(self._rate_changed, key),
            )
        return limits, rates

    def _write_group_now(self, group: int, contents: GroupValues) -> None:
        try:
            self.directory.write_group(group, contents, self.output_columns, self.node_names)
        finally:
            with self._queued_lock:
                self._groups_queued -= 1
                last = not self._groups_queued
        # The group files hold what the journal said about them: make the journal durable with them,
        # once for groups written back to back (an fsync costs about as much as a group's file).
        if last:
            self.journal.sync()

    def _storage_reason(self, exc: OSError) -> str:
        """Why a write failed, naming the file in the run directory when the error says which."""
        if exc.strerror and exc.filename:
            return f"{os.path.relpath(exc.filename, self.directory.path)}: {exc.strerror}"
        return exc.strerror or str(exc)

    def _storage_failed(self, exc: OSError) -> None:
        """The run directory stopped taking writes: stop the run with one clear reason."""
        if self.scheduler.fatal is None:
            reason = self._storage_reason(exc)
            self.scheduler.fatal = FatalRunError(f"cannot write to the run directory {self.directory.path}: {reason}")
            self.scheduler.stop(str(self.scheduler.fatal))

    async def _write_group(self, group: int) -> None:
        contents = self.store.group_values(group, *self.tracker.group_states(group))
        loop = asyncio.get_running_loop()
        with self._queued_lock:
            self._groups_queued += 1
        try:
            await loop.run_in_executor(self._writer, self._write_group_now, group, contents)
        except OSError as exc:
            self._storage_failed(exc)
            return
        # A retry may have reopened the group while it was being written: then its rows are in use, and
        # if it finished again, the next write (counted, not started yet) still needs them.
        groups = self.scheduler.row_groups
        if groups.is_finished(group) and groups.writes_pending(group) == 1 and not self._has_failures(group):
            self.store.release_group(group)

    def _has_failures(self, group: int) -> bool:
        n = self.tracker.n_nodes
        rows = self.tracker.group_rows(group)
        states = self.tracker.state[rows.start * n : rows.stop * n]
        return CellState.FAILED in states or CellState.BLOCKED in states

    async def _report_progress(self, stop: asyncio.Event) -> None:
        """Until `stop`: a progress event every second, the traces so far to the trace file more often.

        Stopped by the event, not cancelled: a cancel could land while a batch of traces waits for the
        writer thread (behind a row-group write), and that batch would never be written."""
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while True:
            try:
                await asyncio.wait_for(stop.wait(), TRACE_FLUSH_EVERY_S)
                return
            except TimeoutError:
                pass
            if loop.time() - last_progress >= PROGRESS_EVERY_S:
                last_progress = loop.time()
                totals = self.tracker.totals()
                self.bus.emit(Progress(cells={s.label: totals[s] for s in CellState if totals[s]}))
            for latencies in self.scheduler.latencies:  # past Quantiles' exact values, fold them now and then
                latencies.fold()
            traces = self.tracer.take_unwritten()
            try:
                await loop.run_in_executor(self._trace_writer, self.tracer.write, self.directory.trace_path, traces)
            except OSError as exc:
                self._storage_failed(exc)
                return

    def cells_running(self) -> bool:
        """Some cell holds a slot (a parent's: some worker's cell, as its last tick said)."""
        return self.limits[SLOTS].in_use > 0

    def _rate_changed(self, key: str, change: Change) -> None:
        self.bus.emit(
            LimitAdapted(
                limit=key,
                concurrency=change.concurrency,
                paced_rpm=change.paced_rpm,
                reason=change.reason,
            )
        )

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        started, cpu_started = loop.time(), time.thread_time()
        self.status = "running"
        self.bus.restart_clock()
        self.tracer.t0 = time.perf_counter()
        self.bus.emit(
            RunStarted(
                name=self.loaded.name,
                rows=len(self.frame),
                columns=tuple(self.node_names),
                run_dir=str(self.directory.path),
            )
        )
        emit_cache_problems(self.cache, self.bus, loop)
        self.journal.open(loop)
        self.context_services.attach(loop)
        for generator in self.generators:
            await generator.astart()
        self.context_services.observe(self.rates)
        for generator in self.generators:
            if isinstance(generator, LLMGenerator):
                generator.client.observe(self.rates[generator.limit_key])
        stop_progress = asyncio.Event()
        progress = loop.create_task(self._report_progress(stop_progress))
        lag = loop.create_task(self.loop_lag.watch(self.cells_running))
        try:
            with GC_TUNING.held():  # everything loaded so far lives for the whole run: frozen
                await self.scheduler.run()
        finally:
            stop_progress.set()
            await progress
            lag.cancel()
            for generator in self.generators:
                await generator.aclose()
            await self.context_services.aclose()
        await self._end(loop.time() - started, time.thread_time() - cpu_started)
        self.bus.emit(RunFinished(status=self.status, wall_s=round(self.wall_s, 3), message=self.message))

    async def _end(self, wall_s: float, engine_cpu_s: float) -> None:
        """The run's times and final status; its outputs written (a full disk: StorageError, the journal
        kept), then the writers closed."""
        self.wall_s, self.engine_cpu_s, self.status = wall_s, engine_cpu_s, self._final_status()
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._write_outputs)
        except OSError as exc:
            raise StorageError(
                f"cannot write the run directory {self.directory.path}: {self._storage_reason(exc)} "
                "(what was journaled is kept; free space and run treadle resume)"
            ) from None
        finally:
            self._writer.shutdown()
            self._trace_writer.shutdown()

    def live_status(self) -> RunStatus:
        if self.status in _FINAL or self.status == "starting":
            return self.status
        if self.scheduler.stopping:
            return "stopping"
        if self.scheduler.paused:
            return "paused"
        return "idle" if self.tracker.unfinished == 0 else "running"

    def _final_status(self) -> RunStatus:
        if self.scheduler.fatal is not None:
            self.message = str(self.scheduler.fatal)
            return "failed"
        if self.tracker.unfinished and self.scheduler.pause_reason:
            self.message = self.scheduler.pause_reason
            return "failed"
        if self.tracker.unfinished:
            return "interrupted"
        totals = self.tracker.totals()
        return "failed" if totals[CellState.FAILED] or totals[CellState.BLOCKED] else "done"

    def stop(self, reason: str = "interrupted") -> None:
        self.scheduler.stop(reason)

    # ---- the run directory -------------------------------------------------------------------------

    def _write_outputs(self) -> None:
        scheduler = self.scheduler
        self.journal.close()
        if self.cache is not None:
            self.cache.close()
        # The trace is folded into trace.parquet on its own thread while the files below are written.
        # A trace that cannot be written must not cost the outputs: its error is raised after them.
        trace_written = self._trace_writer.submit(self.tracer.finish, self.directory.trace_path)
        # Groups cut short by a stop still hold finished cells: write them so no finished work is lost.
        for group in scheduler.row_groups.in_flight():
            contents = self.store.group_values(group, *self.tracker.group_states(group))
            self.directory.write_group(group, contents, self.output_columns, self.node_names)
        dropped = self.tracker.dropped_rows()
        index = self.directory.assemble_output(range(self.tracker.n_groups), dropped)
        failures = sorted(scheduler.failures.values(), key=lambda f: (f.row, f.column))
        self.directory.write_failures((f.record() for f in failures), filtered_lines(self.tracker, self.node_names))
        trace_error: OSError | None = None
        try:
            trace_written.result()
            self.trace_final = True  # summary.json's metrics come from it, read in chunks
        except OSError as exc:
            trace_error = exc
        self.summary = self.build_summary()
        self.directory.write_summary(self.summary)
        # Every cell settled and every group written: output.parquet holds the values, so groups/ and
        # the journal would only hold them twice. (After a write error a group may exist only in the journal.)
        if self.tracker.unfinished == 0 and scheduler.fatal is None:
            self.directory.compact(index, dropped, self.node_names, self.loaded.config.run.row_group_size)
        if trace_error is not None:
            raise trace_error

    limit_changes: LimitChanges | None = None
    """Every limit's totals over the run: RunController records each change it makes."""
    trace_final = False
    """Whether the run has written its trace for good: then the final summary's metrics are read from it."""

    def build_summary(self) -> dict[str, Any]:
        """summary.json; with `metrics` once the trace is final (or a note when tracing is off)."""
        return self.summary_record().to_json()

    def summary_record(self) -> RunSummary:
        """The run's summary as its record; `metrics` once the trace is final (a note when tracing is off)."""
        return run_summary(self)
