"""summary.json's `metrics`: the compact part of a run's metrics, at its end from the whole trace
(`summary_metrics`) or while it goes from its most recent attempts (`live_metrics`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from treadle.engine.analysis.cost import Prices
from treadle.engine.analysis.limits import history_from, limit_history
from treadle.engine.analysis.metrics import measure_run
from treadle.engine.analysis.records import LiveWindow, MetricsNote, SummaryMetrics
from treadle.engine.summary_record import RunSummary
from treadle.engine.trace_reader import TraceColumns, trace_columns

NO_TRACE_NOTE = "no metrics: they are computed from the trace, and this run had run.trace: false"
NO_TRACE = MetricsNote(note=NO_TRACE_NOTE)
"""summary.json's `metrics` of a run with `run.trace: false`."""


def summary_metrics(
    run_dir: Path, summary: RunSummary | Mapping[str, Any], prices: Prices | None, trace: TraceColumns | None = None
) -> SummaryMetrics:
    """summary.json's `metrics`: the compact part of `measure_run` (no step series; throughput in at
    most DEFAULT_BUCKETS buckets). `prices`: the pipeline's, kept in `cost.prices` for `treadle report`.
    `trace`: the attempts, if given; else the run directory's trace, read in chunks."""
    return measure_run(run_dir, prices, summary=summary, trace=trace).summary_metrics(prices)


def live_metrics(
    run_dir: Path,
    summary: RunSummary | Mapping[str, Any],
    prices: Prices | None,
    records: list[dict[str, Any]],
    attempts: int,
    elapsed_s: float,
) -> SummaryMetrics:
    """`summary_metrics` while a run goes, from its most recent attempts (the trace ring buffer, as
    TaskTrace dicts): every attempt until the ring is full, then a window from the earliest `t_ready`
    of those it holds (`window`: `from_s`, `attempts` in it, of all `attempts` so far). `summary`: the
    run's, or its JSON (what `RunController.summary()` hands out)."""
    record = summary if isinstance(summary, RunSummary) else RunSummary.from_json(summary)
    start = min((r["t_ready"] for r in records), default=0.0) if attempts > len(records) else 0.0
    history = limit_history(record)
    if start > 0:
        records = [
            {**r, "t_ready": r["t_ready"] - start, "t_start": r["t_start"] - start, "t_end": r["t_end"] - start}
            for r in records
        ]
        history = {name: history_from(points, start) for name, points in history.items()}
    windowed = record.model_copy(
        update={
            "wall_s": max(elapsed_s - start, 0.0),
            "limit_history": {k: [list(p) for p in v] for k, v in history.items()},
        }
    )
    metrics = summary_metrics(run_dir, windowed, prices, trace_columns(records))
    window = LiveWindow(from_s=round(start, 3), attempts=len(records), of=attempts)
    return metrics.model_copy(update={"source": "trace ring buffer", "window": window})
