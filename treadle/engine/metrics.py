"""Metrics of a run, computed from its trace.jsonl (streamed, one pass) and summary.json.

Answers "where did the time go" (queue wait vs run time per column), "what was my real concurrency"
(cells in flight over time, slot utilisation, parallel efficiency) and "what did it cost" (tokens per
column and model, cost from per-model prices), plus throughput, latency percentiles, retries and
errors by class.

Memory: one pass over trace.jsonl keeps a few floats per attempt in `array('d')` (about 50 bytes per
trace line: 1M attempts ~ 50 MB) and nothing else per line. No UI imports here.

Times are seconds since the run started. A resumed run appends its attempts to the same trace.jsonl
with times starting again at 0 (and `seq` starting again at 1): each such session is laid after the
previous one (its times are offset by the previous sessions' spans), so series stay monotonic.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from treadle.engine.errors import ConfigError, Problem

STATUSES = ("done", "retry", "failed", "timeout", "cancelled")
SLOTS_LIMIT = "slots"
MAX_SERIES_POINTS = 2_000
"""Step series longer than this are reduced to per-bucket maxima (peaks are kept)."""
DEFAULT_BUCKETS = 120
PRICE_KEYS = ("input_per_1m", "output_per_1m")

Prices = Mapping[str, Mapping[str, float]]
"""model name (as in the pipeline's `models:` and trace.jsonl's `model`) -> input_per_1m, output_per_1m."""


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


class TraceReader:
    """Iterates trace.jsonl line by line as dicts, sessions (resumes) laid end to end.

    After iteration: `lines` read, `skipped` unparsable lines (a torn last line after a crash),
    `sessions` and `span_s` (the end of the last attempt, offsets included).
    """

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path = Path(path)
        self.limit = limit
        """Stop after this many lines (a second pass over a file a live run is still appending to)."""
        self.lines = 0
        self.skipped = 0
        self.sessions = 0
        self.session_starts: list[float] = []
        """Offset of each session on the common time axis."""
        self.span_s = 0.0
        self._session_end = 0.0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        offset = 0.0
        last_seq = None
        session_end = 0.0
        loads = json.loads
        limit = self.limit
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if limit is not None and self.lines >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    trace = loads(line)
                    seq = trace["seq"]
                    t_ready = float(trace["t_ready"])
                    t_start = float(trace["t_start"])
                    t_end = float(trace["t_end"])
                except (ValueError, KeyError, TypeError):
                    self.skipped += 1
                    continue
                if last_seq is None or seq <= last_seq:
                    # The first line, or a resumed run starting again at seq 1 and time 0.
                    if last_seq is not None:
                        offset += session_end
                    session_end = 0.0
                    self.sessions += 1
                    self.session_starts.append(offset)
                last_seq = seq
                if t_end > session_end:
                    session_end = t_end
                if offset:
                    t_ready += offset
                    t_start += offset
                    t_end += offset
                trace["t_ready"], trace["t_start"], trace["t_end"] = t_ready, t_start, t_end
                trace["session"] = self.sessions - 1
                self.lines += 1
                yield trace
        self._session_end = session_end
        self.span_s = offset + session_end

    @property
    def last_session_span_s(self) -> float:
        return self._session_end


def trace_path(run_dir: Path) -> Path:
    return Path(run_dir) / "trace.jsonl"


def read_limit_history(events: Path | None) -> dict[str, list[tuple[float, int]]]:
    """`limit_changed` events of an `--events` file: limit -> [(t, total), ...] from t=0.

    The first change gives the value before it (its `old`); exact for a run without resumes.
    """
    history: dict[str, list[tuple[float, int]]] = {}
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


# ---- series --------------------------------------------------------------------------------------


def _np(values: array) -> np.ndarray:
    return np.frombuffer(values, dtype=np.float64) if len(values) else np.zeros(0, dtype=np.float64)


def nice_width(span: float, buckets: int) -> float:
    """A round bucket width (1, 2 or 5 x 10^k seconds) giving at most about `buckets` buckets."""
    raw = max(span, 1e-6) / max(buckets, 1)
    power = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if raw <= step * power:
            return step * power
    return 10 * power


def step_series(
    starts: array, ends: array, max_points: int = MAX_SERIES_POINTS
) -> tuple[list[float], list[int], int, bool]:
    """How many intervals [start, end) are open over time, from their start and end times.

    Returns (times, values, peak, exact): a step series (each value holds until the next time), its
    peak, and whether it is exact; longer series are reduced to the maximum of each time bucket (and
    the value at the bucket's end where the next bucket has no change), so peaks survive.
    An interval ending when another starts does not overlap it.
    """
    s, e = _np(starts), _np(ends)
    n = len(s)
    if n == 0:
        return [0.0], [0], 0, True
    times = np.concatenate((s, e))
    deltas = np.concatenate((np.ones(n, dtype=np.int64), np.full(n, -1, dtype=np.int64)))
    order = np.lexsort((deltas, times))  # by time; at equal times ends (-1) before starts (+1)
    times = times[order]
    values = np.cumsum(deltas[order])
    del order, deltas
    peak = int(values.max())
    keep = np.append(times[1:] != times[:-1], True)  # the last value at each distinct time
    times, values = times[keep], values[keep]
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


def percentiles(values: array, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    data = _np(values)
    if len(data) == 0:
        return {f"p{q:g}": 0.0 for q in qs}
    return {f"p{q:g}": round(float(v), 6) for q, v in zip(qs, np.percentile(data, qs), strict=True)}


def _sum(values: array) -> float:
    return float(_np(values).sum())


# ---- accumulators --------------------------------------------------------------------------------


class _Column:
    __slots__ = ("by_status", "child", "model", "parent", "queue", "run_all", "run_done", "tokens_in", "tokens_out")

    def __init__(self, model: str | None, parent: str | None) -> None:
        self.model = model
        self.parent = parent
        self.child = parent is not None
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.run_done = array("d")
        self.run_all = 0.0
        self.queue = array("d")
        self.tokens_in = 0
        self.tokens_out = 0


class _Intervals:
    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts = array("d")
        self.ends = array("d")

    def add(self, start: float, end: float) -> None:
        self.starts.append(start)
        self.ends.append(end)


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


def _cost(tokens_in: int, tokens_out: int, price: tuple[float, float]) -> float:
    return tokens_in / 1e6 * price[0] + tokens_out / 1e6 * price[1]


def _limit_info(summary: dict | None, name: str) -> dict[str, int] | None:
    limits = (summary or {}).get("limits") or {}
    info = limits.get(name)
    if not isinstance(info, dict):
        return None
    return {"total": int(info.get("total") or 0), "peak": int(info.get("peak") or 0)}


def _limit_series(
    name: str, summary: dict | None, history: dict[str, list[tuple[float, int]]], wall: float
) -> list[list[float]] | None:
    """[[t, total], ...] over the run: from the events' limit changes if given, else constant."""
    if name in history:
        points = [[round(t, 6), v] for t, v in history[name]]
    else:
        info = _limit_info(summary, name)
        if info is None:
            return None
        points = [[0.0, info["total"]]]
    points.append([round(wall, 6), points[-1][1]])
    return points


def _series(times: list[float], values: list[int]) -> dict[str, list]:
    return {"t": [round(t, 6) for t in times], "v": values}


# ---- the metrics ---------------------------------------------------------------------------------


def run_metrics(
    run_dir: Path,
    prices: Prices | None = None,
    *,
    events: Path | None = None,
    buckets: int = DEFAULT_BUCKETS,
    max_points: int = MAX_SERIES_POINTS,
) -> dict[str, Any]:
    """Metrics of a run directory (finished, interrupted or still running) as a JSON-ready dict.

    `prices`: per model name, {"input_per_1m": USD, "output_per_1m": USD}; models without a price
    have no cost. `events`: the run's `--events` file, for limits that changed during the run
    (without it a limit is its final total from summary.json). See docs/TRACING.md for every key.
    """
    run_dir = Path(run_dir)
    price_of = _check_prices(prices)
    summary = load_summary(run_dir)
    path = trace_path(run_dir)
    has_trace = path.exists()
    if summary is None and not has_trace:
        raise ConfigError([Problem(str(run_dir), "not a run directory with results (no summary.json, no trace.jsonl)")])

    columns: dict[str, _Column] = {}
    cells = _Intervals()  # own attempts (they hold an execution slot)
    queued = _Intervals()  # own attempts between ready and start
    models: dict[str, _Intervals] = {}  # model requests: llm column attempts and ctx calls
    done_ends = array("d")
    failed_ends = array("d")
    errors: dict[str, dict[str, int]] = {}
    slots_seen: set[int] = set()
    reader = TraceReader(path)
    if has_trace:
        for t in reader:
            name = t.get("column")
            column = columns.get(name)
            if column is None:
                column = columns[name] = _Column(t.get("model"), t.get("parent"))
            status = t.get("status")
            if status in column.by_status:
                column.by_status[status] += 1
            t_ready, t_start, t_end = t["t_ready"], t["t_start"], t["t_end"]
            run_s = t_end - t_start
            model = t.get("model")
            if model is not None:
                requests = models.get(model)
                if requests is None:
                    requests = models[model] = _Intervals()
                requests.add(t_start, t_end)
            if not column.child:
                cells.add(t_start, t_end)
                queued.add(t_ready, t_start)
                column.queue.append(t_start - t_ready)
                column.run_all += run_s
                slot = t.get("slot")
                if isinstance(slot, int):
                    slots_seen.add(slot)
                if status == "done":
                    column.run_done.append(run_s)
                    done_ends.append(t_end)
                elif status == "failed":
                    failed_ends.append(t_end)
            elif status == "done":
                column.run_done.append(run_s)
            tokens_in, tokens_out = t.get("tokens_in"), t.get("tokens_out")
            if tokens_in:
                column.tokens_in += int(tokens_in)
            if tokens_out:
                column.tokens_out += int(tokens_out)
            error_class = t.get("error_class")
            if error_class is not None or status not in ("done", None):
                per_class = errors.setdefault(error_class or status or "unknown", dict.fromkeys(STATUSES[1:], 0))
                if status in per_class:
                    per_class[status] += 1

    # Wall time: the sessions before the last as traced, the last as summary.json measured it.
    wall = reader.span_s
    if summary is not None:
        last_start = reader.session_starts[-1] if reader.session_starts else 0.0
        wall = max(wall, last_start + float(summary.get("wall_s") or 0.0))

    # A python column whose function called models through ctx carries its calls' tokens again in
    # `<column>__usage`: count them once, on the `<column>:llm` calls.
    parents_with_calls = {c.parent for c in columns.values() if c.child}
    column_rows: dict[str, Any] = {}
    total_in = total_out = 0
    by_model: dict[str, dict[str, Any]] = {}
    for name, column in columns.items():
        aggregated = not column.child and name in parents_with_calls
        queue = _np(column.queue)
        row = {
            "model": column.model,
            "parent": column.parent,
            "attempts": sum(column.by_status.values()),
            **column.by_status,
            "latency_s": {**percentiles(column.run_done), "mean": _mean(column.run_done), "max": _max(column.run_done)},
            "run_s": {"total": round(_sum(column.run_done) if column.child else column.run_all, 6)},
            "queue_wait_s": (
                {
                    "total": round(float(queue.sum()), 6),
                    **percentiles(column.queue, (50, 95)),
                    "mean": _mean(column.queue),
                }
                if not column.child
                else None
            ),
            "tokens_in": column.tokens_in,
            "tokens_out": column.tokens_out,
            "tokens_counted_in": f"{name}:llm" if aggregated else None,
            "cost": None,
        }
        if not aggregated:
            total_in += column.tokens_in
            total_out += column.tokens_out
            if column.model is not None:
                usage = by_model.setdefault(column.model, {"tokens_in": 0, "tokens_out": 0})
                usage["tokens_in"] += column.tokens_in
                usage["tokens_out"] += column.tokens_out
                if column.model in price_of:
                    row["cost"] = round(_cost(column.tokens_in, column.tokens_out, price_of[column.model]), 6)
        column_rows[name] = row

    busy_s = _sum(cells.ends) - _sum(cells.starts)
    useful_s = sum(_sum(c.run_done) for c in columns.values() if not c.child)
    queue_total = _sum(queued.ends) - _sum(queued.starts)
    in_t, in_v, peak_in_flight, in_exact = step_series(cells.starts, cells.ends, max_points)
    q_t, q_v, peak_queued, q_exact = step_series(queued.starts, queued.ends, max_points)
    history = read_limit_history(events)
    slot_info = _limit_info(summary, SLOTS_LIMIT)
    slot_limit = None if slot_info is None else max(slot_info["total"], slot_info["peak"])
    efficiency = useful_s / wall if wall > 0 else 0.0

    model_rows: dict[str, Any] = {}
    cost_total = 0.0
    unpriced = []
    for model in sorted(set(models) | set(by_model)):
        requests = models.get(model) or _Intervals()
        m_t, m_v, m_peak, m_exact = step_series(requests.starts, requests.ends, max_points)
        usage = by_model.get(model, {"tokens_in": 0, "tokens_out": 0})
        cost = None
        if model in price_of:
            cost = round(_cost(usage["tokens_in"], usage["tokens_out"], price_of[model]), 6)
            cost_total += cost
        elif usage["tokens_in"] or usage["tokens_out"]:
            unpriced.append(model)
        limit_name = f"model:{model}"
        model_rows[model] = {
            "requests": len(requests.starts),
            "busy_s": round(_sum(requests.ends) - _sum(requests.starts), 6),
            "peak_in_flight": m_peak,
            "limit": _limit_info(summary, limit_name),
            "limit_series": _limit_series(limit_name, summary, history, wall),
            "in_flight": {**_series(m_t, m_v), "exact": m_exact},
            **usage,
            "cost": cost,
        }

    width = nice_width(wall, buckets)
    n_buckets = max(1, math.ceil(wall / width - 1e-9)) if wall > 0 else 1
    done_hist = _histogram(done_ends, width, n_buckets)
    failed_hist = _histogram(failed_ends, width, n_buckets)
    by_status_total = {s: sum(c.by_status[s] for c in columns.values() if not c.child) for s in STATUSES}
    calls_total = {s: sum(c.by_status[s] for c in columns.values() if c.child) for s in STATUSES}
    return {
        "run_dir": str(run_dir),
        "name": (summary or {}).get("name"),
        "status": (summary or {}).get("status", "unknown"),
        "has_trace": has_trace,
        "trace": {"lines": reader.lines, "skipped": reader.skipped, "sessions": reader.sessions},
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
            "lanes_used": len(slots_seen),
            "peak_in_flight": peak_in_flight,
            "mean_in_flight": round(busy_s / wall, 6) if wall > 0 else 0.0,
            "busy_slot_s": round(busy_s, 6),
            "slot_utilisation": round(busy_s / (slot_limit * wall), 6) if slot_limit and wall > 0 else None,
            "parallel_efficiency": round(efficiency, 6),
            "efficiency_share_of_limit": round(efficiency / slot_limit, 6) if slot_limit else None,
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
        "errors": {
            "by_class": dict(sorted(errors.items(), key=lambda kv: -sum(kv[1].values()))),
            "retries": by_status_total["retry"] + calls_total["retry"],
            "timeouts": by_status_total["timeout"] + calls_total["timeout"],
            "failed_attempts": by_status_total["failed"] + calls_total["failed"],
        },
        "tokens": {"in": total_in, "out": total_out},
        "cost": ({"total": round(cost_total, 6), "unpriced_models": unpriced} if price_of else None),
    }


def _mean(values: array) -> float:
    return round(_sum(values) / len(values), 6) if len(values) else 0.0


def _max(values: array) -> float:
    return round(float(_np(values).max()), 6) if len(values) else 0.0


def _histogram(ends: array, width: float, n_buckets: int) -> list[int]:
    data = _np(ends)
    if len(data) == 0:
        return [0] * n_buckets
    index = np.minimum(np.floor(data / width).astype(np.int64), n_buckets - 1)
    return np.bincount(np.maximum(index, 0), minlength=n_buckets).tolist()
