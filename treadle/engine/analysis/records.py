"""The metric records of a run, typed: what `run_metrics` computes (`RunMetrics`) and the compact part
summary.json keeps (`SummaryMetrics`, or a `MetricsNote` for a run without a trace).

Every reader (the report, the TUI's summary, `--serve`) takes these types; JSON exists only at the
boundary: `to_json()` gives exactly the dicts docs/TRACING.md describes (keys in that order), and
`from_json()` reads them back. Times are seconds; `cost` is in the currency of the prices given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

STATUSES = ("done", "retry", "failed", "timeout", "cancelled")
"""An attempt's status in the trace; counts by status use these keys, in this order."""

Point = tuple[float, int]
"""(t, value) of a step series: the value holds from t until the next point."""


class Record(BaseModel):
    """A frozen metric record; `to_json()` leaves out the fields in `_omitted_when_none` that are None."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)
    _omitted_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self._omitted_when_none:
            if getattr(self, name) is None:
                data.pop(name, None)
        return data

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (plain dicts, lists, numbers), keys as docs/TRACING.md names them."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls.model_validate(data)


# ---- parts shared by the full and the summary form -----------------------------------------------


class AttemptCounts(Record):
    """Attempts (of cells, or of ctx calls) by status."""

    total: int
    done: int
    retry: int
    failed: int
    timeout: int
    cancelled: int


class TimeSplit(Record):
    run_s: float
    """Slot-seconds of all cell attempts."""
    useful_run_s: float
    """Slot-seconds of the done ones."""
    queue_wait_s: float
    """Ready but not started, summed over attempts."""
    queue_share: float
    """queue_wait_s / (queue_wait_s + run_s)."""


class QueueWait(Record):
    total: float
    p50: float
    p95: float
    mean: float


class ErrorCounts(Record):
    """Attempts of one error class that did not succeed, by status."""

    retry: int
    failed: int
    timeout: int
    cancelled: int


class RetryAfterWaits(Record):
    waits: int
    """Retries after which the endpoint's Retry-After was honoured."""
    total_s: float


class Errors(Record):
    by_class: dict[str, ErrorCounts]
    """Per error class (or status, for attempts without one), most frequent first."""
    retry_after: RetryAfterWaits
    retries: int
    timeouts: int
    failed_attempts: int


class TokenTotals(Record):
    """Every model call's tokens, counted once."""

    # Built by field name; "in" and "out" in JSON.
    tokens_in: int = Field(validation_alias="in", serialization_alias="in")
    tokens_out: int = Field(validation_alias="out", serialization_alias="out")


# ---- run_metrics ----------------------------------------------------------------------------------


class TraceInfo(Record):
    lines: int
    skipped: int
    """Unparsable lines (a torn last line after a crash)."""
    sessions: int
    """1, plus one per resume."""


class Concurrency(Record):
    slot_limit: int | None
    """summary.json's slot total, or its peak if the limit was lowered; None without summary.json."""
    slot_limit_final: int | None
    slot_peak: int | None
    mean_slot_limit: int | float | None
    """The limit averaged over the wall time (from its history); else `slot_limit`."""
    lanes_used: int
    peak_in_flight: int
    mean_in_flight: float
    busy_slot_s: float
    slot_utilisation: float | None
    """Busy slot-seconds / the slot-seconds the limit offered."""
    parallel_efficiency: float
    """Useful run time / wall time."""
    efficiency_share_of_limit: float | None
    peak_queued: int


class Series(Record):
    """A step series: `v[i]` holds from `t[i]` until `t[i + 1]`; `exact` unless reduced to bucket maxima."""

    t: list[float]
    v: list[int]
    exact: bool


class LimitTotals(Record):
    """A limit as summary.json's `limits` has it."""

    total: int
    """Its final total."""
    peak: int
    """The most in use at once."""


class LimitMetrics(LimitTotals):
    series: list[Point] | None
    """The limit's totals over the run, to the wall time; None when unknown."""


class Throughput(Record):
    bucket_s: int | float
    t: list[int | float]
    """Bucket starts."""
    done: list[int]
    """Cells done per bucket."""
    failed: list[int]
    mean_per_s: float
    peak_per_s: float


class Latency(Record):
    """Run time of done attempts."""

    p50: float
    p95: float
    p99: float
    mean: float
    max: float


class RunTime(Record):
    total: float
    """Of all attempts (done or not)."""


class ColumnRunTime(Record):
    """summary.json's run time of a column: the total of all attempts, mean and percentiles of done ones."""

    total: float
    mean: float
    p50: float
    p95: float


class ColumnSummary(Record):
    """A column (or `<column>:llm` ctx calls) in summary.json."""

    _omitted_when_none = ("tokens_counted_in", "rows", "rows_per_s")
    model: str | None
    attempts: int
    done: int
    retry: int
    failed: int
    timeout: int
    cancelled: int
    queue_wait_s: QueueWait | None
    """None for ctx calls: they wait inside their cell's slot."""
    run_s: ColumnRunTime
    tokens_in: int
    tokens_out: int
    cost: float | None
    tokens_counted_in: str | None = None
    """A python column whose ctx calls carry its tokens: `<column>:llm`, where they are counted."""
    rows: int | None = None
    """A batch column (`batch: true`): the rows its done calls ran for; left out for other columns."""
    rows_per_s: float | None = None
    """A batch column: those rows per second of its done calls' run time."""


class ColumnMetrics(Record):
    """A column, or the ctx calls made from a python column (`<column>:llm`, with a `parent`)."""

    _omitted_when_none = ("rows", "rows_per_s")
    model: str | None
    parent: str | None
    attempts: int
    done: int
    retry: int
    failed: int
    timeout: int
    cancelled: int
    latency_s: Latency
    run_s: RunTime
    queue_wait_s: QueueWait | None
    """None for ctx calls: they wait inside their cell's slot."""
    tokens_in: int
    tokens_out: int
    tokens_counted_in: str | None
    cost: float | None
    """None for a model without a price, and where the tokens are counted on the calls."""
    rows: int | None = None
    """A batch column (`batch: true`): the rows its done calls ran for; None for other columns."""
    rows_per_s: float | None = None
    """A batch column: those rows per second of its done calls' run time."""

    def summary(self) -> ColumnSummary:
        """The column as summary.json keeps it: latency folds into `run_s` (mean, p50, p95)."""
        latency = self.latency_s
        return ColumnSummary(
            model=self.model,
            attempts=self.attempts,
            done=self.done,
            retry=self.retry,
            failed=self.failed,
            timeout=self.timeout,
            cancelled=self.cancelled,
            queue_wait_s=self.queue_wait_s,
            run_s=ColumnRunTime(total=self.run_s.total, mean=latency.mean, p50=latency.p50, p95=latency.p95),
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost=self.cost,
            tokens_counted_in=self.tokens_counted_in,
            rows=self.rows,
            rows_per_s=self.rows_per_s,
        )


class ModelMetrics(Record):
    requests: int
    busy_s: float
    peak_in_flight: int
    limit: LimitTotals | None
    limit_series: list[Point] | None
    in_flight: Series
    tokens_in: int
    tokens_out: int
    cost: float | None


class CostTotal(Record):
    total: float
    unpriced_models: list[str]
    """Models that used tokens but have no price: not in the total."""


class RunMetrics(Record):
    """Metrics of a run directory (`run_metrics`): docs/TRACING.md, "Metrics"."""

    run_dir: str
    name: str | None
    status: str | None
    """summary.json's; "unknown" while it has none."""
    has_trace: bool
    trace: TraceInfo
    wall_s: float
    rows: dict[str, Any] | None
    cells: dict[str, Any] | None
    summary: dict[str, Any] | None
    """summary.json's content, as read (None while the run has not written it)."""
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


# ---- summary.json's `metrics` ---------------------------------------------------------------------


class ConcurrencySummary(Record):
    """`Concurrency` less its slot limit's final total and peak and the lanes used."""

    slot_limit: int | None
    mean_slot_limit: int | float | None
    peak_in_flight: int
    mean_in_flight: float
    busy_slot_s: float
    slot_utilisation: float | None
    parallel_efficiency: float
    efficiency_share_of_limit: float | None
    peak_queued: int


class ThroughputSummary(Record):
    """`Throughput` less its bucket starts (bucket `i` starts at `i * bucket_s`)."""

    bucket_s: int | float
    mean_per_s: float
    peak_per_s: float
    done: list[int]
    failed: list[int]


class ModelSummary(Record):
    requests: int
    busy_s: float
    peak_in_flight: int
    tokens_in: int
    tokens_out: int
    cost: float | None


class CostSummary(Record):
    total: float
    unpriced_models: list[str]
    prices: dict[str, dict[str, float]]
    """The pipeline's, so `treadle report` shows the cost without `--prices`."""


class LiveWindow(Record):
    """Which attempts live metrics come from: those after `from_s`, `attempts` of `of` so far."""

    from_s: float
    attempts: int
    of: int


class SummaryMetrics(Record):
    """summary.json's `metrics` (docs/TRACING.md, "summary.json"), or a live run's (with a `window`)."""

    _omitted_when_none = ("window",)
    source: Literal["trace.jsonl", "trace ring buffer"]
    attempts: AttemptCounts
    calls: AttemptCounts
    time: TimeSplit
    concurrency: ConcurrencySummary
    throughput: ThroughputSummary
    columns: dict[str, ColumnSummary]
    models: dict[str, ModelSummary]
    errors: Errors
    tokens: TokenTotals
    cost: CostSummary | None
    window: LiveWindow | None = None
    """Live metrics only: the attempts they come from."""


class MetricsNote(Record):
    """summary.json's `metrics` of a run that kept no trace: why there are none."""

    note: str


def parse_summary_metrics(data: Mapping[str, Any]) -> SummaryMetrics | MetricsNote:
    """summary.json's `metrics` (or a live summary's) as its record."""
    return MetricsNote.from_json(data) if "note" in data else SummaryMetrics.from_json(data)
