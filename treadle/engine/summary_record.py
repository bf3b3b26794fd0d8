"""summary.json, typed: `RunSummary` is what a run writes at its end (and hands out while it goes), and what
headless, the TUI, `--serve` and `treadle report` read. `to_json()` gives the file's dict, keys in the order
docs/EVENTS.md shows; `from_json()` reads one back. Keys it does not know (such as the demo's `accuracy`) are
kept, after the others, so a summary.json read and written back is unchanged. Its `metrics` are
analysis.records' SummaryMetrics (or a MetricsNote without a trace)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator

from treadle.engine.analysis.records import MetricsNote, Record, SummaryMetrics, parse_summary_metrics

Number = int | float
"""A value written as the engine computed it: an int stays an int in the JSON (a float field would
turn 4 into 4.0, and summary.json would change)."""


class RowOutcomes(Record):
    """Rows done (every cell done or degraded), failed (a cell failed or blocked), dropped, unfinished,
    and, in pipelines with a filter column, filtered (dropped by a filter, not counted in dropped)."""

    _omitted_when_none = ("filtered",)

    total: int
    done: int
    failed: int
    dropped: int
    unfinished: int
    filtered: int | None = None


class CellLatency(Record):
    """Seconds per finished cell of a column: percentiles and mean (0.0 for no cells)."""

    p50: float
    p95: float
    p99: float
    mean: float


class ColumnCells(Record):
    cells: dict[str, int]
    """Cells by state (CellState labels, in that order)."""
    latency_s: CellLatency


class LoopLagMs(Record):
    """How late the engine loop woke up, in milliseconds."""

    p50: Number
    p99: Number
    max: Number


class LimitPeak(Record):
    total: Number
    """The limit at the end."""
    peak: Number
    """Most slots in use at once."""


class RateLimitSummary(Record):
    """One model's pace at the end, answers that asked to wait, and each change of the adaptive value.
    A run writes every field; the defaults (None: not said) let a partial one, made by hand, read."""

    adaptive: bool = False
    source: str | None = None
    ceiling: Number | None = None
    concurrency: Number | None = None
    paced_rpm: Number | None = None
    tpm: Number | None = None
    requests: int | None = None
    rate_limited: int | None = None
    changes: list[tuple[Number, Number, Number | None, str]] = Field(default_factory=list)
    """[t (s from the run's start), concurrency, paced_rpm, reason]."""


class JoinSummary(Record):
    """How the seed's inner join went (seed.JoinReport)."""

    left: str
    right: str
    key: str
    matched: int
    left_only: int
    right_only: int
    left_only_examples: list[str]
    right_only_examples: list[str]
    renamed: list[tuple[str, str]]


class OutputPaths(Record):
    output: str
    failures: str
    summary: str


class RunSummary(Record):
    """summary.json: a run's outcome, per column counts and latency, limits, rate limits and metrics.

    A run writes every field. Each has a default so that a summary.json written before a field existed, or
    one made by hand (tests, older tools), still reads: what it lacks reads as unknown (None) or empty."""

    model_config = ConfigDict(extra="allow")
    _omitted_when_none = ("metrics", "cache", "versions")

    name: str | None = None
    status: str = "unknown"
    message: str | None = None
    pipeline: str | None = None
    pipeline_hash: str | None = None
    wall_s: float = 0.0
    engine_cpu_s: float | None = None
    rows: RowOutcomes | None = None
    """None: the summary does not say (never for one a run wrote)."""
    cells: dict[str, int] = Field(default_factory=dict)
    """Cells by state over all columns (CellState labels, in that order)."""
    columns: dict[str, ColumnCells] = Field(default_factory=dict)
    parallel_efficiency: float = 0.0
    """Busy slot-seconds over wall seconds."""
    loop_lag_ms: LoopLagMs | None = None
    limits: dict[str, LimitPeak] = Field(default_factory=dict)
    first_row_s: float | None = None
    """Seconds until the first row was done; None: none was."""
    rate_limits: dict[str, RateLimitSummary] = Field(default_factory=dict)
    limit_history: dict[str, list[list[Number]]] = Field(default_factory=dict)
    """Per limit, [t, total] at each change (t in seconds from the run's start)."""
    join: JoinSummary | None = None
    cache: dict[str, Any] | None = None
    """The response cache: `enabled`, and when it was, its path, mode, hits, misses, hit rate, tokens and
    cost saved (engine/response_cache.py `cache_summary`). None (left out) in summaries made before it."""
    outputs: OutputPaths = OutputPaths(output="output.parquet", failures="failures.jsonl", summary="summary.json")
    """Where the run wrote them; by default their names in the run directory."""
    versions: list[dict[str, Any]] | None = None
    """The pipeline's versions after the first (columns changed while the run went, as in run.json); each
    changed column's cells say theirs in output.parquet's `<column>__version`. None (left out): no change."""
    metrics: SummaryMetrics | MetricsNote | None = None
    """None (left out) while a traced run has not read its final trace back."""

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics_record(cls, value: Any) -> Any:
        # The note and the metrics are told apart by the note's key, not by trying each type in turn.
        return parse_summary_metrics(value) if isinstance(value, dict) else value
