"""What becomes of a failed attempt: a retry after its backoff, or the cell settled by its column's policy.

The scheduler hands every failed attempt to `FailureHandler.record`. A retryable error within the
cell's budget (and its deadline) waits out its backoff on a timer, holding no slot, then goes back on
the ready heap; any other failure settles the cell as its column's `on_failure` says (failed, its row
skipped, or a default value). Failures also feed early stop (too many recent attempts failed: the run
pauses) and salvage (once nothing else is left, one more round for cells that ran out of retries on
retryable errors). An attempt cut off by an abort is recorded as cancelled, its cell ready again.
Nothing here is on the path of a cell that succeeds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Protocol

import numpy as np

from treadle.engine.errors import CellError, FatalRunError
from treadle.engine.events import CellFailed, EventBus, Salvage
from treadle.engine.generators.base import Generator
from treadle.engine.journal import Journal
from treadle.engine.policy import (
    RATE_LIMIT_EXTRA_ATTEMPTS,
    CellFailure,
    FailurePolicies,
    error_message,
    is_rate_limit,
    is_retryable,
)
from treadle.engine.rate_limits import ModelRate
from treadle.engine.rows import RowStore
from treadle.engine.tracing import Tracer, TraceStatus
from treadle.engine.tracker import CellState, CellTracker


class Dispatch(Protocol):
    """What failure handling needs of the scheduler (treadle.engine.scheduler.Scheduler)."""

    tracker: CellTracker
    generators: list[Generator]
    store: RowStore
    journal: Journal
    tracer: Tracer
    bus: EventBus
    paused: bool
    stopping: bool
    fatal: FatalRunError | None

    def push(self, cells: list[int]) -> None:
        """Queue cells that became ready."""

    def pause(self, reason: str | None = None) -> None: ...

    def stop(self, reason: str = "interrupted") -> None: ...


class FailureHandler:
    """Retries, settled failures, early stop and salvage of one run's cells."""

    def __init__(
        self,
        dispatch: Dispatch,
        policies: FailurePolicies,
        rates: dict[str, ModelRate],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._dispatch = dispatch
        self._retry = policies.retry
        self._policies = list(policies.nodes)
        self._rates = [None if g.limit_key is None else rates[g.limit_key] for g in dispatch.generators]
        """Per node: the pace of its model, if its cells count against one."""
        self.error_window = policies.error_window
        self._redact = policies.redact
        self._clock = clock
        self._rng = rng
        self.attempts: dict[int, int] = {}
        """Per cell: the attempts that failed so far (a cell missing here has none)."""
        self.failures: dict[int, CellFailure] = {}
        """Per cell that failed for good: what happened (failures.jsonl, the TUI's failed list)."""
        self._first_started: dict[int, float] = {}
        self._retry_timers: dict[int, asyncio.TimerHandle] = {}
        self._salvageable: set[int] = set()
        self._salvage_left = policies.salvage_rounds

    def record(
        self,
        cell: int,
        error: BaseException,
        timing: tuple[int, float, float, float],
        traced: bool = True,
        rows: np.ndarray | None = None,
    ) -> None:
        """A failed attempt of `cell`; `timing` is (slot, t_ready, t_started, t_ended). `traced=False`: a
        cell of a batch call other than its first, which holds the call's trace record (with its `rows`)
        and early-stop count."""
        attempt = self.attempts.get(cell, 0) + 1
        self.attempts[cell] = attempt
        row, node = divmod(cell, self._dispatch.tracker.n_nodes)
        policy = self._policies[node]
        timed_out = isinstance(error, TimeoutError)
        message = f"timed out after {policy.timeout_s:g} s" if timed_out else self._redact(error_message(error))
        retry_after = error.retry_after if isinstance(error, CellError) else None
        delay = self._retry_delay(node, error, attempt, retry_after)
        if delay is not None and policy.deadline_s is not None:
            first_start = self._first_started.setdefault(cell, timing[2])
            if self._clock() + delay - first_start > policy.deadline_s:
                delay = None
                message = f"{message} (cell deadline of {policy.deadline_s:g} s reached)"
        status: TraceStatus = "timeout" if timed_out else "failed" if delay is None else "retry"
        honoured = None if delay is None else retry_after
        if traced:
            self._dispatch.tracer.record(
                row, node, attempt, *timing, status, error, message, retry_after=honoured, rows=rows
            )
        if traced and not is_rate_limit(error) and self.error_window.record_failure():
            self._early_stop(message)
        if delay is None:
            self._settle(cell, error, message, attempt)
        else:
            self._dispatch.tracker.wait_retry(cell)
            self._retry_timers[cell] = asyncio.get_running_loop().call_later(delay, self._requeue, cell)

    def cancelled(self, cell: int, timing: tuple[int, float, float, float]) -> None:
        """An attempt of `cell` cut off by an abort (or a dropped row); `timing` as for `record`. A cell
        still running goes back to ready: unfinished, never journaled, so a resume runs it again."""
        tracker = self._dispatch.tracker
        row, node = divmod(cell, tracker.n_nodes)
        self._dispatch.tracer.record(row, node, self.attempts.get(cell, 0) + 1, *timing, "cancelled")
        if tracker.state[cell] == CellState.RUNNING:
            tracker.cancel(cell)

    def _retry_delay(self, node: int, error: BaseException, attempt: int, retry_after: float | None) -> float | None:
        """Seconds until the next attempt of a cell of `node` that failed with `error`; None: no retry."""
        # A rate-limit answer says the endpoint works but is busy: waiting it out does not spend the budget.
        budget = self._policies[node].retries + (RATE_LIMIT_EXTRA_ATTEMPTS if is_rate_limit(error) else 0)
        if not is_retryable(error) or attempt > budget or self._dispatch.stopping:
            return None
        rate = self._rates[node]
        if is_rate_limit(error) and rate is not None and rate.adaptive:
            return retry_after or 0.0  # the model's pace and its hold decide when requests go again
        return self._retry.delay(attempt, retry_after, self._rng)

    def _settle(self, cell: int, error: BaseException, message: str, attempts: int) -> None:
        """The cell failed for good: settle it as its column's on_failure says."""
        dispatch = self._dispatch
        row, node = divmod(cell, dispatch.tracker.n_nodes)
        policy = self._policies[node]
        generator = dispatch.generators[node]
        failure = CellFailure(
            row=row,
            column=generator.name,
            error_class=type(error).__name__,
            message=message,
            attempts=attempts,
            action=policy.on_failure,
            retryable=is_retryable(error),
        )
        self.failures[cell] = failure
        if isinstance(error, FatalRunError):
            failure.action = "fail"
            dispatch.tracker.fail(cell)
        elif policy.on_failure == "default":
            dispatch.store.set_values(row, {column: policy.default for column in generator.outputs})
            ready = dispatch.tracker.complete(cell, CellState.DEGRADED)
            if ready:
                dispatch.push(ready)
        elif policy.on_failure == "skip_row":
            dispatch.tracker.drop_row(row)
            dispatch.journal.dropped(row)
        else:
            dispatch.tracker.fail(cell)
            if failure.retryable:
                self._salvageable.add(cell)
        dispatch.bus.emit(
            CellFailed(
                row=failure.row,
                column=failure.column,
                error_class=failure.error_class,
                message=failure.message,
                attempts=attempts,
                action=failure.action,
            )
        )
        if isinstance(error, FatalRunError) and dispatch.fatal is None:
            dispatch.fatal = FatalRunError(self._redact(str(error)))
            dispatch.stop(f"stopped early: {dispatch.fatal}")

    def _early_stop(self, last_error: str) -> None:
        dispatch = self._dispatch
        if dispatch.paused or dispatch.stopping:
            return
        window = self.error_window
        failed = f"{window.failed} of the last {window.size} attempts failed"
        dispatch.pause(f"stopped early: {failed} (last error: {last_error})")

    def _requeue(self, cell: int) -> None:
        self._retry_timers.pop(cell, None)
        if not self._dispatch.stopping and self._dispatch.tracker.ready_again(cell):
            self._dispatch.push([cell])

    def take_salvage(self) -> list[int]:
        """The cells of a salvage round, if one is left and any cell spent its attempts on retryable
        errors (a flaky patch); the caller retries them."""
        if not self._salvage_left or not self._salvageable:
            return []
        self._salvage_left -= 1
        cells = sorted(self._salvageable)
        self._salvageable.clear()
        self._dispatch.bus.emit(Salvage(cells=len(cells), rounds_left=self._salvage_left))
        return cells

    def retried(self, cell: int) -> None:
        """A failed cell goes back to work (a person's retry, or salvage): it starts with a clean slate."""
        self.failures.pop(cell, None)
        self.attempts.pop(cell, None)
        self._first_started.pop(cell, None)
        self._salvageable.discard(cell)

    def dropped(self, row: int) -> None:
        """The row was dropped: no failure of its cells is reported, and no retry of them starts."""
        if not (self.failures or self._retry_timers or self._salvageable):  # a filter drops rows by the million
            return
        n_nodes = self._dispatch.tracker.n_nodes
        for cell in range(row * n_nodes, (row + 1) * n_nodes):
            self.failures.pop(cell, None)
            self._salvageable.discard(cell)
            timer = self._retry_timers.pop(cell, None)
            if timer is not None:
                timer.cancel()

    def cancel_retries(self) -> None:
        """The run stops: no waiting retry starts."""
        for timer in self._retry_timers.values():
            timer.cancel()
        self._retry_timers.clear()
