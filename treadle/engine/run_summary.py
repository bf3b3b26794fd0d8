"""summary.json from a run's state: what its cells, limits, rates and cache came to (the record: summary_record.py)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from treadle.engine.analysis.cost import prices_of
from treadle.engine.analysis.summary import NO_TRACE, summary_metrics
from treadle.engine.limits import Limit
from treadle.engine.loop_health import LoopLag
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.rate_limits import ModelRate
from treadle.engine.response_cache import ResponseCache, cache_summary
from treadle.engine.scheduler import Scheduler
from treadle.engine.stats import LimitChanges
from treadle.engine.summary_record import (
    CellLatency,
    ColumnCells,
    JoinSummary,
    LimitPeak,
    LoopLagMs,
    OutputPaths,
    RateLimitSummary,
    RowOutcomes,
    RunSummary,
)
from treadle.engine.tracing import Tracer
from treadle.engine.tracker import CellState, CellTracker


class SummarizedRun(Protocol):
    """What a summary is read from (treadle.engine.run.Run)."""

    loaded: LoadedPipeline
    directory: RunDirectory
    node_names: list[str]
    tracker: CellTracker
    scheduler: Scheduler
    tracer: Tracer
    limits: dict[str, Limit]
    rates: dict[str, ModelRate]
    loop_lag: LoopLag
    cache: ResponseCache | None
    limit_changes: LimitChanges | None
    trace_final: bool
    message: str | None
    wall_s: float
    engine_cpu_s: float

    @property
    def status(self) -> str: ...


def run_summary(run: SummarizedRun) -> RunSummary:
    """The run's summary as its record; `metrics` once the trace is final (a note when tracing is off)."""
    tracker, scheduler, t0 = run.tracker, run.scheduler, run.tracer.t0
    totals = tracker.totals()
    columns: dict[str, ColumnCells] = {}
    busy_s = 0.0
    for i, name in enumerate(run.node_names):
        latencies = scheduler.latencies[i]
        busy_s += latencies.total()
        base = i * len(CellState)
        columns[name] = ColumnCells(
            cells={s.label: tracker.counts[base + s] for s in CellState},
            latency_s=CellLatency(**latencies.percentiles(), mean=latencies.mean()),
        )
    join = run.loaded.seed.join
    config = run.loaded.config
    summary = RunSummary(
        name=run.loaded.name,
        status=run.status,
        message=run.message,
        pipeline=str(run.loaded.path),
        pipeline_hash=run.loaded.source_hash,
        wall_s=round(run.wall_s, 3),
        engine_cpu_s=round(run.engine_cpu_s, 3),
        rows=RowOutcomes(**tracker.row_outcomes()),
        cells={s.label: totals[s] for s in CellState},
        columns=columns,
        parallel_efficiency=round(busy_s / run.wall_s, 3) if run.wall_s else 0.0,
        loop_lag_ms=LoopLagMs(**run.loop_lag.summary_ms()),
        limits={name: LimitPeak(total=lim.total, peak=lim.peak) for name, lim in run.limits.items()},
        first_row_s=None if scheduler.first_row_done_at is None else round(scheduler.first_row_done_at - t0, 3),
        rate_limits={
            name.removeprefix("model:"): RateLimitSummary(**rate_summary(rate, t0)) for name, rate in run.rates.items()
        },
        limit_history=(
            run.limit_changes.as_json()
            if run.limit_changes is not None
            else {name: [[0.0, lim.total]] for name, lim in run.limits.items()}
        ),
        join=None if join is None else JoinSummary(**dataclasses.asdict(join)),
        cache=cache_summary(run.cache, config.models),
        outputs=OutputPaths(
            output=str(run.directory.output_path),
            failures=str(run.directory.failures_path),
            summary=str(run.directory.summary_path),
        ),
    )
    if not config.run.trace:
        return summary.model_copy(update={"metrics": NO_TRACE})
    if run.trace_final:
        metrics = summary_metrics(run.directory.path, summary, prices_of(config.models))
        return summary.model_copy(update={"metrics": metrics})
    return summary


def rate_summary(rate: ModelRate, t0: float) -> dict:
    """summary.json's `rate_limits.<model>`: the pace at the end, answers that asked to wait, and every
    change of the adaptive value with its reason (times in seconds from the run's start)."""
    view = rate.view(rate.now())
    return {
        "adaptive": rate.adaptive,
        "source": view.source,
        "ceiling": view.ceiling,
        "concurrency": view.concurrency,
        "paced_rpm": view.paced_rpm,
        "tpm": view.tpm,
        "requests": rate.started_total,
        "rate_limited": rate.refused_total,
        "changes": [[round(c.t - t0, 3), c.concurrency, c.paced_rpm, c.reason] for c in rate.changes],
    }
