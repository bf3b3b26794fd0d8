"""Metrics of a run, computed from its trace.jsonl and summary.json.

Answers "where did the time go" (queue wait vs run time per column), "what was my real concurrency"
(cells in flight over time, slot utilisation, parallel efficiency) and "what did it cost" (tokens per
column and model, cost from per-model prices), plus throughput, latency percentiles, retries and
errors by class.

Reading: trace.jsonl is parsed by pyarrow's JSON reader into columns (only the fields used here) and
aggregated with numpy (~0.15 s per 200,000 attempts: the end of every run pays it for summary.json's
`metrics`). A file pyarrow cannot read (an unparsable line in the middle, a field of an odd type) is
read again line by line, with the same result. Memory: about 90 bytes per attempt (1M ~ 90 MB) plus
one block of the file; files over STREAM_ABOVE_BYTES are read block by block. No UI imports here.

Times are seconds since the run started. A resumed run appends its attempts to the same trace.jsonl
with times starting again at 0 (and `seq` starting again at 1): each such session is laid after the
previous one (its times are offset by the previous sessions' spans), so series stay monotonic.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from treadle.engine.errors import ConfigError, Problem

STATUSES = ("done", "retry", "failed", "timeout", "cancelled")
SLOTS_LIMIT = "slots"
MAX_SERIES_POINTS = 2_000
"""Step series longer than this are reduced to per-bucket maxima (peaks are kept)."""
DEFAULT_BUCKETS = 120
PRICE_KEYS = ("input_per_1m", "output_per_1m")
STREAM_ABOVE_BYTES = 256 * 2**20
"""A trace.jsonl larger than this is parsed block by block (memory), smaller ones in parallel blocks."""
_BLOCK_BYTES = 2**20

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


# ---- trace.jsonl as columns ----------------------------------------------------------------------


class _Codes:
    """Small integer codes for the values of a field, in the order they first appear (None included)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        code = self._index.get(value)
        if code is None:
            code = self._index[value] = len(self.values)
            self.values.append(value)
        return code

    def encode(self, array: pa.Array) -> np.ndarray:
        encoded = array.dictionary_encode(null_encoding="encode")
        lookup = np.array([self.code(v) for v in encoded.dictionary.to_pylist()], dtype=np.int32)
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


_STRINGS = ("column", "model", "parent", "status", "error_class")
_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("column", pa.string()),
        ("model", pa.string()),
        ("slot", pa.int64()),
        ("t_ready", pa.float64()),
        ("t_start", pa.float64()),
        ("t_end", pa.float64()),
        ("status", pa.string()),
        ("error_class", pa.string()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("parent", pa.string()),
    ]
)
_REQUIRED = ("seq", "t_ready", "t_start", "t_end")
"""A line without one of these is skipped (as TraceReader skips it)."""


@dataclass
class TraceColumns:
    """trace.jsonl as one array per field, sessions laid end to end (times offset as TraceReader does).

    String fields are codes into `names[field]` (values in order of first appearance, None included).
    """

    names: dict[str, list[Any]]
    codes: dict[str, np.ndarray]
    t_ready: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    slot: np.ndarray
    """The slot, where `has_slot`; -1 elsewhere."""
    has_slot: np.ndarray
    tokens_in: np.ndarray
    """0 where the line has none."""
    tokens_out: np.ndarray
    lines: int = 0
    skipped: int = 0
    session_starts: list[float] = field(default_factory=list)
    span_s: float = 0.0

    @property
    def sessions(self) -> int:
        return len(self.session_starts)


class _Builder:
    """Collects per-line values batch by batch, then lays the sessions end to end."""

    def __init__(self) -> None:
        self.codes = {name: _Codes() for name in _STRINGS}
        fields = (*_STRINGS, "seq", "t_ready", "t_start", "t_end", "slot", "has_slot", "tokens_in", "tokens_out")
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in fields}
        self.skipped = 0

    def add(self, name: str, values: np.ndarray) -> None:
        self.parts[name].append(values)

    def finish(self) -> TraceColumns:
        joined = {
            name: np.concatenate(parts) if parts else np.zeros(0, dtype=bool if name == "has_slot" else np.float64)
            for name, parts in self.parts.items()
        }
        seq, t_ready, t_start, t_end = (joined[k] for k in ("seq", "t_ready", "t_start", "t_end"))
        n = len(seq)
        session_starts: list[float] = []
        span = 0.0
        if n:
            # A session starts at the first line and wherever seq does not grow (a resume starts at 1).
            first = np.flatnonzero(np.append(True, seq[1:] <= seq[:-1]))
            ends = np.maximum(np.maximum.reduceat(t_end, first), 0.0)
            offsets = np.concatenate(([0.0], np.cumsum(ends[:-1])))
            session_starts = offsets.tolist()
            span = session_starts[-1] + float(ends[-1])
            if len(first) > 1:
                shift = np.repeat(offsets, np.diff(np.append(first, n)))
                t_ready, t_start, t_end = t_ready + shift, t_start + shift, t_end + shift
        return TraceColumns(
            names={name: codes.values for name, codes in self.codes.items()},
            codes={name: joined[name].astype(np.int32, copy=False) for name in _STRINGS},
            t_ready=t_ready,
            t_start=t_start,
            t_end=t_end,
            slot=joined["slot"].astype(np.int64, copy=False),
            has_slot=joined["has_slot"].astype(bool, copy=False),
            tokens_in=joined["tokens_in"].astype(np.int64, copy=False),
            tokens_out=joined["tokens_out"].astype(np.int64, copy=False),
            lines=n,
            skipped=self.skipped,
            session_starts=session_starts,
            span_s=span,
        )


class _Unreadable(Exception):
    """The fast reader cannot take this file as it is; read it line by line."""


def _batches(path: Path) -> tuple[Iterable[pa.RecordBatch], int]:
    """pyarrow record batches of the file's complete lines, and 1 if a torn last line was left out."""
    size = os.path.getsize(path)
    if size == 0:
        raise _Unreadable
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 65536))
        tail = handle.read()
    cut = tail.rfind(b"\n")
    complete = size - len(tail) + cut + 1 if cut >= 0 else 0
    torn = tail[cut + 1 :].strip()
    if torn:
        try:
            json.loads(torn)
        except ValueError:
            pass  # a line cut short by a crash: skipped, as TraceReader skips it
        else:
            raise _Unreadable  # a complete last line without its newline: rare, read it the slow way
    if complete == 0:
        raise _Unreadable
    source = pa.BufferReader(pa.memory_map(str(path)).read_buffer(complete))
    options = {
        "read_options": pj.ReadOptions(use_threads=True, block_size=_BLOCK_BYTES),
        "parse_options": pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore"),
    }
    if complete > STREAM_ABOVE_BYTES:
        return pj.open_json(source, **options), int(bool(torn))
    return pj.read_json(source, **options).to_batches(), int(bool(torn))


def _read_fast(path: Path) -> TraceColumns:
    builder = _Builder()
    try:
        batches, builder.skipped = _batches(path)
        for batch in batches:
            if any(batch.column(name).null_count for name in _REQUIRED):
                valid = pc.is_valid(batch.column("seq"))
                for name in _REQUIRED[1:]:
                    valid = pc.and_(valid, pc.is_valid(batch.column(name)))
                builder.skipped += len(batch) - pc.sum(valid).as_py()
                batch = batch.filter(valid)
            for name in _STRINGS:
                builder.add(name, builder.codes[name].encode(batch.column(name)))
            for name in ("seq", "t_ready", "t_start", "t_end"):
                builder.add(name, batch.column(name).to_numpy(zero_copy_only=False))
            slot = batch.column("slot")
            builder.add("slot", pc.fill_null(slot, -1).to_numpy(zero_copy_only=False))
            builder.add("has_slot", pc.is_valid(slot).to_numpy(zero_copy_only=False))
            for name in ("tokens_in", "tokens_out"):
                builder.add(name, pc.fill_null(batch.column(name), 0).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise _Unreadable from exc
    return builder.finish()


def trace_columns(
    records: Iterable[Mapping[str, Any]],
    *,
    skipped: int = 0,
    session_starts: list[float] | None = None,
    span_s: float | None = None,
) -> TraceColumns:
    """Columns of trace records given as dicts (trace.jsonl lines, or TaskTrace._asdict()), whose times
    are laid end to end already; by default one session, spanning to the last end."""
    codes = {name: _Codes() for name in _STRINGS}
    strings: dict[str, list[int]] = {name: [] for name in _STRINGS}
    numbers: dict[str, list[Any]] = {
        name: [] for name in ("t_ready", "t_start", "t_end", "slot", "tokens_in", "tokens_out")
    }
    for t in records:
        for name in _STRINGS:
            strings[name].append(codes[name].code(t.get(name)))
        for name in ("t_ready", "t_start", "t_end"):
            numbers[name].append(t[name])
        slot = t.get("slot")
        numbers["slot"].append(slot if isinstance(slot, int) else None)
        numbers["tokens_in"].append(int(t.get("tokens_in") or 0))
        numbers["tokens_out"].append(int(t.get("tokens_out") or 0))
    t_end = np.array(numbers["t_end"], dtype=np.float64)
    slots = numbers["slot"]
    return TraceColumns(
        names={name: c.values for name, c in codes.items()},
        codes={name: np.array(values, dtype=np.int32) for name, values in strings.items()},
        t_ready=np.array(numbers["t_ready"], dtype=np.float64),
        t_start=np.array(numbers["t_start"], dtype=np.float64),
        t_end=t_end,
        slot=np.array([-1 if s is None else s for s in slots], dtype=np.int64),
        has_slot=np.array([s is not None for s in slots], dtype=bool),
        tokens_in=np.array(numbers["tokens_in"], dtype=np.int64),
        tokens_out=np.array(numbers["tokens_out"], dtype=np.int64),
        lines=len(t_end),
        skipped=skipped,
        session_starts=([0.0] if len(t_end) else []) if session_starts is None else session_starts,
        span_s=max(float(t_end.max()), 0.0) if span_s is None and len(t_end) else span_s or 0.0,
    )


def _read_slowly(path: Path) -> TraceColumns:
    """The same columns through TraceReader: any line json.loads can read."""
    reader = TraceReader(path)
    records = list(reader)
    return trace_columns(records, skipped=reader.skipped, session_starts=reader.session_starts, span_s=reader.span_s)


def read_trace(path: Path) -> TraceColumns:
    """trace.jsonl as columns: fast (pyarrow) when it can be, line by line when it cannot; none if missing."""
    path = Path(path)
    if not path.exists():
        return trace_columns([])
    try:
        return _read_fast(path)
    except _Unreadable:
        return _read_slowly(path)


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
    # At each distinct time: intervals started by then minus those ended by then (an end at the time
    # a start happens counts first, so touching intervals do not overlap).
    s, e = np.sort(s), np.sort(e)
    times = np.concatenate((s, e))
    times.sort(kind="stable")  # two sorted runs: merged in linear time
    times = times[np.append(times[1:] != times[:-1], True)]
    values = np.searchsorted(s, times, "right") - np.searchsorted(e, times, "right")
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
    return {
        "by_class": dict(sorted(errors.items(), key=lambda kv: -sum(kv[1].values()))),
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
