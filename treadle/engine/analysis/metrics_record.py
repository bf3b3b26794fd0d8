"""`RunMetrics`: what `measure_run` computes from a run directory, with the summary.json it read (typed as
`RunSummary`), and the compact part of it that summary.json keeps (`summary_metrics`).

It sits apart from records.py because RunSummary (engine/summary_record.py) holds records.py's
SummaryMetrics: records <- RunSummary <- RunMetrics, no cycle."""

from __future__ import annotations

from collections.abc import Mapping

from treadle.engine.analysis.records import (
    AttemptCounts,
    ColumnMetrics,
    Concurrency,
    ConcurrencySummary,
    CostSummary,
    CostTotal,
    Errors,
    LimitMetrics,
    ModelMetrics,
    ModelSummary,
    Record,
    Series,
    SummaryMetrics,
    Throughput,
    ThroughputSummary,
    TimeSplit,
    TokenTotals,
    TraceInfo,
)
from treadle.engine.summary_record import RowOutcomes, RunSummary


class RunMetrics(Record):
    """Metrics of a run directory (`run_metrics`): docs/TRACING.md, "Metrics"."""

    run_dir: str
    name: str | None
    status: str | None
    """summary.json's; "unknown" while it has none."""
    has_trace: bool
    trace: TraceInfo
    wall_s: float
    rows: RowOutcomes | None
    cells: dict[str, int] | None
    summary: RunSummary | None
    """summary.json, as read (None while the run has not written it)."""
    attempts: AttemptCounts
    calls: AttemptCounts
    """ctx calls (`<column>:llm`)."""
    time: TimeSplit
    concurrency: Concurrency
    in_flight: Series
    queued: Series
    limits: dict[str, LimitMetrics]
    throughput: Throughput
    columns: dict[str, ColumnMetrics]
    models: dict[str, ModelMetrics]
    errors: Errors
    tokens: TokenTotals
    cost: CostTotal | None
    """None without prices."""

    def summary_metrics(self, prices: Mapping[str, Mapping[str, float]] | None) -> SummaryMetrics:
        """The compact part summary.json keeps; `prices` (the pipeline's) are kept with the cost."""
        cost = self.cost
        return SummaryMetrics(
            source="trace.jsonl",
            attempts=self.attempts,
            calls=self.calls,
            time=self.time,
            concurrency=ConcurrencySummary.model_validate(self.concurrency.model_dump()),
            throughput=ThroughputSummary.model_validate(self.throughput.model_dump()),
            columns={name: column.summary() for name, column in self.columns.items()},
            models={name: ModelSummary.model_validate(model.model_dump()) for name, model in self.models.items()},
            errors=self.errors,
            tokens=self.tokens,
            cost=None
            if cost is None
            else CostSummary(
                total=cost.total,
                unpriced_models=cost.unpriced_models,
                prices={model: dict(price) for model, price in (prices or {}).items()},
            ),
        )
