"""The report's tables as plain rows of text, shared by the console and the HTML report: each a
`Section` (title, headers, rows, note) from a run's `RunMetrics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from treadle.engine.analysis.metrics_record import RunMetrics
from treadle.engine.analysis.per_worker import WorkerUse
from treadle.engine.analysis.records import ColumnMetrics
from treadle.engine.summary_record import RunSummary
from treadle.report.text import cost_text, number_text, seconds_text, share_text, sparkline


class Section(NamedTuple):
    title: str
    headers: list[str]
    rows: list[list[str]]
    """A row whose first cell is "all" is the table's total."""
    note: str | None


def sections(m: RunMetrics, workers: Sequence[WorkerUse] = ()) -> list[Section]:
    """Every table of the report: from the trace if the run kept one, else from summary.json alone;
    `workers` (a run on several processes: `workers.measure_workers`) adds a table of theirs."""
    if not m.has_trace:
        return _summary_sections(m.summary or RunSummary())
    return [
        _time_section(m),
        _concurrency_section(m),
        *([_workers_section(m, workers)] if workers else []),
        _cost_section(m),
        _errors_section(m),
        _throughput_section(m),
        *_rate_sections(m.summary),
    ]


def headline(m: RunMetrics) -> str:
    rows = m.rows
    if rows is not None:
        done = f"{rows.done}/{rows.total} rows done"
    else:
        done = "no summary.json yet" if m.summary is None else "rows not recorded"
    name = m.name or Path(m.run_dir).name
    sessions = m.trace.sessions
    resumed = f", {sessions} sessions (resumed)" if sessions > 1 else ""
    trace = "" if m.has_trace else " (no trace: the run had run.trace: false)"
    return f"{name}: {m.status} in {seconds_text(m.wall_s)}, {done}{resumed}{trace}"


# ---- from the trace ------------------------------------------------------------------------------


def _latencies(column: ColumnMetrics) -> list[str]:
    latency = column.latency_s
    return [seconds_text(latency.p50), seconds_text(latency.p95), seconds_text(latency.p99)]


def _time_section(m: RunMetrics) -> Section:
    rows = []
    for name, c in m.columns.items():
        if c.parent is None and c.queue_wait_s is not None:
            queue, run = c.queue_wait_s, c.run_s.total
            spent = queue.total + run
            waiting = share_text(queue.total / spent if spent else 0.0)
            wait = [seconds_text(queue.total), waiting, seconds_text(queue.p50), seconds_text(queue.p95)]
            rows.append([name, number_text(c.attempts), seconds_text(run), *wait, *_latencies(c)])
    for name, c in m.columns.items():
        if c.parent is not None:  # ctx calls wait inside their cell's slot
            rows.append([name, number_text(c.attempts), seconds_text(c.run_s.total), *["-"] * 4, *_latencies(c)])
    time = m.time
    rows.append(
        ["all", number_text(m.attempts.total), seconds_text(time.run_s), seconds_text(time.queue_wait_s),
         share_text(time.queue_share), *[""] * 5]
    )  # fmt: skip
    return Section(
        "Where did the time go",
        ["column", "attempts", "run", "queue wait", "waiting", "wait p50", "wait p95", "p50", "p95", "p99"],
        rows,
        "run: time attempts held an execution slot; queue wait: time ready but not started (a slot or model "
        "limit was full); both summed over attempts. p50-p99: run time of successful attempts. ctx calls "
        "(<column>:llm) run inside their cell.",
    )


def _concurrency_section(m: RunMetrics) -> Section:
    conc = m.concurrency
    limit = conc.slot_limit
    mean_limit = conc.mean_slot_limit
    shown_mean = [] if mean_limit in (None, limit) else [["  mean limit over the run", number_text(mean_limit)]]
    rows = [
        ["execution slots (limit)", number_text(limit) if limit is not None else "unknown"],
        *shown_mean,
        ["peak cells in flight", f"{conc.peak_in_flight}" + (f" of {limit}" if limit else "")],
        ["mean cells in flight", number_text(conc.mean_in_flight)],
        ["slot utilisation", share_text(conc.slot_utilisation)],
        ["parallel efficiency (useful run time / wall)", number_text(conc.parallel_efficiency)],
        ["  as a share of the limit", share_text(conc.efficiency_share_of_limit)],
        ["peak cells queued", number_text(conc.peak_queued)],
        ["wall time", seconds_text(m.wall_s)],
    ]
    summary = m.summary
    if summary is not None and summary.engine_cpu_s is not None and summary.wall_s:
        # Near 100%, treadle itself bounded the run (very cheap cells), not the endpoint or the cells' waits.
        rows.append(["engine loop busy (its CPU / wall)", share_text(summary.engine_cpu_s / summary.wall_s)])
    for model, info in m.models.items():
        model_limit = None if info.limit is None else info.limit.total
        peak = f"{info.peak_in_flight}" + (f" of {model_limit}" if model_limit else "")
        rows.append([f"model {model}: peak requests in flight", peak])
    return Section("What was my real concurrency", ["measure", "value"], rows, None)


def worker_lines(workers: Sequence[WorkerUse]) -> list[str]:
    """One line per worker for the report's head: `worker 0: 630 attempts, 64.0 calls/s`."""
    return [f"worker {w.worker}: {w.attempts:,} attempts, {w.calls_per_s:,.1f} calls/s" for w in workers]


def _workers_section(m: RunMetrics, workers: Sequence[WorkerUse]) -> Section:
    rows = [
        [f"worker {w.worker}", number_text(w.attempts), number_text(w.calls), number_text(w.calls_per_s),
         number_text(w.slots), number_text(w.peak_in_flight), number_text(w.mean_in_flight)]
        for w in workers
    ]  # fmt: skip
    calls = sum(w.calls for w in workers)
    conc = m.concurrency
    rows.append(
        ["all", number_text(sum(w.attempts for w in workers)), number_text(calls),
         number_text(sum(w.calls_per_s for w in workers)), number_text(sum(w.slots for w in workers)),
         number_text(conc.peak_in_flight), number_text(conc.mean_in_flight)]
    )  # fmt: skip
    return Section(
        "Workers (engine processes)",
        ["worker", "attempts", "model calls", "calls/s", "slots", "peak cells in flight", "mean cells in flight"],
        rows,
        "each worker ran its own row groups; calls/s: its model requests over the run's wall time; slots: "
        "the execution slot lanes its cells ran on (the slot limit is shared out among the workers)",
    )


def _cost_section(m: RunMetrics) -> Section:
    rows = []
    for name, c in m.columns.items():
        if not (c.tokens_in or c.tokens_out or c.model):
            continue
        counted = c.tokens_counted_in
        shown_cost = f"(counted in {counted})" if counted else cost_text(c.cost)
        rows.append([name, c.model or "-", number_text(c.tokens_in), number_text(c.tokens_out), shown_cost])
    tokens, cost = m.tokens, m.cost
    if rows:
        total = cost_text(cost.total) if cost else "-"
        rows.append(["all", "", number_text(tokens.tokens_in), number_text(tokens.tokens_out), total])
    if not rows:
        note = "no model calls: nothing to pay for"
    elif cost is None:
        note = "no prices given: pass per-model prices (input_per_1m, output_per_1m) to see the cost"
    elif cost.unpriced_models:
        note = f"no price for {', '.join(cost.unpriced_models)}: their tokens are not in the cost"
    else:
        note = "cost in the currency of the prices given"
    return Section("What did it cost", ["column", "model", "tokens in", "tokens out", "cost"], rows, note)


def _errors_section(m: RunMetrics) -> Section:
    errors = m.errors
    rows = [
        [error_class, *(number_text(n) for n in (counts.retry, counts.timeout, counts.failed, counts.cancelled))]
        for error_class, counts in errors.by_class.items()
    ]
    note = (
        f"{errors.retries} attempts retried, {errors.timeouts} timed out, {errors.failed_attempts} failed for good"
        if rows
        else "no retries and no errors"
    )
    waited = errors.retry_after
    if waited.waits:
        note += f"; the endpoint asked to wait (Retry-After) {waited.waits} times, {waited.total_s:g} s in all"
    return Section("Retries and errors", ["error class", "retried", "timed out", "failed", "cancelled"], rows, note)


def _throughput_section(m: RunMetrics) -> Section:
    tp = m.throughput
    rate = [n / tp.bucket_s for n in tp.done] if tp.bucket_s else []
    rows = [
        ["cells done per second (mean)", number_text(tp.mean_per_s)],
        [f"peak (per {seconds_text(tp.bucket_s)})", number_text(tp.peak_per_s)],
        ["over time", sparkline(rate)],
    ]
    rows += [
        [f"{name}: rows per second of its batch calls", number_text(c.rows_per_s)]
        for name, c in m.columns.items()
        if c.rows_per_s is not None
    ]
    return Section("Throughput", ["measure", "value"], rows, None)


# ---- from summary.json ---------------------------------------------------------------------------


def _summary_sections(summary: RunSummary) -> list[Section]:
    """What summary.json alone tells (a run without a trace)."""
    rows = []
    for name, column in summary.columns.items():
        cells, latency = column.cells, column.latency_s
        latencies = (seconds_text(q) for q in (latency.p50, latency.p95, latency.p99))
        rows.append([name, number_text(cells.get("done")), number_text(cells.get("failed")), *latencies])
    note = (
        f"parallel efficiency {summary.parallel_efficiency:.2f}; without a trace (run.trace: false) "
        "there is no queue wait, concurrency over time, tokens or errors by class"
    )
    limits = [[name, number_text(info.total), number_text(info.peak)] for name, info in summary.limits.items()]
    return [
        Section("Columns (from summary.json)", ["column", "done", "failed", "p50", "p95", "p99"], rows, note),
        Section("Limits", ["limit", "total", "peak in use"], limits, None),
        *_rate_sections(summary),
    ]


PACE_SOURCES = {"learned": "learned from 429s", "headers": "from x-ratelimit headers", "rpm": "told", "tpm": "told"}
"""How summary.json's `rate_limits.<model>.source` reads."""


def pace_text(paced_rpm: float | None, tpm: float | None = None, source: str | None = None) -> str:
    """`1,180/min learned from 429s`; `-` without a pace."""
    paces = ([] if paced_rpm is None else [f"{paced_rpm:,.0f}/min"]) + (
        [] if tpm is None else [f"{tpm:,.0f} tokens/min"]
    )
    if not paces:
        return "-"
    where = PACE_SOURCES.get(source or "", "")
    return ", ".join(paces) + (f" {where}" if where else "")


def rate_limit_rows(summary: RunSummary | None) -> list[list[str]]:
    """One row per model of summary.json's `rate_limits` (absent in older runs: no rows): requests,
    answers that asked to wait (429s), the final pace and its source, the adaptive value and ceiling."""
    rows = []
    for model, r in ({} if summary is None else summary.rate_limits).items():
        adaptive = f"{r.concurrency} of {r.ceiling}" if r.adaptive else f"off ({r.ceiling})"
        pace = pace_text(r.paced_rpm, r.tpm, r.source)
        rows.append([model, number_text(r.requests), number_text(r.rate_limited), pace, adaptive])
    return rows


def adaptive_change_rows(summary: RunSummary | None, last: int | None = None) -> list[list[str]]:
    """Every adaptive change (or each model's `last` ones): model, time from the start, value, pace, reason."""
    rows = []
    for model, r in ({} if summary is None else summary.rate_limits).items():
        changes = r.changes
        for t, concurrency, paced_rpm, reason in changes[-last:] if last else changes:
            rows.append([model, seconds_text(t), str(concurrency), pace_text(paced_rpm), str(reason)])
    return rows


def first_row_text(summary: RunSummary | None) -> str | None:
    """`first complete row after 0.14 s`, or None when summary.json does not say (older runs)."""
    first = None if summary is None else summary.first_row_s
    return None if first is None else f"first complete row after {seconds_text(first)}"


def _rate_sections(summary: RunSummary | None) -> list[Section]:
    """Each model's requests, 429s and pace, and every adaptive change; nothing for runs without them."""
    rows = rate_limit_rows(summary)
    if not rows:
        return []
    changes = adaptive_change_rows(summary)
    return [
        Section(
            "Rate limits per model",
            ["model", "requests", "asked to wait (429)", "final pace", "adaptive (of ceiling)"],
            rows,
            first_row_text(summary),
        ),
        Section("Adaptive changes", ["model", "at", "adaptive", "pace", "why"], changes, None if changes else "none"),
    ]


def cache_line(cache: Any) -> str | None:
    """summary.json's `cache` in one line, for the TUI's summary and `treadle report`; None without one."""
    if not isinstance(cache, Mapping) or not cache.get("enabled"):
        return None
    saved = cache.get("tokens_saved") or {}
    tokens = sum(int(t.get("prompt", 0)) + int(t.get("completion", 0)) for t in saved.values())
    cost = cache.get("cost_saved")
    text = f"response cache: {cache.get('hits', 0):,} hits, {cache.get('misses', 0):,} misses"
    text += f" ({float(cache.get('hit_rate') or 0):.0%}), {tokens:,} tokens saved"
    return text + (f", cost saved {cost:.4f}" if cost else "")
