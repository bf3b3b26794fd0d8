"""The scheduler on a virtual clock: a retry waits its backoff and no less, a timeout fires at its
deadline, a cell's deadline ends its retries, early stop pauses the run at its threshold.

Each test runs a Scheduler built from its public parts, on a loop whose time is the scheduler's
injected clock (virtual_time.py), so the times asserted are exact and no test waits in real time.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from virtual_time import VirtualClock, run_virtual, until

from treadle.engine.capacity import Capacity
from treadle.engine.errors import CellError, RetryableCellError
from treadle.engine.events import EventBus
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.journal import Journal
from treadle.engine.limits import ROW_GROUPS, SLOTS, Limit
from treadle.engine.policy import ErrorWindow, FailurePolicies, NodePolicy, NoWindow, RetryPolicy
from treadle.engine.rows import RowStore
from treadle.engine.scheduler import Scheduler
from treadle.engine.tracing import TaskTrace, Tracer
from treadle.engine.tracker import CellState, CellTracker

SEED = 11


class Column(Generator):
    """An async column whose cells work `work_s` (virtual) seconds, then fail as `script` says: per
    row, the errors of its first attempts (the attempt after them succeeds)."""

    mode = RunMode.ASYNC

    def __init__(self, clock: VirtualClock, work_s: float = 1.0, script: dict[int, list[Exception]] | None = None):
        super().__init__("a", ("a",))
        self.clock = clock
        self.work_s = work_s
        self.script = script or {}
        self.starts: dict[int, list[float]] = defaultdict(list)
        """Per row: when each attempt started."""

    async def agenerate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        starts = self.starts[row["id"]]
        starts.append(self.clock())
        await asyncio.sleep(self.work_s)
        errors = self.script.get(row["id"], [])
        if len(starts) <= len(errors):
            raise errors[len(starts) - 1]
        return {"a": row["id"]}


async def _group_written(group: int) -> None:
    """Row groups are not written in these tests."""


def _never_written(error: OSError) -> None:
    raise AssertionError("the journal is never opened in these tests") from error


def scheduler_for(
    tmp_path: Path,
    column: Column,
    rows: int = 1,
    slots: int = 1,
    node: NodePolicy | None = None,
    backoff_s: float = 1.0,
    window: ErrorWindow | None = None,
) -> Scheduler:
    clock = column.clock
    return Scheduler(
        tracker=CellTracker(n_rows=rows, upstream=[[]], downstream=[[]], group_size=rows),
        generators=[column],
        critical_path=[1],
        store=RowStore(pd.DataFrame({"id": range(rows)}), rows),
        capacity=Capacity(
            limits={ROW_GROUPS: Limit(ROW_GROUPS, 1), SLOTS: Limit(SLOTS, slots)}, rates={}, python_threads=1
        ),
        policies=FailurePolicies(
            retry=RetryPolicy(backoff_s=backoff_s),
            nodes=[node or NodePolicy()],
            error_window=window or NoWindow(),
            salvage_rounds=0,
            redact=str,
            jitter_seed=SEED,
        ),
        bus=EventBus(clock=clock),
        tracer=Tracer(["a"], [None], t0=clock()),
        journal=Journal(tmp_path / "journal.jsonl", ["a"], on_error=_never_written),
        on_group_finished=_group_written,
        clock=clock,
    )


def run(scheduler: Scheduler, clock: VirtualClock) -> list[TaskTrace]:
    """Run to the end; every attempt's trace (times in seconds since the start)."""
    run_virtual(scheduler.run(), clock)
    return scheduler.tracer.since(0)


def backoffs(backoff_s: float, attempts: int) -> list[float]:
    """The jittered backoff before each of the first retries, as the run's seeded generator draws them."""
    policy, rng = RetryPolicy(backoff_s=backoff_s), random.Random(SEED)
    return [policy.delay(attempt, None, rng) for attempt in range(1, attempts + 1)]


def test_a_retry_waits_its_backoff_and_no_less(tmp_path):
    clock = VirtualClock()
    column = Column(clock, work_s=1.0, script={0: [RetryableCellError("flaky"), RetryableCellError("flaky")]})
    traces = run(scheduler_for(tmp_path, column, backoff_s=2.0), clock)
    first, second = backoffs(2.0, 2)
    assert [t.status for t in traces] == ["retry", "retry", "done"]
    assert traces[1].t_start - traces[0].t_end == pytest.approx(first, abs=1e-9)
    assert traces[2].t_start - traces[1].t_end == pytest.approx(second, abs=1e-9)
    assert traces[1].t_ready == pytest.approx(traces[1].t_start), "back on the ready heap when its backoff ended"
    assert 1.0 <= first < 3.0 and 2.0 <= second < 6.0, "2 s, doubling per attempt, jittered x0.5 to x1.5"


def test_a_retry_after_longer_than_the_backoff_is_waited_in_full(tmp_path):
    clock = VirtualClock()
    column = Column(clock, script={0: [RetryableCellError("busy", retry_after=30.0)]})
    traces = run(scheduler_for(tmp_path, column, backoff_s=1.0), clock)
    assert [(t.status, t.retry_after_s) for t in traces] == [("retry", 30.0), ("done", None)]
    assert traces[1].t_start - traces[0].t_end == pytest.approx(30.0, abs=1e-9)


def test_a_cell_waiting_for_its_retry_holds_no_slot(tmp_path):
    clock = VirtualClock()
    start = clock()
    column = Column(clock, work_s=1.0, script={0: [RetryableCellError("flaky")]})
    run(scheduler_for(tmp_path, column, rows=3, slots=1, backoff_s=10.0), clock)
    [backoff] = backoffs(10.0, 1)
    starts = {row: [round(t - start, 9) for t in times] for row, times in column.starts.items()}
    assert starts == {0: [0.0, pytest.approx(1.0 + backoff)], 1: [1.0], 2: [2.0]}


def test_a_timeout_fires_at_its_deadline(tmp_path):
    clock = VirtualClock()
    column = Column(clock, work_s=3600.0)
    scheduler = scheduler_for(tmp_path, column, node=NodePolicy(retries=1, timeout_s=2.0), backoff_s=1.0)
    traces = run(scheduler, clock)
    tick_s = 2.0 / 20  # the watchdog looks 20 times per shortest timeout
    assert [t.status for t in traces] == ["timeout", "timeout"]
    for trace in traces:
        assert 2.0 < trace.t_end - trace.t_start <= 2.0 + tick_s
    [backoff] = backoffs(1.0, 1)
    assert traces[1].t_start - traces[0].t_end == pytest.approx(backoff, abs=1e-9)
    [failure] = scheduler.failures.values()
    assert (failure.message, failure.attempts) == ("timed out after 2 s", 2)


def test_an_attempt_that_ends_just_before_its_timeout_is_not_cut(tmp_path):
    clock = VirtualClock()
    column = Column(clock, work_s=1.95)
    traces = run(scheduler_for(tmp_path, column, node=NodePolicy(retries=0, timeout_s=2.0)), clock)
    assert [(t.status, round(t.t_end - t.t_start, 9)) for t in traces] == [("done", 1.95)]


def test_no_retry_starts_past_the_cells_deadline(tmp_path):
    clock = VirtualClock()
    # Retry-After 2 s outweighs the tiny backoff: attempts at 0 s and 3 s; the third would start at 6 s.
    column = Column(clock, work_s=1.0, script={0: [RetryableCellError("busy", retry_after=2.0)] * 5})
    node = NodePolicy(retries=10, deadline_s=5.0)
    scheduler = scheduler_for(tmp_path, column, node=node, backoff_s=0.001)
    traces = run(scheduler, clock)
    assert [(t.status, round(t.t_start, 9)) for t in traces] == [("retry", 0.0), ("failed", 3.0)]
    [failure] = scheduler.failures.values()
    assert (failure.message, failure.attempts) == ("busy (cell deadline of 5 s reached)", 2)


def test_early_stop_pauses_the_run_when_the_window_reaches_its_threshold(tmp_path):
    clock = VirtualClock()
    start = clock()
    # One slot: rows run in order, one a second. Rows 1 and 3 fail: 2 of the first 4 attempts.
    column = Column(clock, work_s=1.0, script={1: [CellError("bad input")], 3: [CellError("bad input")]})
    scheduler = scheduler_for(
        tmp_path, column, rows=10, node=NodePolicy(retries=0), window=ErrorWindow(size=4, threshold=0.5)
    )

    async def main() -> tuple[float, int]:
        running = asyncio.create_task(scheduler.run())
        await until(lambda: scheduler.paused)
        paused_at = clock() - start
        await asyncio.sleep(600)  # sync-ok: virtual time; paused, nothing starts however long
        started = len(column.starts)
        scheduler.stop()
        await running
        return paused_at, started

    paused_at, started = run_virtual(main(), clock)
    assert scheduler.pause_reason == "stopped early: 2 of the last 4 attempts failed (last error: bad input)"
    assert 4.0 <= paused_at < 4.1
    assert started == 4
    assert scheduler.tracker.state[4] == CellState.READY


def test_failures_under_the_threshold_do_not_stop_the_run(tmp_path):
    clock = VirtualClock()
    column = Column(clock, work_s=1.0, script={1: [CellError("bad input")], 6: [CellError("bad input")]})
    scheduler = scheduler_for(
        tmp_path, column, rows=10, node=NodePolicy(retries=0), window=ErrorWindow(size=4, threshold=0.5)
    )
    traces = run(scheduler, clock)
    assert not scheduler.paused and scheduler.pause_reason is None
    assert len(traces) == 10
    assert sorted(f.row for f in scheduler.failures.values()) == [1, 6]


def test_rate_limited_attempts_do_not_count_towards_early_stop(tmp_path):
    clock = VirtualClock()
    busy = [RetryableCellError("slow down", status=429)]
    column = Column(clock, work_s=1.0, script={1: busy * 2, 2: busy, 3: busy})
    scheduler = scheduler_for(
        tmp_path, column, rows=6, node=NodePolicy(retries=0), window=ErrorWindow(size=4, threshold=0.5)
    )
    traces = run(scheduler, clock)
    assert not scheduler.paused
    assert [t.status for t in traces].count("retry") == 4
    assert scheduler.failures == {}
