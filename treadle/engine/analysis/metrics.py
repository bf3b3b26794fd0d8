"""Metrics of a run, computed from its trace.jsonl and summary.json.

Answers "where did the time go" (queue wait vs run time per column), "what was my real concurrency"
(cells in flight over time, slot utilisation, parallel efficiency) and "what did it cost" (tokens per
column and model, cost from per-model prices), plus throughput, latency percentiles, retries and
errors by class.

Reading trace.jsonl: trace_reader.py. No UI imports here.

Times are seconds since the run started. A resumed run appends its attempts to the same trace.jsonl
with times starting again at 0 (and `seq` starting again at 1): each such session is laid after the
previous one (its times are offset by the previous sessions' spans), so series stay monotonic.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from treadle.engine.errors import ConfigError, Problem
from treadle.engine.trace_reader import TraceColumns, read_trace, trace_columns, trace_path

STATUSES = ("done", "retry", "failed", "timeout", "cancelled")
SLOTS_LIMIT = "slots"
MAX_SERIES_POINTS = 2_000
"""Step series longer than this are reduced to per-bucket maxima (peaks are kept)."""
DEFAULT_BUCKETS = 120
PRICE_KEYS = ("input_per_1m", "output_per_1m")

Prices = Mapping[str, Mapping[str, float]]
"""model name (as in the pipeline's `models:` and trace.jsonl's `model`) -> input_per_1m, output_per_1m."""
LimitHistory = dict[str, list[tuple[float, int]]]
"""limit name -> [(t, total), ...] from t = 0: each total holds until the next."""


# ---- reading a run directory ---------------------------------------------------------------------


def load_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json of a run directory, or None if the run has not written one (yet)."""
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), f"unreadable summary: {exc}")]) from None


def read_limit_history(events: Path | None) -> LimitHistory:
    """`limit_changed` events of an `--events` file: limit -> [(t, total), ...] from t=0.

    The first change gives the value before it (its `old`); exact for a run without resumes.
    """
    history: LimitHistory = {}
    if events is None:
        return history
    with open(events, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("type") != "limit_changed":
                continue
            name = event.get("limit")
            try:
                t, old, new = float(event["t"]), int(event["old"]), int(event["new"])
            except (KeyError, TypeError, ValueError):
                continue
            points = history.setdefault(str(name), [(0.0, old)])
            points.append((t, new))
    return history


def limit_history(
    summary: Mapping[str, Any] | None, events: Path | None = None, session_start: float = 0.0
) -> LimitHistory:
    """Each limit's totals over the run: from the `--events` file if given, else summary.json's
    `limit_history` (the run records every change). That history covers the last session of a resumed
    run: it is laid from `session_start` on, its first totals held from 0."""
    if events is not None:
        return read_limit_history(events)
    history: LimitHistory = {}
    for name, points in ((summary or {}).get("limit_history") or {}).items():
        try:
            parsed = [(float(t), int(total)) for t, total in points]
        except (TypeError, ValueError):
            continue
        if parsed:
            history[str(name)] = [(0.0, parsed[0][1])] + [(session_start + t, v) for t, v in parsed[1:]]
    return history


# ---- series --------------------------------------------------------------------------------------


Floats = Any
"""A sequence of floats numpy takes as it is: an `array('d')` or a float64 ndarray."""


def _np(values: Floats) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def nice_width(span: float, buckets: int) -> float:
    """A round bucket width (1, 2 or 5 x 10^k seconds) giving at most about `buckets` buckets."""
    raw = max(span, 1e-6) / max(buckets, 1)
    power = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if raw <= step * power:
            return step * power
    return 10 * power


def step_series(
    starts: Floats, ends: Floats, max_points: int = MAX_SERIES_POINTS
) -> tuple[list[float], list[int], int, bool]:
    """How many intervals [start, end) are open over time, from their start and end times.

    Returns (times, values, peak, exact): a step series (each value holds until the next time), its
    peak, and whether it is exact; longer series are reduced to the maximum of each time bucket (and
    the value at the bucket's end where the next bucket has no change), so peaks survive.
    An interval ending when another starts does not overlap it.
    """
    s, e = _np(starts), _np(ends)
    if len(s) == 0:
        return [0.0], [0], 0, True
    # At each distinct time: intervals started by then minus those ended by then (the running sum of
    # +1 per start and -1 per end, taken after the last event at that time, so touching intervals do
    # not overlap). Traces list attempts nearly in time order, which the stable sort's runs exploit.
    times = np.concatenate((s, e))
    order = np.argsort(times, kind="stable")
    times = times[order]
    last = np.append(times[1:] != times[:-1], True)
    times = times[last]
    values = np.cumsum(np.where(order < len(s), 1, -1))[last]
    peak = int(values.max())
    first = float(times[0])
    if len(times) + 1 <= max_points:
        out_t = [0.0] if first > 0 else []
        out_v = [0] if first > 0 else []
        return out_t + times.tolist(), out_v + values.tolist(), peak, True
    span = float(times[-1]) - first
    width = nice_width(span, max(max_points // 2 - 1, 1))
    index = np.floor((times - first) / width).astype(np.int64)
    bounds = np.flatnonzero(np.append(True, index[1:] != index[:-1]))
    maxima = np.maximum.reduceat(values, bounds)
    lasts = values[np.append(bounds[1:] - 1, len(values) - 1)]
    buckets = index[bounds]
    out_t, out_v = ([0.0], [0]) if first > 0 else ([], [])
    for i, bucket in enumerate(buckets.tolist()):
        out_t.append(first + bucket * width)
        out_v.append(int(maxima[i]))
        following = int(buckets[i + 1]) if i + 1 < len(buckets) else None
        if following != bucket + 1 and int(lasts[i]) != int(maxima[i]):
            out_t.append(first + (bucket + 1) * width)
            out_v.append(int(lasts[i]))
    return out_t, out_v, peak, False


def percentiles(values: Floats, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    data = _np(values)
    if len(data) == 0:
        return {f"p{q:g}": 0.0 for q in qs}
    return {f"p{q:g}": round(float(v), 6) for q, v in zip(qs, np.percentile(data, qs), strict=True)}


def _sum(values: Floats) -> float:
    return float(_np(values).sum())


# ---- prices and limits ---------------------------------------------------------------------------


def _check_prices(prices: Prices | None) -> dict[str, tuple[float, float]]:
    checked: dict[str, tuple[float, float]] = {}
    for model, price in (prices or {}).items():
        if not isinstance(price, Mapping) or any(k not in price for k in PRICE_KEYS):
            raise ValueError(f"price of model {model!r} needs {' and '.join(PRICE_KEYS)} (per 1M tokens)")
        try:
            values = tuple(float(price[k]) for k in PRICE_KEYS)
        except (TypeError, ValueError):
            raise ValueError(f"price of model {model!r}: {dict(price)!r} is not a number per 1M tokens") from None
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"price of model {model!r} must be finite and >= 0, got {dict(price)!r}")
        checked[str(model)] = (values[0], values[1])
    return checked


def prices_of(models: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The prices a pipeline's `models:` give (ModelConfig.prices), by model name."""
    return {name: model.prices.model_dump() for name, model in models.items() if model.prices is not None}


def pipeline_prices(summary: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """The per-model prices the run's pipeline gave (summary.json's `metrics.cost.prices`), or {}."""
    cost = ((summary or {}).get("metrics") or {}).get("cost") or {}
    prices = cost.get("prices") if isinstance(cost, Mapping) else None
    return dict(prices) if isinstance(prices, Mapping) else {}


def _cost(tokens_in: int, tokens_out: int, price: tuple[float, float]) -> float:
    return tokens_in / 1e6 * price[0] + tokens_out / 1e6 * price[1]


def _limit_info(summary: dict | None, name: str) -> dict[str, int] | None:
    limits = (summary or {}).get("limits") or {}
    info = limits.get(name)
    if not isinstance(info, dict):
        return None
    return {"total": int(info.get("total") or 0), "peak": int(info.get("peak") or 0)}


def _limit_series(name: str, summary: dict | None, history: LimitHistory, wall: float) -> list[list[float]] | None:
    """[[t, total], ...] over the run: from the recorded limit changes if known, else constant."""
    if name in history:
        points = [[round(t, 6), v] for t, v in history[name]]
    else:
        info = _limit_info(summary, name)
        if info is None:
            return None
        points = [[0.0, info["total"]]]
    points.append([round(max(wall, points[-1][0]), 6), points[-1][1]])
    return points


def _capacity_s(points: list[list[float]], wall: float) -> float:
    """Slot-seconds a step series of a limit offered over [0, wall]."""
    total = 0.0
    for (t, value), (t_next, _) in itertools.pairwise(points):
        total += value * max(0.0, min(t_next, wall) - t)
    return total


def _series(times: list[float], values: list[int]) -> dict[str, list]:
    return {"t": [round(t, 6) for t in times], "v": values}


# ---- the metrics ---------------------------------------------------------------------------------


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
    """Metrics of a run directory (finished, interrupted or still running) as a JSON-ready dict.

    `prices`: per model name, {"input_per_1m": USD, "output_per_1m": USD}, over the prices the
    pipeline gave (summary.json); models without a price have no cost. `events`: the run's `--events`
    file, for limit changes (else summary.json's `limit_history`; a run older than it: the final
    totals). `summary`: summary.json's content, when the caller has it (else read). `trace`: the
    trace, when the caller has read it (else trace.jsonl is read). See docs/TRACING.md for every key.
    """
    run_dir = Path(run_dir)
    if summary is None:
        summary = load_summary(run_dir)
    price_of = _check_prices({**pipeline_prices(summary), **(prices or {})})
    path = trace_path(run_dir)
    has_trace = trace is not None or path.exists()
    if summary is None and not has_trace:
        raise ConfigError([Problem(str(run_dir), "not a run directory with results (no summary.json, no trace.jsonl)")])
    tc = trace if trace is not None else read_trace(path)

    names, codes = tc.names, tc.codes
    n = tc.lines
    t_ready, t_start, t_end = tc.t_ready, tc.t_start, tc.t_end
    run_s = t_end - t_start
    # Each line's status as an index into STATUSES (-1: another or none).
    status_index = np.array([STATUSES.index(s) if s in STATUSES else -1 for s in names["status"]], dtype=np.int64)
    status = status_index[codes["status"]] if n else np.zeros(0, dtype=np.int64)
    column_code = codes["column"]
    n_columns = len(names["column"])
    # Lines grouped by column, in file order within each group; a column's first line gives its model
    # and parent (a `<column>:llm` ctx call has a parent: it ran inside its cell's slot).
    order = np.argsort(column_code, kind="stable")
    bounds = np.searchsorted(column_code[order], np.arange(n_columns + 1))
    groups = [order[bounds[c] : bounds[c + 1]] for c in range(n_columns)]
    first_model = [names["model"][codes["model"][g[0]]] for g in groups]
    first_parent = [names["parent"][codes["parent"][g[0]]] for g in groups]
    child_column = np.array([p is not None for p in first_parent], dtype=bool)
    own = ~child_column[column_code] if n else np.zeros(0, dtype=bool)

    column_rows: dict[str, Any] = {}
    run_done: list[np.ndarray] = []
    parents_with_calls = {p for p in first_parent if p is not None}
    total_in = total_out = 0
    by_model: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names["column"]):
        g = groups[c]
        child = bool(child_column[c])
        model, parent = first_model[c], first_parent[c]
        g_status = status[g]
        by_status = dict(
            zip(STATUSES, np.bincount(g_status[g_status >= 0], minlength=len(STATUSES)).tolist(), strict=True)
        )
        g_run = run_s[g]
        done_run = g_run[g_status == 0]
        run_done.append(done_run)
        tokens_in, tokens_out = int(tc.tokens_in[g].sum()), int(tc.tokens_out[g].sum())
        # A python column whose function called models through ctx carries its calls' tokens again in
        # `<column>__usage`: count them once, on the `<column>:llm` calls.
        aggregated = not child and name in parents_with_calls
        if child:
            queue_wait = None
            total_run = _sum(done_run)
        else:
            queue = t_start[g] - t_ready[g]
            queue_wait = {"total": round(float(queue.sum()), 6), **percentiles(queue, (50, 95)), "mean": _mean(queue)}
            total_run = float(np.cumsum(g_run)[-1]) if len(g_run) else 0.0
        row = {
            "model": model,
            "parent": parent,
            "attempts": sum(by_status.values()),
            **by_status,
            "latency_s": {**percentiles(done_run), "mean": _mean(done_run), "max": _max(done_run)},
            "run_s": {"total": round(total_run, 6)},
            "queue_wait_s": queue_wait,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "tokens_counted_in": f"{name}:llm" if aggregated else None,
            "cost": None,
        }
        if not aggregated:
            total_in += tokens_in
            total_out += tokens_out
            if model is not None:
                usage = by_model.setdefault(model, {"tokens_in": 0, "tokens_out": 0})
                usage["tokens_in"] += tokens_in
                usage["tokens_out"] += tokens_out
                if model in price_of:
                    row["cost"] = round(_cost(tokens_in, tokens_out, price_of[model]), 6)
        column_rows[name] = row

    # Wall time: the sessions before the last as traced, the last as summary.json measured it.
    wall = tc.span_s
    last_start = tc.session_starts[-1] if tc.session_starts else 0.0
    if summary is not None:
        wall = max(wall, last_start + float(summary.get("wall_s") or 0.0))

    cell_starts, cell_ends, cell_ready = t_start[own], t_end[own], t_ready[own]
    busy_s = _sum(cell_ends) - _sum(cell_starts)
    useful_s = sum(_sum(run_done[c]) for c in range(n_columns) if not child_column[c])
    queue_total = _sum(cell_starts) - _sum(cell_ready)
    in_t, in_v, peak_in_flight, in_exact = step_series(cell_starts, cell_ends, max_points)
    q_t, q_v, peak_queued, q_exact = step_series(cell_ready, cell_starts, max_points)
    history = limit_history(summary, events, last_start)
    slot_info = _limit_info(summary, SLOTS_LIMIT)
    slot_limit = None if slot_info is None else max(slot_info["total"], slot_info["peak"])
    efficiency = useful_s / wall if wall > 0 else 0.0
    # With the limit's history, capacity is what the limit offered over time; without, its largest value.
    slot_series = _limit_series(SLOTS_LIMIT, summary, history, wall) if SLOTS_LIMIT in history else None
    capacity_s = _capacity_s(slot_series, wall) if slot_series else (slot_limit or 0) * wall

    model_code = codes["model"]
    model_rows: dict[str, Any] = {}
    cost_total = 0.0
    unpriced = []
    requests_of = {m: np.flatnonzero(model_code == code) for code, m in enumerate(names["model"]) if m is not None}
    for model in sorted(set(requests_of) | set(by_model)):
        lines = requests_of.get(model, np.zeros(0, dtype=np.int64))
        starts, ends = t_start[lines], t_end[lines]
        m_t, m_v, m_peak, m_exact = step_series(starts, ends, max_points)
        usage = by_model.get(model, {"tokens_in": 0, "tokens_out": 0})
        cost = None
        if model in price_of:
            cost = round(_cost(usage["tokens_in"], usage["tokens_out"], price_of[model]), 6)
            cost_total += cost
        elif usage["tokens_in"] or usage["tokens_out"]:
            unpriced.append(model)
        limit_name = f"model:{model}"
        model_rows[model] = {
            "requests": len(starts),
            "busy_s": round(_sum(ends) - _sum(starts), 6),
            "peak_in_flight": m_peak,
            "limit": _limit_info(summary, limit_name),
            "limit_series": _limit_series(limit_name, summary, history, wall),
            "in_flight": {**_series(m_t, m_v), "exact": m_exact},
            **usage,
            "cost": cost,
        }

    width = nice_width(wall, buckets)
    n_buckets = max(1, math.ceil(wall / width - 1e-9)) if wall > 0 else 1
    done_ends = t_end[own & (status == 0)]
    done_hist = _histogram(done_ends, width, n_buckets)
    failed_hist = _histogram(t_end[own & (status == 2)], width, n_buckets)
    by_status_total = {
        s: sum(column_rows[c][s] for i, c in enumerate(column_rows) if not child_column[i]) for s in STATUSES
    }
    calls_total = {s: sum(column_rows[c][s] for i, c in enumerate(column_rows) if child_column[i]) for s in STATUSES}
    return {
        "run_dir": str(run_dir),
        "name": (summary or {}).get("name"),
        "status": (summary or {}).get("status", "unknown"),
        "has_trace": has_trace,
        "trace": {"lines": tc.lines, "skipped": tc.skipped, "sessions": tc.sessions},
        "wall_s": round(wall, 6),
        "rows": (summary or {}).get("rows"),
        "cells": (summary or {}).get("cells"),
        "summary": summary,
        "attempts": {"total": sum(by_status_total.values()), **by_status_total},
        "calls": {"total": sum(calls_total.values()), **calls_total},
        "time": {
            "run_s": round(busy_s, 6),
            "useful_run_s": round(useful_s, 6),
            "queue_wait_s": round(queue_total, 6),
            "queue_share": round(queue_total / (queue_total + busy_s), 6) if queue_total + busy_s > 0 else 0.0,
        },
        "concurrency": {
            "slot_limit": slot_limit,
            "slot_limit_final": None if slot_info is None else slot_info["total"],
            "slot_peak": None if slot_info is None else slot_info["peak"],
            "mean_slot_limit": round(capacity_s / wall, 6) if capacity_s and wall > 0 else slot_limit,
            "lanes_used": int(np.unique(tc.slot[own & tc.has_slot]).size),
            "peak_in_flight": peak_in_flight,
            "mean_in_flight": round(busy_s / wall, 6) if wall > 0 else 0.0,
            "busy_slot_s": round(busy_s, 6),
            "slot_utilisation": round(busy_s / capacity_s, 6) if capacity_s > 0 else None,
            "parallel_efficiency": round(efficiency, 6),
            "efficiency_share_of_limit": round(useful_s / capacity_s, 6) if capacity_s > 0 else None,
            "peak_queued": peak_queued,
        },
        "in_flight": {**_series(in_t, in_v), "exact": in_exact},
        "queued": {**_series(q_t, q_v), "exact": q_exact},
        "limits": {
            name: {**info, "series": _limit_series(name, summary, history, wall)}
            for name, info in ((summary or {}).get("limits") or {}).items()
        },
        "throughput": {
            "bucket_s": width,
            "t": [round(i * width, 6) for i in range(n_buckets)],
            "done": done_hist,
            "failed": failed_hist,
            "mean_per_s": round(len(done_ends) / wall, 6) if wall > 0 else 0.0,
            "peak_per_s": round(max(done_hist, default=0) / width, 6),
        },
        "columns": column_rows,
        "models": model_rows,
        "errors": _errors(tc, by_status_total, calls_total),
        "tokens": {"in": total_in, "out": total_out},
        "cost": ({"total": round(cost_total, 6), "unpriced_models": unpriced} if price_of else None),
    }


def _errors(tc: TraceColumns, by_status: dict[str, int], calls: dict[str, int]) -> dict[str, Any]:
    """Attempts that did not succeed, by error class (or by status when they carry no class)."""
    status_names, error_names = tc.names["status"], tc.names["error_class"]
    not_done = np.array([s not in ("done", None) for s in status_names], dtype=bool)
    has_class = np.array([e is not None for e in error_names], dtype=bool)
    status_code, error_code = tc.codes["status"], tc.codes["error_class"]
    errors: dict[str, dict[str, int]] = {}
    if tc.lines:
        failed = not_done[status_code] | has_class[error_code]
        pairs = error_code[failed].astype(np.int64) * max(len(status_names), 1) + status_code[failed]
        unique, first, counts = np.unique(pairs, return_index=True, return_counts=True)
        for i in np.argsort(first, kind="stable"):  # classes in the order they first appear
            error_class = error_names[unique[i] // max(len(status_names), 1)]
            status = status_names[unique[i] % max(len(status_names), 1)]
            per_class = errors.setdefault(error_class or status or "unknown", dict.fromkeys(STATUSES[1:], 0))
            if status in per_class:
                per_class[status] += int(counts[i])
    waited = tc.retry_after[tc.retry_after > 0]
    return {
        "by_class": dict(sorted(errors.items(), key=lambda kv: -sum(kv[1].values()))),
        "retry_after": {"waits": len(waited), "total_s": round(float(waited.sum()), 3)},
        "retries": by_status["retry"] + calls["retry"],
        "timeouts": by_status["timeout"] + calls["timeout"],
        "failed_attempts": by_status["failed"] + calls["failed"],
    }


def _mean(values: Floats) -> float:
    return round(_sum(values) / len(values), 6) if len(values) else 0.0


def _max(values: Floats) -> float:
    return round(float(_np(values).max()), 6) if len(values) else 0.0


def _histogram(ends: Floats, width: float, n_buckets: int) -> list[int]:
    data = _np(ends)
    if len(data) == 0:
        return [0] * n_buckets
    index = np.minimum(np.floor(data / width).astype(np.int64), n_buckets - 1)
    return np.bincount(np.maximum(index, 0), minlength=n_buckets).tolist()


# ---- summary.json's part -------------------------------------------------------------------------

NO_TRACE_NOTE = "no metrics: they are computed from trace.jsonl, and this run had run.trace: false"
_CONCURRENCY_KEYS = (
    "slot_limit",
    "mean_slot_limit",
    "peak_in_flight",
    "mean_in_flight",
    "busy_slot_s",
    "slot_utilisation",
    "parallel_efficiency",
    "efficiency_share_of_limit",
    "peak_queued",
)


def summary_metrics(
    run_dir: Path, summary: dict[str, Any], prices: Prices | None, trace: TraceColumns
) -> dict[str, Any]:
    """summary.json's `metrics`: the compact part of `run_metrics` (no step series; throughput in at
    most DEFAULT_BUCKETS buckets). `prices`: the pipeline's, kept in `cost.prices` for `treadle report`."""
    m = run_metrics(run_dir, prices, summary=summary, trace=trace)
    concurrency = m["concurrency"]
    throughput = m["throughput"]
    columns = {}
    for name, c in m["columns"].items():
        latency = c["latency_s"]
        columns[name] = {
            "model": c["model"],
            "attempts": c["attempts"],
            **{s: c[s] for s in STATUSES},
            "queue_wait_s": c["queue_wait_s"],
            "run_s": {
                "total": c["run_s"]["total"],
                "mean": latency["mean"],
                "p50": latency["p50"],
                "p95": latency["p95"],
            },
            "tokens_in": c["tokens_in"],
            "tokens_out": c["tokens_out"],
            "cost": c["cost"],
            **({"tokens_counted_in": c["tokens_counted_in"]} if c["tokens_counted_in"] else {}),
        }
    models = {
        name: {k: model[k] for k in ("requests", "busy_s", "peak_in_flight", "tokens_in", "tokens_out", "cost")}
        for name, model in m["models"].items()
    }
    cost = m["cost"]
    return {
        "source": "trace.jsonl",
        "attempts": m["attempts"],
        "calls": m["calls"],
        "time": m["time"],
        "concurrency": {k: concurrency[k] for k in _CONCURRENCY_KEYS},
        "throughput": {k: throughput[k] for k in ("bucket_s", "mean_per_s", "peak_per_s", "done", "failed")},
        "columns": columns,
        "models": models,
        "errors": m["errors"],
        "tokens": m["tokens"],
        "cost": None if cost is None else {**cost, "prices": {k: dict(v) for k, v in (prices or {}).items()}},
    }


def live_metrics(
    run_dir: Path,
    summary: dict[str, Any],
    prices: Prices | None,
    records: list[dict[str, Any]],
    attempts: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """`summary_metrics` while a run goes, from its most recent attempts (the trace ring buffer, as
    TaskTrace dicts): every attempt until the ring is full, then a window from the earliest `t_ready`
    of those it holds (`window`: `from_s`, `attempts` in it, of all `attempts` so far)."""
    start = min((r["t_ready"] for r in records), default=0.0) if attempts > len(records) else 0.0
    history = limit_history(summary)
    if start > 0:
        records = [
            {**r, "t_ready": r["t_ready"] - start, "t_start": r["t_start"] - start, "t_end": r["t_end"] - start}
            for r in records
        ]
        history = {name: _from(points, start) for name, points in history.items()}
    summary = {
        **summary,
        "wall_s": max(elapsed_s - start, 0.0),
        "limit_history": {k: [list(p) for p in v] for k, v in history.items()},
    }
    metrics = summary_metrics(run_dir, summary, prices, trace_columns(records))
    metrics["source"] = "trace ring buffer"
    metrics["window"] = {"from_s": round(start, 3), "attempts": len(records), "of": attempts}
    return metrics


def _from(points: list[tuple[float, int]], start: float) -> list[tuple[float, int]]:
    """A limit's history seen from `start`: the total then in force at 0, later changes shifted."""
    before = [v for t, v in points if t <= start]
    return [(0.0, before[-1] if before else points[0][1])] + [(t - start, v) for t, v in points if t > start]
