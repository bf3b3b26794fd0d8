"""Metrics of a run, computed from its trace (trace.parquet) and summary.json (`measure_run` -> `RunMetrics`).

Answers "where did the time go" (queue wait vs run time per column), "what was my real concurrency"
(cells in flight over time, slot utilisation, parallel efficiency) and "what did it cost" (tokens per
column and model, cost from per-model prices), plus throughput, latency percentiles, retries and
errors by class. The steps: the trace's lines grouped by column (`_Lines`), then per column, the run's
concurrency, per model, throughput and errors.

Times are seconds since the run started. A resumed run appends its attempts to the same trace
with times starting again at 0 (and `seq` starting again at 1): each such session is laid after the
previous one (its times are offset by the previous sessions' spans), so series stay monotonic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    RunMetrics,
    RunTime,
    Series,
    Throughput,
    TimeSplit,
    TokenTotals,
    TraceInfo,
)
from treadle.engine.analysis.run_dir import load_summary
from treadle.engine.analysis.series import (
    MAX_SERIES_POINTS,
    histogram,
    maximum,
    mean,
    nice_width,
    percentiles,
    step_series,
    total,
)
from treadle.engine.errors import ConfigError, Problem
from treadle.engine.trace_reader import TraceColumns, read_trace, trace_path

DEFAULT_BUCKETS = 120


def run_metrics(
    run_dir: Path,
    prices: Prices | None = None,
    *,
    events: Path | None = None,
    summary: dict[str, Any] | None = None,
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
    summary: dict[str, Any] | None = None,
    trace: TraceColumns | None = None,
    buckets: int = DEFAULT_BUCKETS,
    max_points: int = MAX_SERIES_POINTS,
) -> RunMetrics:
    """Metrics of a run directory (finished, interrupted or still running).

    `prices`: per model name, {"input_per_1m": USD, "output_per_1m": USD}, over the prices the
    pipeline gave (summary.json); models without a price have no cost. `events`: the run's `--events`
    file, for limit changes (else summary.json's `limit_history`; a run older than it: the final
    totals). `summary`: summary.json's content, when the caller has it (else read). `trace`: the
    trace, when the caller has read it (else the run directory's trace is read). See docs/TRACING.md for every key.
    """
    run_dir = Path(run_dir)
    if summary is None:
        summary = load_summary(run_dir)
    price_of = check_prices({**pipeline_prices(summary), **(prices or {})})
    path = trace_path(run_dir)
    has_trace = trace is not None or path.exists()
    if summary is None and not has_trace:
        raise ConfigError([Problem(str(run_dir), "not a run directory with results (no summary.json, no trace)")])
    tc = trace if trace is not None else read_trace(path)
    lines = _Lines.of(tc)
    columns = _column_metrics(tc, lines, price_of)
    # Wall time: the sessions before the last as traced, the last as summary.json measured it.
    last_start = tc.session_starts[-1] if tc.session_starts else 0.0
    wall = tc.span_s
    if summary is not None:
        wall = max(wall, last_start + float(summary.get("wall_s") or 0.0))
    history = limit_history(summary, events, last_start)
    slots = _slot_use(tc, lines, columns, summary, history, wall, max_points)
    cell_attempts = _attempt_counts(columns, lines, calls=False)
    ctx_calls = _attempt_counts(columns, lines, calls=True)
    models, tokens, cost = _model_metrics(tc, columns, summary, history, wall, price_of, max_points)
    return RunMetrics(
        run_dir=str(run_dir),
        name=(summary or {}).get("name"),
        status=(summary or {}).get("status", "unknown"),
        has_trace=has_trace,
        trace=TraceInfo(lines=tc.lines, skipped=tc.skipped, sessions=tc.sessions),
        wall_s=round(wall, 6),
        rows=(summary or {}).get("rows"),
        cells=(summary or {}).get("cells"),
        summary=summary,
        attempts=cell_attempts,
        calls=ctx_calls,
        time=slots.time,
        concurrency=slots.concurrency,
        in_flight=slots.in_flight,
        queued=slots.queued,
        limits={
            name: LimitMetrics(**limit.model_dump(), series=limit_series(name, summary, history, wall))
            for name in ((summary or {}).get("limits") or {})
            if (limit := limit_info(summary, name)) is not None
        },
        throughput=_throughput(tc, lines, wall, buckets),
        columns=columns,
        models=models,
        errors=_errors(tc, cell_attempts, ctx_calls),
        tokens=tokens,
        cost=cost,
    )


# ---- the steps -----------------------------------------------------------------------------------


@dataclass
class _Lines:
    """The trace's lines grouped by column, with each line's status."""

    status: np.ndarray
    """Per line: its status as an index into STATUSES (-1: another or none)."""
    groups: list[np.ndarray]
    """Per column code: its lines, in file order."""
    models: list[str | None]
    parents: list[str | None]
    """Per column code: the column whose cells made these ctx calls, or None (a column's own cells)."""
    child: np.ndarray
    """Per column code: whether it holds ctx calls (`<column>:llm`: they ran inside their cell's slot)."""
    own: np.ndarray
    """Per line: whether it is a cell's attempt (not a ctx call)."""
    done_run_s: list[np.ndarray]
    """Per column code: the run times of its done attempts."""

    @classmethod
    def of(cls, tc: TraceColumns) -> _Lines:
        names, codes, n = tc.names, tc.codes, tc.lines
        status_index = np.array([STATUSES.index(s) if s in STATUSES else -1 for s in names["status"]], dtype=np.int64)
        status = status_index[codes["status"]] if n else np.zeros(0, dtype=np.int64)
        column_code = codes["column"]
        n_columns = len(names["column"])
        # A column's first line gives its model and parent.
        order = np.argsort(column_code, kind="stable")
        bounds = np.searchsorted(column_code[order], np.arange(n_columns + 1))
        groups = [order[bounds[c] : bounds[c + 1]] for c in range(n_columns)]
        parents = [names["parent"][codes["parent"][g[0]]] for g in groups]
        child = np.array([p is not None for p in parents], dtype=bool)
        run_s = tc.t_end - tc.t_start
        return cls(
            status=status,
            groups=groups,
            models=[names["model"][codes["model"][g[0]]] for g in groups],
            parents=parents,
            child=child,
            own=~child[column_code] if n else np.zeros(0, dtype=bool),
            done_run_s=[run_s[g][status[g] == 0] for g in groups],
        )


def _column_metrics(tc: TraceColumns, lines: _Lines, price_of: dict[str, Price]) -> dict[str, ColumnMetrics]:
    """Per column (and per `<column>:llm`): counts by status, latency, run time, queue wait, tokens, cost."""
    run_s = tc.t_end - tc.t_start
    parents_with_calls = {p for p in lines.parents if p is not None}
    columns: dict[str, ColumnMetrics] = {}
    for c, name in enumerate(tc.names["column"]):
        g, child, model = lines.groups[c], bool(lines.child[c]), lines.models[c]
        g_status = lines.status[g]
        by_status = np.bincount(g_status[g_status >= 0], minlength=len(STATUSES)).tolist()
        done_run = lines.done_run_s[c]
        tokens_in, tokens_out = int(tc.tokens_in[g].sum()), int(tc.tokens_out[g].sum())
        # A python column whose function called models through ctx carries its calls' tokens again in
        # `<column>__usage`: count them once, on the `<column>:llm` calls.
        aggregated = not child and name in parents_with_calls
        queue_wait = None
        if child:
            total_run = total(done_run)
        else:
            queue = tc.t_start[g] - tc.t_ready[g]
            queue_wait = QueueWait(total=round(float(queue.sum()), 6), **percentiles(queue, (50, 95)), mean=mean(queue))
            total_run = float(np.cumsum(run_s[g])[-1]) if len(g) else 0.0
        rows, rows_per_s = _batch_rows(tc.rows[g], g_status, done_run)
        cost = None
        if not aggregated and model is not None and model in price_of:
            cost = round(cost_of(tokens_in, tokens_out, price_of[model]), 6)
        columns[name] = ColumnMetrics(
            model=model,
            parent=lines.parents[c],
            attempts=sum(by_status),
            **dict(zip(STATUSES, by_status, strict=True)),
            latency_s=Latency(**percentiles(done_run), mean=mean(done_run), max=maximum(done_run)),
            run_s=RunTime(total=round(total_run, 6)),
            queue_wait_s=queue_wait,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            tokens_counted_in=f"{name}:llm" if aggregated else None,
            cost=cost,
            rows=rows,
            rows_per_s=rows_per_s,
        )
    return columns


def _batch_rows(rows: np.ndarray, status: np.ndarray, done_run_s: np.ndarray) -> tuple[int | None, float | None]:
    """A batch column's rows done by its calls, and those per second of the done calls' run time; (None,
    None) for a column whose attempts carry no row count (each ran for one cell)."""
    if not (rows > 0).any():
        return None, None
    done_rows = int(rows[status == 0].sum())
    run_s = float(done_run_s.sum())
    return done_rows, round(done_rows / run_s, 3) if run_s > 0 else 0.0


def _attempt_counts(columns: dict[str, ColumnMetrics], lines: _Lines, *, calls: bool) -> AttemptCounts:
    """Attempts by status of the cells (`calls=False`) or of the ctx calls."""
    picked = [column for c, column in enumerate(columns.values()) if bool(lines.child[c]) == calls]
    by_status = {s: sum(getattr(column, s) for column in picked) for s in STATUSES}
    return AttemptCounts(total=sum(by_status.values()), **by_status)


@dataclass
class _SlotUse:
    time: TimeSplit
    concurrency: Concurrency
    in_flight: Series
    queued: Series


def _slot_use(
    tc: TraceColumns,
    lines: _Lines,
    columns: dict[str, ColumnMetrics],
    summary: dict[str, Any] | None,
    history: LimitHistory,
    wall: float,
    max_points: int,
) -> _SlotUse:
    """Where the cells' time went (run vs queue wait) and how many ran at once, against the slot limit."""
    own = lines.own
    cell_starts, cell_ends, cell_ready = tc.t_start[own], tc.t_end[own], tc.t_ready[own]
    busy_s = total(cell_ends) - total(cell_starts)
    useful_s = sum(total(lines.done_run_s[c]) for c in range(len(columns)) if not lines.child[c])
    queue_total = total(cell_starts) - total(cell_ready)
    in_t, in_v, peak_in_flight, in_exact = step_series(cell_starts, cell_ends, max_points)
    q_t, q_v, peak_queued, q_exact = step_series(cell_ready, cell_starts, max_points)
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
        lanes_used=int(np.unique(tc.slot[own & tc.has_slot]).size),
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
    tc: TraceColumns,
    columns: dict[str, ColumnMetrics],
    summary: dict[str, Any] | None,
    history: LimitHistory,
    wall: float,
    price_of: dict[str, Price],
    max_points: int,
) -> tuple[dict[str, ModelMetrics], TokenTotals, CostTotal | None]:
    """Per model: requests in flight against its limit, tokens and cost; and the run's tokens and cost."""
    usage: dict[str, list[int]] = {}  # model -> [tokens in, tokens out]
    counted = [column for column in columns.values() if column.tokens_counted_in is None]
    for column in counted:
        if column.model is not None:
            used = usage.setdefault(column.model, [0, 0])
            used[0] += column.tokens_in
            used[1] += column.tokens_out
    model_code = tc.codes["model"]
    requests_of = {m: np.flatnonzero(model_code == code) for code, m in enumerate(tc.names["model"]) if m is not None}
    models: dict[str, ModelMetrics] = {}
    cost_total = 0.0
    unpriced = []
    for model in sorted(set(requests_of) | set(usage)):
        requests = requests_of.get(model, np.zeros(0, dtype=np.int64))
        starts, ends = tc.t_start[requests], tc.t_end[requests]
        m_t, m_v, m_peak, m_exact = step_series(starts, ends, max_points)
        tokens_in, tokens_out = usage.get(model, (0, 0))
        cost = None
        if model in price_of:
            cost = round(cost_of(tokens_in, tokens_out, price_of[model]), 6)
            cost_total += cost
        elif tokens_in or tokens_out:
            unpriced.append(model)
        limit_name = f"model:{model}"
        models[model] = ModelMetrics(
            requests=len(starts),
            busy_s=round(total(ends) - total(starts), 6),
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


def _throughput(tc: TraceColumns, lines: _Lines, wall: float, buckets: int) -> Throughput:
    """Cells done and failed per time bucket (about `buckets` of them over the wall time); a batch call
    counts a cell per row it ran for."""
    width = nice_width(wall, buckets)
    n_buckets = max(1, math.ceil(wall / width - 1e-9)) if wall > 0 else 1
    cells = np.maximum(tc.rows, 1)
    done_lines = lines.own & (lines.status == 0)
    done = histogram(tc.t_end[done_lines], width, n_buckets, cells[done_lines])
    failed_lines = lines.own & (lines.status == STATUSES.index("failed"))
    return Throughput(
        bucket_s=width,
        t=[round(i * width, 6) for i in range(n_buckets)],
        done=done,
        failed=histogram(tc.t_end[failed_lines], width, n_buckets, cells[failed_lines]),
        mean_per_s=round(int(cells[done_lines].sum()) / wall, 6) if wall > 0 else 0.0,
        peak_per_s=round(max(done, default=0) / width, 6),
    )


def _errors(tc: TraceColumns, cells: AttemptCounts, calls: AttemptCounts) -> Errors:
    """Attempts that did not succeed, by error class (or by status when they carry no class)."""
    status_names, error_names = tc.names["status"], tc.names["error_class"]
    n_statuses = max(len(status_names), 1)
    not_done = np.array([s not in ("done", None) for s in status_names], dtype=bool)
    has_class = np.array([e is not None for e in error_names], dtype=bool)
    status_code, error_code = tc.codes["status"], tc.codes["error_class"]
    by_class: dict[str, dict[str, int]] = {}
    if tc.lines:
        failed = not_done[status_code] | has_class[error_code]
        pairs = error_code[failed].astype(np.int64) * n_statuses + status_code[failed]
        unique, first, counts = np.unique(pairs, return_index=True, return_counts=True)
        for i in np.argsort(first, kind="stable"):  # classes in the order they first appear
            error_class = error_names[unique[i] // n_statuses]
            status = status_names[unique[i] % n_statuses]
            per_class = by_class.setdefault(error_class or status or "unknown", dict.fromkeys(STATUSES[1:], 0))
            if status in per_class:
                per_class[status] += int(counts[i])
    waited = tc.retry_after[tc.retry_after > 0]
    most_first = sorted(by_class.items(), key=lambda kv: -sum(kv[1].values()))
    return Errors(
        by_class={name: ErrorCounts(**counts) for name, counts in most_first},
        retry_after=RetryAfterWaits(waits=len(waited), total_s=round(float(waited.sum()), 3)),
        retries=cells.retry + calls.retry,
        timeouts=cells.timeout + calls.timeout,
        failed_attempts=cells.failed + calls.failed,
    )
