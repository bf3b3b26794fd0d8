"""A worker process: a real engine (`Run`, the same Scheduler) over the row groups its parent gives it.

It journals finished cells to its own journal in the run directory and writes each finished group's
file there, as one process does; the parent hears of each written group (its cell states and
failures), and four times a second of the rest (trace batches, counts, limits in use, events), or at
once after a rate-limit answer. Commands come in on a thread of their own. When the parent goes away
(killed), the worker stops at once, writes the groups it holds and exits: `treadle resume` finds every
cell it finished.
"""

from __future__ import annotations

import asyncio
import pickle
import queue
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from treadle.engine.column_edits import Versions, apply_edits
from treadle.engine.errors import FatalRunError
from treadle.engine.events import CellFailed, CellRetried, EventBus, RowDropped, Salvage
from treadle.engine.gc_tuning import GC_TUNING
from treadle.engine.generators.llm import LLMGenerator
from treadle.engine.limits import ROW_GROUPS, Limit
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.policy import CellFailure
from treadle.engine.rate_limits import ModelRate
from treadle.engine.resume import Recovery
from treadle.engine.row_groups import RowGroups
from treadle.engine.rows import GroupValues
from treadle.engine.run import TRACE_FLUSH_EVERY_S, Run, RunOptions
from treadle.engine.snapshots import read_cell
from treadle.engine.tracker import N_STATES, CellState, CellTracker
from treadle.engine.workers.messages import (
    Adopt,
    Assign,
    CellRead,
    Drop,
    EditColumn,
    Finished,
    GroupWritten,
    ParentMessage,
    RateShare,
    RateSignals,
    ReadCell,
    Recompute,
    ReloadFunction,
    Retried,
    Retry,
    SetBudgets,
    SetLimit,
    ShareRates,
    Tick,
    WorkerMessage,
)
from treadle.engine.workers.shared_rates import FollowerRate
from treadle.engine.workers.shared_stops import WorkerAttempts
from treadle.engine.workers.worker_edits import WorkerEdits

_PASSED_ON = (CellFailed, CellRetried, RowDropped, Salvage)
"""Events the parent passes on to its own subscribers; it makes the others (started, paused, limit
adapted, ...) itself."""
EARLY_TICK_GAP_S = 0.05
"""A tick sent early for a rate limit comes at least this long after the one before."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process starts from."""

    index: int
    pipeline: bytes
    """The parent's LoadedPipeline, pickled: unpickled once `base_dir` is importable (python columns)."""
    base_dir: str
    options: RunOptions
    recovery: Recovery | None
    limits: dict[str, int]
    """This worker's share of each limit (slots, row_groups, model:<name>)."""
    budgets: dict[str, tuple[int | None, int | None]]
    """This worker's share of each model limit's rpm and tpm."""
    ship_groups: bool = False
    """Send each group's file to the parent in its GroupWritten (the run directory is on another disk)."""
    rate_shares: dict[str, RateShare] = field(default_factory=dict)
    """This worker's first share of each model limit's adaptive value and pace (the slow start's)."""
    versions: list[dict[str, Any]] = field(default_factory=list)
    """The pipeline's versions so far (run.json's): a changed column's values carry its version."""
    versions_in_pipeline: int = 0
    """How many of `versions` `pipeline` has already (a resumed run's); the worker applies the edits after."""


def group_counts(tracker: CellTracker, groups: list[int]) -> np.ndarray:
    """Cell counts of `groups` by node and state, flat as `CellTracker.counts`."""
    n = tracker.n_nodes
    counts = np.zeros((n, N_STATES), dtype=np.int64)
    for group in groups:
        rows = tracker.group_rows(group)
        cells = np.frombuffer(tracker.state, np.uint8, len(rows) * n, rows.start * n)
        for node in range(n):
            counts[node] += np.bincount(cells[node::n], minlength=N_STATES)
    return counts.ravel()


class AssignedRowGroups(RowGroups):
    """Row groups that count as someone else's (finished) until the parent assigns them; then admitted
    in the order given, under this worker's share of the limit on groups in flight."""

    def __init__(self, n_groups: int, limit: Limit) -> None:
        super().__init__(n_groups, limit, finished=range(n_groups))
        self._assigned: deque[int] = deque()

    def assign(self, groups: Iterable[int]) -> None:
        self._assigned.extend(groups)

    def admit_next(self) -> int | None:
        if self.limit.in_use < self.limit.total and self._assigned:
            group = self._assigned.popleft()
            self.reopen(group)  # in flight now, holding a place under the limit
            return group
        return None


class WorkerRun(Run):
    """A Run whose group writes are told to the parent (`send`)."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        options: RunOptions,
        directory: RunDirectory,
        recovery: Recovery | None,
        send: Callable[[WorkerMessage], None],
        ship_groups: bool = False,
        versions: Versions | None = None,
    ) -> None:
        super().__init__(loaded, options, EventBus(), directory, recovery)
        self.send = send
        self.ship_groups = ship_groups
        self.groups = AssignedRowGroups(self.tracker.n_groups, self.limits[ROW_GROUPS])
        self.scheduler.row_groups = self.groups
        self._written: set[int] = set()
        """Groups whose file the writer thread wrote (and the loop has not reported yet)."""
        self.attempts = WorkerAttempts(self.scheduler.error_window)  # the scheduler's early-stop count
        self.edits = WorkerEdits(self, versions or Versions())

    def _build_limits(self, max_parallel: int) -> tuple[dict[str, Limit], dict[str, ModelRate]]:
        """Each model's rate follows the parent's shares (it adapts them from every worker's answers)."""
        limits, rates = super()._build_limits(max_parallel)
        return limits, {key: FollowerRate(rate) for key, rate in rates.items()}

    def follow(self, message: ShareRates) -> None:
        """The parent's shares of the models' adaptive values and paces: waiting requests look again."""
        for key, share in message.shares.items():
            rate = self.rates[key]
            assert isinstance(rate, FollowerRate)
            rate.follow(share)
        self.scheduler.pace_changed()

    def rate_signals(self) -> dict[str, RateSignals]:
        """What each model's requests met since the last tick, for the parent to adapt its limits."""
        return {key: rate.take_signals() for key, rate in self.rates.items() if isinstance(rate, FollowerRate)}

    def _write_group_now(self, group: int, contents: GroupValues) -> None:
        super()._write_group_now(group, contents)  # raises if the write failed: then not reported
        self._written.add(group)

    async def _write_group(self, group: int) -> None:
        await super()._write_group(group)
        if group in self._written:
            self._written.discard(group)
            self.send(self.group_written(group))

    def group_written(self, group: int, partial: bool = False) -> GroupWritten:
        tracker = self.tracker
        rows = tracker.group_rows(group)
        n = tracker.n_nodes
        failures = self.scheduler.failures
        return GroupWritten(
            group=group,
            states=bytes(tracker.state[rows.start * n : rows.stop * n]),
            filtered=filtered_in(tracker, rows),
            failures=[(cell, failures[cell]) for cell in range(rows.start * n, rows.stop * n) if cell in failures],
            partial=partial,
            table=self.directory.group_path(group).read_bytes() if self.ship_groups else None,
        )

    def assign(self, message: Assign) -> None:
        """Take groups; cells another worker finished in them are restored first (never run again), and
        rows it dropped stay dropped."""
        index = {name: i for i, name in enumerate(self.node_names)}
        n = self.tracker.n_nodes
        for row, columns in message.done.items():
            for name, values in columns.items():
                self.tracker.restore_done(row * n + index[name])
                self.store.restored.setdefault(row, {}).update(values)
        for row, filtered_by in message.dropped.items():
            if filtered_by is not None:
                self.tracker.filter_row(row, index[filtered_by])
            else:
                self.tracker.drop_row(row)
        self.groups.assign(message.groups)
        self.scheduler.admit_groups()  # the scheduler admits on its own only when a group's place frees up

    def write_held(self) -> None:
        """At the end (a thread): groups a stop cut short still hold finished cells: their files, then
        the journal and the cache closed."""
        self._writer.shutdown()
        self._trace_writer.shutdown()
        for group in self.groups.in_flight():
            contents = self.store.group_values(group, *self.tracker.group_states(group))
            self.directory.write_group(group, contents, self.output_columns, self.node_names)
            self.send(self.group_written(group, partial=True))
        self.journal.close()
        if self.cache is not None:
            self.cache.close()

    def retry_cells(self, message: Retry) -> list[int]:
        """The cells a retry names, with the failed ones of the groups held (of its columns) if it asks for them."""
        if not message.held_failed:
            return message.cells
        held = set(self.groups.in_flight())
        tracker = self.tracker
        nodes, n = set(message.nodes), tracker.n_nodes
        failed = [c for c in tracker.cells_in(CellState.FAILED) if tracker.group_of(c) in held]
        return message.cells + [c for c in failed if not nodes or c % n in nodes]

    def held_states(self, groups: list[int]) -> bytes:
        tracker, n = self.tracker, self.tracker.n_nodes
        state = tracker.state
        return b"".join(bytes(state[r.start * n : r.stop * n]) for r in map(tracker.group_rows, groups))

    def held_failures(self, groups: list[int]) -> list[tuple[int, CellFailure]]:
        held, group_of = set(groups), self.tracker.group_of
        return [(cell, failure) for cell, failure in self.scheduler.failures.items() if group_of(cell) in held]

    def held_counts(self) -> tuple[list[int], list[int]]:
        """The groups this worker holds, and their cells' counts by node and state."""
        held = self.groups.in_flight()
        return held, group_counts(self.tracker, held).tolist()


def filtered_in(tracker: CellTracker, rows: range) -> list[tuple[int, int]]:
    """The rows of `rows` a filter turned away, each with the filter's node."""
    if tracker.filtered_by is None:
        return []
    taken = tracker.filtered_by[rows.start : rows.stop]
    return [(rows.start + offset, int(taken[offset])) for offset in np.flatnonzero(taken >= 0).tolist()]


class WorkerLoop:
    """The worker's engine loop: the run, its commands, and its ticks to the parent."""

    def __init__(self, run: WorkerRun, receive: Callable[[], ParentMessage | None]) -> None:
        self.run = run
        self.receive = receive
        """The parent's next command, waiting for it; None once the parent is gone."""
        self.events = run.bus.subscribe()
        self._tracing = run.loaded.config.run.trace
        self._latencies = [array("d") for _ in run.node_names]
        if not self._tracing:
            # Without a trace the scheduler appends each run time here; each tick sends and clears them
            # (the parent keeps the run's latencies). The same list: whatever holds it sees the arrays.
            latencies: list[Any] = run.scheduler.latencies
            latencies[:] = self._latencies
        self._ticked_at = 0.0
        self._early_tick_due = False
        for rate in run.rates.values():
            if isinstance(rate, FollowerRate):
                rate.on_refused = self._rate_limited

    def handle(self, message: ParentMessage | None) -> None:
        """A command from the parent (on the loop); None: the parent is gone."""
        scheduler = self.run.scheduler
        if message is None:
            scheduler.stop("the parent process ended")
            scheduler.abort()
        elif isinstance(message, Assign):
            self.run.assign(message)
        elif isinstance(message, SetLimit):
            scheduler.set_limit(message.name, message.total)
        elif isinstance(message, SetBudgets):
            self.run.rates[f"model:{message.model}"].set_budgets(message.rpm, message.tpm)
            scheduler.pace_changed()
        elif isinstance(message, Retry):
            self.run.send(Retried(message.request, scheduler.retry(self.run.retry_cells(message))))
        elif isinstance(message, Drop):
            scheduler.drop(message.rows)
        elif isinstance(message, ReadCell):
            reading = read_cell(self.run, message.row, message.node)._replace(attempts=[])
            self.run.send(CellRead(message.request, reading))
        elif isinstance(message, ShareRates):
            self.run.follow(message)
        elif isinstance(message, EditColumn | ReloadFunction | Recompute | Adopt):
            if (answer := self.run.edits.handle(message)) is not None:
                self.run.send(answer)
        elif message.name == "pause":
            scheduler.pause()
        elif message.name == "resume":
            scheduler.resume()
        elif message.name in ("stop", "close"):
            scheduler.stop(message.reason)
        elif message.name == "abort":
            scheduler.stop(message.reason)
            scheduler.abort()

    def handle_or_end(self, message: ParentMessage | None) -> None:
        """`handle`; an error in it ends this worker's run as a fatal error: it starts nothing new, writes
        the groups it holds once its running cells end, and its Finished tells the parent why (which
        ends the run)."""
        try:
            self.handle(message)
        except Exception as exc:
            scheduler = self.run.scheduler
            what = "the parent's end" if message is None else type(message).__name__
            if scheduler.fatal is None:
                error = f"{type(exc).__name__}: {exc}"
                scheduler.fatal = FatalRunError(f"internal error handling {what} in a worker: {error}")
            scheduler.stop(str(scheduler.fatal))

    def _read_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        """On a thread: each command to the loop, in order; None when the parent is gone."""
        while True:
            message = self.receive()
            try:
                loop.call_soon_threadsafe(self.handle_or_end, message)
            except RuntimeError:  # the loop has closed: the run is over
                return
            if message is None:
                return

    def _rate_limited(self) -> None:
        """A rate-limit answer: the parent hears of it in a tick now (it adapts the pace and tells the other
        workers), at most one tick every EARLY_TICK_GAP_S."""
        if not self._early_tick_due and time.perf_counter() - self._ticked_at >= EARLY_TICK_GAP_S:
            self._early_tick_due = True
            asyncio.get_running_loop().call_soon(self._early_tick)

    def _early_tick(self) -> None:
        self._early_tick_due = False
        self.run.send(self.tick())

    def tick(self) -> Tick:
        self._ticked_at = time.perf_counter()
        run = self.run
        latencies = None
        if not self._tracing:
            latencies = [bytes(ran) for ran in self._latencies]
            for ran in self._latencies:
                del ran[:]
        events: list[Any] = []
        while not self.events.empty():
            payload = self.events.get_nowait().payload
            if isinstance(payload, _PASSED_ON):
                events.append(payload)
        groups, counts = run.held_counts()
        stats = run.cache.stats if run.cache is not None else None
        peaks = {name: limit.peak for name, limit in run.limits.items()}
        for limit in run.limits.values():
            limit.peak = limit.in_use  # each tick tells the peak of its own stretch (the parent sums them)
        return Tick(
            traces=run.tracer.take_unwritten() if self._tracing else None,
            latencies=latencies,
            groups=groups,
            counts=counts,
            in_use={name: limit.in_use for name, limit in run.limits.items()},
            peaks=peaks,
            events=events,
            first_row_done_at=run.scheduler.first_row_done_at,
            cache=(0, 0, 0) if stats is None else (stats.hits, stats.misses, stats.stored),
            calls=sum(rate.started_total for rate in run.rates.values()),
            states=run.held_states(groups),
            failures=run.held_failures(groups),
            clock=time.perf_counter(),
            signals=run.rate_signals(),
            requests={name: (rate.started_total, rate.refused_total) for name, rate in run.rates.items()},
            attempts=run.attempts.since_last(),
        )

    async def _ticks(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), TRACE_FLUSH_EVERY_S)
                return
            except TimeoutError:
                self.run.send(self.tick())

    async def execute(self) -> None:
        run = self.run
        loop = asyncio.get_running_loop()
        cpu_started = time.thread_time()
        run.status = "running"
        run.journal.open(loop)
        run.context_services.attach(loop)
        for generator in run.generators:
            await generator.astart()
        run.context_services.observe(run.rates)
        for generator in run.generators:
            if isinstance(generator, LLMGenerator):
                generator.client.observe(run.rates[generator.limit_key])
        threading.Thread(target=self._read_commands, args=(loop,), name="treadle-commands", daemon=True).start()
        stop_ticks = asyncio.Event()
        ticks = loop.create_task(self._ticks(stop_ticks))
        try:
            with GC_TUNING.held():
                await run.scheduler.run()
        finally:
            stop_ticks.set()
            await ticks
            for generator in run.generators:
                await generator.aclose()
            await run.context_services.aclose()
        await asyncio.to_thread(run.write_held)
        run.send(self.tick())
        fatal = run.scheduler.fatal
        requests = {name: (rate.started_total, rate.refused_total) for name, rate in run.rates.items()}
        run.send(Finished(time.thread_time() - cpu_started, None if fatal is None else str(fatal), requests))


def _send_from_queue(conn: Connection, outbox: queue.SimpleQueue[WorkerMessage | None]) -> None:
    """On a thread: messages to the parent in order, so the engine loop never waits on the pipe."""
    while (message := outbox.get()) is not None:
        try:
            conn.send(message)
        except (OSError, ValueError):  # the parent is gone; the command thread hears it too
            return


def open_run(spec: WorkerSpec, run_dir: Path, send: Callable[[WorkerMessage], None]) -> WorkerRun:
    """The worker's run from its spec, journaling (and writing group files) in `run_dir`."""
    if spec.base_dir not in sys.path:
        sys.path.insert(0, spec.base_dir)  # python columns' modules, as the parent found them
    loaded: LoadedPipeline = apply_edits(pickle.loads(spec.pipeline), spec.versions[spec.versions_in_pipeline :])
    loaded.config.run.salvage_rounds = 0  # the parent salvages, once every worker's groups are written
    directory = RunDirectory(run_dir)
    directory.create()  # there already, unless the worker's disk is its own (Ray)
    directory.journal_path = directory.worker_journal_path(spec.index)
    versions = Versions(list(spec.versions))
    run = WorkerRun(loaded, spec.options, directory, spec.recovery, send, spec.ship_groups, versions)
    for name, total in spec.limits.items():
        run.scheduler.set_limit(name, total)
    for key, (rpm, tpm) in spec.budgets.items():
        run.rates[key].set_budgets(rpm, tpm)
    run.follow(ShareRates(spec.rate_shares))
    return run


def _receiver(conn: Connection) -> Callable[[], ParentMessage | None]:
    def receive() -> ParentMessage | None:
        try:
            message: ParentMessage = conn.recv()
        except (EOFError, OSError):
            return None
        return message

    return receive


def main(conn: Connection) -> None:
    """The worker process: its spec first, then its run until the parent closes it (or goes away)."""
    spec: WorkerSpec = conn.recv()
    assert spec.options.out is not None
    outbox: queue.SimpleQueue[WorkerMessage | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_from_queue, args=(conn, outbox), name="treadle-send", daemon=True)
    sender.start()
    run = open_run(spec, spec.options.out, outbox.put)
    try:
        asyncio.run(WorkerLoop(run, _receiver(conn)).execute())
    finally:
        outbox.put(None)
        sender.join()
        conn.close()
