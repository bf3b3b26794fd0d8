"""Metrics of a run, computed from its trace (trace.parquet) and summary.json (`measure_run` -> `RunMetrics`).

Answers "where did the time go" (queue wait vs run time per column), "what was my real concurrency"
(cells in flight over time, slot utilisation, parallel efficiency) and "what did it cost" (tokens per
column and model, cost from per-model prices), plus throughput, latency percentiles, retries and
errors by class. The steps: one pass over the trace, a chunk at a time, adds it up (`_Tally`: per
column, slot time, throughput, errors; percentiles in `stats.Quantiles`) and notes the bounds of the
step series of cells in flight, queued and per model; a second, narrow pass reads their times again
and walks them in time order (`open_intervals`); then per column, the run's concurrency, per model,
throughput and errors. Memory: a chunk and the attempts running around its end, not the trace.

Times are seconds since the run started. A resumed run appends its attempts to the same trace
with times starting again at 0 (and `seq` starting again at 1): each such session is laid after the
previous one (its times are offset by the previous sessions' spans), so series stay monotonic.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from treadle.engine.analysis.cost import Price, Prices, check_prices, cost_of, pipeline_prices
from treadle.engine.analysis.limits import (
    SLOTS_LIMIT,
    LimitHistory,
    capacity_s,
    limit_history,
    limit_info,
    limit_series,
)
from treadle.engine.analysis.metrics_record import RunMetrics
from treadle.engine.analysis.open_intervals import OpenIntervals, StepSeries, series_chunks
from treadle.engine.analysis.records import (
    STATUSES,
    AttemptCounts,
    ColumnMetrics,
    Concurrency,
    CostTotal,
    ErrorCounts,
    Errors,
    Latency,
    LimitMetrics,
    ModelMetrics,
    QueueWait,
    RetryAfterWaits,
    RunTime,
    Series,
    Throughput,
    TimeSplit,
    TokenTotals,
    TraceInfo,
)
from treadle.engine.analysis.run_dir import load_summary
from treadle.engine.analysis.series import MAX_SERIES_POINTS, histogram, nice_width, total
from treadle.engine.errors import ConfigError, Problem
from treadle.engine.stats import Quantiles
from treadle.engine.summary_record import RunSummary
from treadle.engine.trace_reader import TraceChunks, TraceColumns, trace_path

DEFAULT_BUCKETS = 120


def run_metrics(
    run_dir: Path,
    prices: Prices | None = None,
    *,
    events: Path | None = None,
    summary: RunSummary | Mapping[str, Any] | None = None,
    trace: TraceColumns | None = None,
    buckets: int = DEFAULT_BUCKETS,
    max_points: int = MAX_SERIES_POINTS,
) -> dict[str, Any]:
    """`measure_run` as the JSON-ready dict docs/TRACING.md describes (`GET /metrics` serves it)."""
    measured = measure_run(
        run_dir, prices, events=events, summary=summary, trace=trace, buckets=buckets, max_points=max_points
    )
    return measured.to_json()


def measure_run(
    run_dir: Path,
    prices: Prices | None = None,
    *,
    events: Path | None = None,
    summary: RunSummary | Mapping[str, Any] | None = None,
    trace: TraceColumns | None = None,
    buckets: int = DEFAULT_BUCKETS,
    max_points: int = MAX_SERIES_POINTS,
) -> RunMetrics:
    """Metrics of a run directory (finished, interrupted or still running).

    `prices`: per model name, {"input_per_1m": USD, "output_per_1m": USD}, over the prices the
    pipeline gave (summary.json); models without a price have no cost. `events`: the run's `--events`
    file, for limit changes (else summary.json's `limit_history`; a run older than it: the final
    totals). `summary`: summary.json's record (or its JSON), when the caller has it (else read). `trace`: the
    trace, when the caller has read it (else the run directory's trace is read). See docs/TRACING.md for every key.
    """
    run_dir = Path(run_dir)
    if summary is None:
        summary = load_summary(run_dir)
    elif not isinstance(summary, RunSummary):
        summary = RunSummary.from_json(summary)
    price_of = check_prices({**pipeline_prices(summary), **(prices or {})})
    path = trace_path(run_dir)
    has_trace = trace is not None or path.exists()
    if summary is None and not has_trace:
        raise ConfigError([Problem(str(run_dir), "not a run directory with results (no summary.json, no trace)")])
    # The trace given, or the run directory's read a chunk at a time (once).
    info: TraceColumns | TraceChunks = trace if trace is not None else TraceChunks(path)
    chunks: Iterable[TraceColumns] = [info] if isinstance(info, TraceColumns) else info
    # Wall time: the sessions before the last as traced, the last as summary.json measured it.
    last_start = info.session_starts[-1] if info.session_starts else 0.0
    wall = info.span_s
    if summary is not None:
        wall = max(wall, last_start + summary.wall_s)
    tally, intervals = _Tally.of(chunks, wall, buckets)
    children = {name for name, column in tally.columns.items() if column.child}
    steps = intervals.step_series(series_chunks(info), children, max_points)
    columns = _column_metrics(tally, price_of)
    history = limit_history(summary, events, last_start)
    slots = _slot_use(tally, steps, columns, summary, history, wall)
    cell_attempts = _attempt_counts(columns, tally, calls=False)
    ctx_calls = _attempt_counts(columns, tally, calls=True)
    models, tokens, cost = _model_metrics(tally, steps, columns, summary, history, wall, price_of)
    return RunMetrics(
        run_dir=str(run_dir),
        name=None if summary is None else summary.name,
        status="unknown" if summary is None else summary.status,
        has_trace=has_trace,
        trace=TraceInfo(lines=info.lines, skipped=info.skipped, sessions=info.sessions),
        wall_s=round(wall, 6),
        rows=None if summary is None else summary.rows,
        cells=None if summary is None else summary.cells,
        summary=summary,
        attempts=cell_attempts,
        calls=ctx_calls,
        time=slots.time,
        concurrency=slots.concurrency,
        in_flight=slots.in_flight,
        queued=slots.queued,
        limits={
            name: LimitMetrics(**limit.model_dump(), series=limit_series(name, summary, history, wall))
            for name in ({} if summary is None else summary.limits)
            if (limit := limit_info(summary, name)) is not None
        },
        throughput=_throughput(tally, wall),
        columns=columns,
        models=models,
        errors=_errors(tally, cell_attempts, ctx_calls),
        tokens=tokens,
        cost=cost,
    )


# ---- the steps -----------------------------------------------------------------------------------


@dataclass
class _Column:
    """What the trace says about one column (or `<column>:llm`), added up chunk by chunk."""

    model: str | None
    parent: str | None
    """The column whose cells made these ctx calls, or None (a column's own cells)."""
    by_status: np.ndarray = field(default_factory=lambda: np.zeros(len(STATUSES), dtype=np.int64))
    done_run_s: Quantiles = field(default_factory=Quantiles)
    """The run times of its done attempts."""
    queue_s: Quantiles = field(default_factory=Quantiles)
    run_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    batch: bool = False
    """Whether its attempts carry a row count (a batch column's calls)."""
    rows_done: int = 0
    """The rows its done batch calls ran for."""

    @property
    def child(self) -> bool:
        """Whether it holds ctx calls (`<column>:llm`: they ran inside their cell's slot)."""
        return self.parent is not None


@dataclass
class _Tally:
    """The trace added up in one pass over its chunks: per column (in order of first appearance, a
    column's first line giving its model and parent), the cells' slot time, throughput and errors."""

    columns: dict[str, _Column] = field(default_factory=dict)
    busy_s: float = 0.0
    """The cells' (not the ctx calls') time in their slots."""
    queue_s: float = 0.0
    lanes: set[int] = field(default_factory=set)
    done: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    failed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bucket_s: float = 1.0
    requests: dict[str, list[float]] = field(default_factory=dict)
    """Per model: its requests, their time in flight."""
    errors: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    """Attempts that did not succeed by (error class, status), in order of first appearance."""
    retry_waits: int = 0
    retry_wait_s: float = 0.0

    @classmethod
    def of(cls, chunks: Iterable[TraceColumns], wall: float, buckets: int) -> tuple[_Tally, OpenIntervals]:
        """The tally of `chunks`, and its step series' first pass."""
        width = nice_width(wall, buckets)
        n_buckets = max(1, math.ceil(wall / width - 1e-9)) if wall > 0 else 1
        tally = cls(done=np.zeros(n_buckets, np.int64), failed=np.zeros(n_buckets, np.int64), bucket_s=width)
        intervals = OpenIntervals()
        for chunk in chunks:
            tally._add(chunk, intervals)
        return tally, intervals

    def _add(self, tc: TraceColumns, intervals: OpenIntervals) -> None:
        names, codes = tc.names, tc.codes
        status = _statuses(tc)
        column_code = codes["column"]
        own_column = np.zeros(len(names["column"]), dtype=bool)
        for c, name in enumerate(names["column"]):
            g = np.flatnonzero(column_code == c)
            column = self.columns.get(name)
            if column is None:
                model, parent = names["model"][codes["model"][g[0]]], names["parent"][codes["parent"][g[0]]]
                column = self.columns[name] = _Column(model, parent)
            self._add_column(column, tc, g, status[g])
            own_column[c] = not column.child
        own = own_column[column_code]
        intervals.note(tc, own)
        self.busy_s += total(tc.t_end[own]) - total(tc.t_start[own])
        self.queue_s += total(tc.t_start[own]) - total(tc.t_ready[own])
        self.lanes.update(np.unique(tc.slot[own & tc.has_slot]).tolist())
        cells = np.maximum(tc.rows, 1)  # a batch call counts a cell per row it ran for
        done, failed = own & (status == 0), own & (status == STATUSES.index("failed"))
        self.done += histogram(tc.t_end[done], self.bucket_s, len(self.done), cells[done])
        self.failed += histogram(tc.t_end[failed], self.bucket_s, len(self.done), cells[failed])
        for code, model in enumerate(names["model"]):
            if model is not None:
                requests = codes["model"] == code
                in_flight = self.requests.setdefault(model, [0, 0.0])
                in_flight[0] += int(requests.sum())
                in_flight[1] += total(tc.t_end[requests]) - total(tc.t_start[requests])
        self._add_errors(tc)

    @staticmethod
    def _add_column(column: _Column, tc: TraceColumns, g: np.ndarray, status: np.ndarray) -> None:
        column.by_status += np.bincount(status[status >= 0], minlength=len(STATUSES))
        run_s = tc.t_end[g] - tc.t_start[g]
        column.done_run_s.add(run_s[status == 0])
        column.tokens_in += int(tc.tokens_in[g].sum())
        column.tokens_out += int(tc.tokens_out[g].sum())
        rows = tc.rows[g]
        if (rows > 0).any():
            column.batch = True
            column.rows_done += int(rows[status == 0].sum())
        if not column.child:
            column.queue_s.add(tc.t_start[g] - tc.t_ready[g])
            column.run_s += float(np.cumsum(run_s)[-1])

    def _add_errors(self, tc: TraceColumns) -> None:
        status_names, error_names = tc.names["status"], tc.names["error_class"]
        n_statuses = max(len(status_names), 1)
        not_done = np.array([s not in ("done", None) for s in status_names], dtype=bool)
        has_class = np.array([e is not None for e in error_names], dtype=bool)
        status_code, error_code = tc.codes["status"], tc.codes["error_class"]
        if tc.lines:
            failed = not_done[status_code] | has_class[error_code]
            pairs = error_code[failed].astype(np.int64) * n_statuses + status_code[failed]
            unique, first, counts = np.unique(pairs, return_index=True, return_counts=True)
            for i in np.argsort(first, kind="stable"):  # in the order they first appear
                key = (error_names[unique[i] // n_statuses], status_names[unique[i] % n_statuses])
                self.errors[key] = self.errors.get(key, 0) + int(counts[i])
        waited = tc.retry_after[tc.retry_after > 0]
        self.retry_waits += len(waited)
        self.retry_wait_s += float(waited.sum())


def _statuses(tc: TraceColumns) -> np.ndarray:
    """Per line: its status as an index into STATUSES (-1: another or none)."""
    status_index = np.array([STATUSES.index(s) if s in STATUSES else -1 for s in tc.names["status"]], dtype=np.int64)
    return status_index[tc.codes["status"]] if tc.lines else np.zeros(0, dtype=np.int64)


def _column_metrics(tally: _Tally, price_of: dict[str, Price]) -> dict[str, ColumnMetrics]:
    """Per column (and per `<column>:llm`): counts by status, latency, run time, queue wait, tokens, cost."""
    parents_with_calls = {column.parent for column in tally.columns.values() if column.parent is not None}
    columns: dict[str, ColumnMetrics] = {}
    for name, column in tally.columns.items():
        # A python column whose function called models through ctx carries its calls' tokens again in
        # `<column>__usage`: count them once, on the `<column>:llm` calls.
        aggregated = not column.child and name in parents_with_calls
        done_run, queue = column.done_run_s, column.queue_s
        queue_wait = None
        if not column.child:
            queue_wait = QueueWait(total=round(queue.total(), 6), **queue.percentiles((50, 95)), mean=queue.mean())
        total_run = done_run.total() if column.child else column.run_s
        rows, rows_per_s = _batch_rows(column)
        cost = None
        if not aggregated and column.model is not None and column.model in price_of:
            cost = round(cost_of(column.tokens_in, column.tokens_out, price_of[column.model]), 6)
        by_status = column.by_status.tolist()
        columns[name] = ColumnMetrics(
            model=column.model,
            parent=column.parent,
            attempts=sum(by_status),
            **dict(zip(STATUSES, by_status, strict=True)),
            latency_s=Latency(**done_run.percentiles(), mean=done_run.mean(), max=done_run.maximum()),
            run_s=RunTime(total=round(total_run, 6)),
            queue_wait_s=queue_wait,
            tokens_in=column.tokens_in,
            tokens_out=column.tokens_out,
            tokens_counted_in=f"{name}:llm" if aggregated else None,
            cost=cost,
            rows=rows,
            rows_per_s=rows_per_s,
        )
    return columns


def _batch_rows(column: _Column) -> tuple[int | None, float | None]:
    """A batch column's rows done by its calls, and those per second of the done calls' run time; (None,
    None) for a column whose attempts carry no row count (each ran for one cell)."""
    if not column.batch:
        return None, None
    run_s = column.done_run_s.total()
    return column.rows_done, round(column.rows_done / run_s, 3) if run_s > 0 else 0.0


def _attempt_counts(columns: dict[str, ColumnMetrics], tally: _Tally, *, calls: bool) -> AttemptCounts:
    """Attempts by status of the cells (`calls=False`) or of the ctx calls."""
    picked = [column for name, column in columns.items() if tally.columns[name].child == calls]
    by_status = {s: sum(getattr(column, s) for column in picked) for s in STATUSES}
    return AttemptCounts(total=sum(by_status.values()), **by_status)


@dataclass
class _SlotUse:
    time: TimeSplit
    concurrency: Concurrency
    in_flight: Series
    queued: Series


def _slot_use(
    tally: _Tally,
    steps: dict[Hashable, StepSeries],
    columns: dict[str, ColumnMetrics],
    summary: RunSummary | None,
    history: LimitHistory,
    wall: float,
) -> _SlotUse:
    """Where the cells' time went (run vs queue wait) and how many ran at once, against the slot limit."""
    busy_s, queue_total = tally.busy_s, tally.queue_s
    useful_s = sum(column.done_run_s.total() for column in tally.columns.values() if not column.child)
    in_t, in_v, peak_in_flight, in_exact = steps["in_flight"]
    q_t, q_v, peak_queued, q_exact = steps["queued"]
    slot_info = limit_info(summary, SLOTS_LIMIT)
    slot_limit = None if slot_info is None else max(slot_info.total, slot_info.peak)
    # With the limit's history, capacity is what the limit offered over time; without, its largest value.
    slot_series = limit_series(SLOTS_LIMIT, summary, history, wall) if SLOTS_LIMIT in history else None
    capacity = capacity_s(slot_series, wall) if slot_series else (slot_limit or 0) * wall
    concurrency = Concurrency(
        slot_limit=slot_limit,
        slot_limit_final=None if slot_info is None else slot_info.total,
        slot_peak=None if slot_info is None else slot_info.peak,
        mean_slot_limit=round(capacity / wall, 6) if capacity and wall > 0 else slot_limit,
        lanes_used=len(tally.lanes),
        peak_in_flight=peak_in_flight,
        mean_in_flight=round(busy_s / wall, 6) if wall > 0 else 0.0,
        busy_slot_s=round(busy_s, 6),
        slot_utilisation=round(busy_s / capacity, 6) if capacity > 0 else None,
        parallel_efficiency=round(useful_s / wall if wall > 0 else 0.0, 6),
        efficiency_share_of_limit=round(useful_s / capacity, 6) if capacity > 0 else None,
        peak_queued=peak_queued,
    )
    time = TimeSplit(
        run_s=round(busy_s, 6),
        useful_run_s=round(useful_s, 6),
        queue_wait_s=round(queue_total, 6),
        queue_share=round(queue_total / (queue_total + busy_s), 6) if queue_total + busy_s > 0 else 0.0,
    )
    return _SlotUse(time, concurrency, _series(in_t, in_v, in_exact), _series(q_t, q_v, q_exact))


def _series(times: list[float], values: list[int], exact: bool) -> Series:
    return Series(t=[round(t, 6) for t in times], v=values, exact=exact)


def _model_metrics(
    tally: _Tally,
    steps: dict[Hashable, StepSeries],
    columns: dict[str, ColumnMetrics],
    summary: RunSummary | None,
    history: LimitHistory,
    wall: float,
    price_of: dict[str, Price],
) -> tuple[dict[str, ModelMetrics], TokenTotals, CostTotal | None]:
    """Per model: requests in flight against its limit, tokens and cost; and the run's tokens and cost."""
    usage: dict[str, list[int]] = {}  # model -> [tokens in, tokens out]
    counted = [column for column in columns.values() if column.tokens_counted_in is None]
    for column in counted:
        if column.model is not None:
            used = usage.setdefault(column.model, [0, 0])
            used[0] += column.tokens_in
            used[1] += column.tokens_out
    models: dict[str, ModelMetrics] = {}
    cost_total = 0.0
    unpriced = []
    for model in sorted(set(tally.requests) | set(usage)):
        requests, busy_s = tally.requests.get(model, (0, 0.0))
        m_t, m_v, m_peak, m_exact = steps.get(("model", model), ([0.0], [0], 0, True))
        tokens_in, tokens_out = usage.get(model, (0, 0))
        cost = None
        if model in price_of:
            cost = round(cost_of(tokens_in, tokens_out, price_of[model]), 6)
            cost_total += cost
        elif tokens_in or tokens_out:
            unpriced.append(model)
        limit_name = f"model:{model}"
        models[model] = ModelMetrics(
            requests=int(requests),
            busy_s=round(busy_s, 6),
            peak_in_flight=m_peak,
            limit=limit_info(summary, limit_name),
            limit_series=limit_series(limit_name, summary, history, wall),
            in_flight=_series(m_t, m_v, m_exact),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost,
        )
    tokens = TokenTotals(
        tokens_in=sum(column.tokens_in for column in counted), tokens_out=sum(column.tokens_out for column in counted)
    )
    cost_all = CostTotal(total=round(cost_total, 6), unpriced_models=unpriced) if price_of else None
    return models, tokens, cost_all


def _throughput(tally: _Tally, wall: float) -> Throughput:
    """Cells done and failed per time bucket (about `buckets` of them over the wall time); a batch call
    counts a cell per row it ran for."""
    width = tally.bucket_s
    done = tally.done.tolist()
    return Throughput(
        bucket_s=width,
        t=[round(i * width, 6) for i in range(len(done))],
        done=done,
        failed=tally.failed.tolist(),
        mean_per_s=round(sum(done) / wall, 6) if wall > 0 else 0.0,
        peak_per_s=round(max(done, default=0) / width, 6),
    )


def _errors(tally: _Tally, cells: AttemptCounts, calls: AttemptCounts) -> Errors:
    """Attempts that did not succeed, by error class (or by status when they carry no class)."""
    by_class: dict[str, dict[str, int]] = {}
    for (error_class, status), count in tally.errors.items():
        per_class = by_class.setdefault(error_class or status or "unknown", dict.fromkeys(STATUSES[1:], 0))
        if status in per_class:
            per_class[status] += count
    most_first = sorted(by_class.items(), key=lambda kv: -sum(kv[1].values()))
    return Errors(
        by_class={name: ErrorCounts(**counts) for name, counts in most_first},
        retry_after=RetryAfterWaits(waits=tally.retry_waits, total_s=round(tally.retry_wait_s, 3)),
        retries=cells.retry + calls.retry,
        timeouts=cells.timeout + calls.timeout,
        failed_attempts=cells.failed + calls.failed,
    )
