"""Export a run's trace (trace.parquet) to the Chrome trace event format (Perfetto, chrome://tracing).

The file is one JSON object: `traceEvents` (a list of events) and `displayTimeUnit`, `otherData`.
Processes (pids) group tracks:

- pid 1 "slots": one thread per execution slot (the worker lane that ran the attempt), a complete
  event (`ph: "X"`, cat `attempt`) per attempt of a cell, and the counters `cells in flight` and
  `slot limit`;
- pid 2 "models": per model, lanes of its requests (cat `request` for llm column attempts, which also
  appear on their slot, and cat `attempt` for calls made from python columns through `ctx`, whose only
  place this is), packed so that no two overlap on one lane; counters `<model> in flight` and
  `<model> limit`;
- pid 3 "queue": the time each attempt waited between ready and start (cat `queue`), packed in lanes,
  and the counter `cells queued`.

A run on several engine processes (`--workers N`; its trace has a `worker` other than 0) draws each
worker's slots as threads of a process of its own, "worker W" (pid WORKER_PID_BASE + W, with its own
`cells in flight`); pid 1, "all workers", keeps the run's counters.

So every trace record gives exactly one event with cat `attempt`. Times are microseconds since
the run started; sessions of a resumed run are laid one after another, marked by a `resumed` instant.
The trace is read twice: events are written as records are read; only a few numbers per attempt
are kept, for the counters and the lanes (see treadle.engine.analysis.series).
"""

from __future__ import annotations

import gzip
import heapq
import json
import os
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from treadle.engine.analysis.limits import SLOTS_LIMIT, LimitHistory, limit_history
from treadle.engine.analysis.run_dir import load_summary
from treadle.engine.analysis.series import step_series
from treadle.engine.errors import ConfigError, Problem
from treadle.engine.summary_record import RunSummary
from treadle.engine.trace_reader import TraceReader, trace_path
from treadle.engine.trace_schema import FIELDS

SLOTS_PID, MODELS_PID, QUEUE_PID = 1, 2, 3
SLOT_TID_BASE = 100
"""A slot's thread id is SLOT_TID_BASE + slot (thread ids are unique across processes)."""
WORKER_PID_BASE, WORKER_TID_BASE, WORKER_TID_STRIDE = 10, 3_000_000, 100_000
"""With workers: worker W's slot S is thread WORKER_TID_BASE + W * WORKER_TID_STRIDE + S of pid WORKER_PID_BASE + W
(S the run's lane of the worker's slot: every worker's slots have lanes of their own, see workers/slot_numbers.py)."""
MODEL_TID_BASE = 1_000_000
QUEUE_TID_BASE = 2_000_000
MAX_COUNTER_POINTS = 20_000
_COLOURS: dict[Any, str] = {
    status: f',"cname":"{colour}"'
    for status, colour in {"failed": "terrible", "timeout": "bad", "retry": "bad", "cancelled": "grey"}.items()
}
"""Chrome's reserved colour names (`cname`) for attempts that did not succeed."""
# Events are formatted without building dicts: this runs for every line of a trace of millions.
_X = '{"name":%s,"cat":"%s","ph":"X","ts":%.3f,"dur":%.3f,"pid":%d,"tid":%d%s,"args":%s}'
# An attempt's args are its trace fields (trace_schema.FIELDS, in that order) but for those its event shows
# otherwise (times as ts/dur, the slot as its thread) or adds only when set (parent, retry_after_s, rows;
# worker in a run with workers);
# the computed queue_wait_ms comes before model and seq, the order Chrome exports have always had.
_SHOWN_OTHERWISE = ("slot", "t_ready", "t_start", "t_end", "parent", "retry_after_s", "rows", "worker")
_AFTER_QUEUE_WAIT = ("model", "seq")
_ARG_FIELDS = tuple(name for name in FIELDS if name not in _SHOWN_OTHERWISE + _AFTER_QUEUE_WAIT)
"""The fields before queue_wait_ms; `export_chrome` gives their values in this order."""
_ARGS = (
    "{"
    + ",".join(f'"{name}":%s' for name in _ARG_FIELDS)
    + ',"queue_wait_ms":%.3f,'
    + ",".join(f'"{name}":%s' for name in _AFTER_QUEUE_WAIT)
    + "%s}"
)
_QUEUED = (
    '{"name":%s,"cat":"queue","ph":"X","ts":%.3f,"dur":%.3f,"pid":' + str(QUEUE_PID) + ',"tid":%d,'
    '"args":{"row":%s,"column":%s,"attempt":%s,"slot":%d}}'
)


class _Quoted(dict):
    """JSON text of the few distinct strings (columns, statuses, models, error classes), made once."""

    def __missing__(self, key: Any) -> str:
        text = self[key] = "null" if key is None else json.dumps(str(key), ensure_ascii=False)
        return text


def _int(value: Any) -> str:
    return "null" if value is None else str(int(value))


def assign_lanes(starts: array, ends: array) -> tuple[array, int]:
    """Lanes for intervals so that no two on one lane overlap, as few as the peak overlap needs.

    Intervals are taken by start time; each goes to the lane that fell free earliest if it is free by
    then (an interval ending when another starts does not overlap it), else to a new lane. Returns each
    interval's lane (in the given order) and the number of lanes.
    """
    n = len(starts)
    lanes = array("i", bytes(4 * n))
    if n == 0:
        return lanes, 0
    order = np.argsort(np.frombuffer(starts, dtype=np.float64), kind="stable")
    heap: list[tuple[float, int]] = []
    count = 0
    for i in order.tolist():
        start = starts[i]
        if heap and heap[0][0] <= start:
            lane = heap[0][1]
            heapq.heapreplace(heap, (ends[i], lane))
        else:
            lane = count
            count += 1
            heapq.heappush(heap, (ends[i], lane))
        lanes[i] = lane
    return lanes, count


class _Writer:
    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.count = 0
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode

    def event(self, event: dict[str, Any]) -> None:
        self.raw(self._dumps(event))

    def raw(self, text: str) -> None:
        self.handle.write((",\n" if self.count else "\n") + text)
        self.count += 1


@contextmanager
def _open_out(tmp: Path, gzipped: bool) -> Iterator[IO[str]]:
    """The file being written (gzip for a `.gz` name: Perfetto opens those too); removed on error."""
    try:
        # gzip level 5: three times faster than the default 9, for a file ~10% larger.
        with (
            gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) if gzipped else open(tmp, "w", encoding="utf-8")
        ) as handle:
            yield handle
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def export_chrome(
    run_dir: Path,
    out: Path,
    *,
    queue_spans: bool = True,
    model_requests: bool = True,
    events: Path | None = None,
    max_counter_points: int = MAX_COUNTER_POINTS,
) -> int:
    """Write `out` (Chrome trace event JSON; gzipped if it ends in .gz) from `run_dir`'s trace.

    Returns the number of events written. `queue_spans`: also draw each attempt's wait between ready
    and start (pid 3). `model_requests`: also draw llm column attempts on their model's lanes (pid 2).
    `events`: the run's `--events` file, for limits that changed during the run (else summary.json's
    `limit_history`; for a run older than it, each limit is its final total).

    Two passes over the trace: the first keeps a few floats per attempt (counters, lane packing),
    the second writes the events as it reads. A run still going on is exported as far as the first
    pass read.
    """
    run_dir, out = Path(run_dir), Path(out)
    path = trace_path(run_dir)
    if not path.exists():
        raise ConfigError(
            [Problem(str(run_dir), "no trace.parquet here (not a run directory, or the run had run.trace: false)")]
        )
    summary = load_summary(run_dir)
    first = _first_pass(path, queue_spans, model_requests)
    session_start = first.sessions[-1] if first.sessions else 0.0
    wall = first.span_s
    if summary is not None:
        wall = max(wall, session_start + summary.wall_s)
    limits = {} if summary is None else summary.limits
    models = sorted(set(first.requests) | {k[6:] for k in limits if k[:6] == "model:"})
    lanes, tracks = _Lanes.packed(first, models), _Tracks.of(first)
    tmp = out.with_name(out.name + ".tmp")
    with _open_out(tmp, gzipped=out.suffix == ".gz") as handle:
        writer = _start(handle, summary, first)
        slots = _write_attempts(writer, path, first.lines, lanes, tracks, queue_spans, model_requests)
        history = limit_history(summary, events, session_start)
        counters = _Counters(writer, summary, history, wall, session_start, max_counter_points)
        counters.write(first, models, tracks)
        _write_metadata(writer, slots, lanes, tracks)
        handle.write("\n]}\n")
        count = writer.count
    os.replace(tmp, out)
    return count


_Spans = tuple[array, array]
"""Starts and ends."""


@dataclass
class _FirstPass:
    """Pass 1 over the trace: a few floats per attempt, for the counters and the lanes."""

    cells: _Spans = field(default_factory=lambda: (array("d"), array("d")))
    queued: _Spans = field(default_factory=lambda: (array("d"), array("d")))
    """Each cell attempt's ready and start."""
    cell_workers: array = field(default_factory=lambda: array("q"))
    """Each cell attempt's worker (0 in one process)."""
    waited: _Spans = field(default_factory=lambda: (array("d"), array("d")))
    """The waits drawn on the queue's lanes (those that waited at all)."""
    requests: dict[str, _Spans] = field(default_factory=dict)
    """Every request, per model (for its counter)."""
    laned: dict[str, _Spans] = field(default_factory=dict)
    """The requests drawn on the model's lanes."""
    lines: int = 0
    sessions: list[float] = field(default_factory=list)
    span_s: float = 0.0


def _first_pass(path: Path, queue_spans: bool, model_requests: bool) -> _FirstPass:
    kept = _FirstPass()
    (cell_starts, cell_ends), (queue_starts, queue_ends) = kept.cells, kept.queued
    waited_starts, waited_ends = kept.waited
    reader = TraceReader(path)
    for t in reader:
        t_ready, t_start, t_end = t["t_ready"], t["t_start"], t["t_end"]
        model = t.get("model")
        child = t.get("parent") is not None
        if model is not None:
            for per_model in (kept.requests, kept.laned) if child or model_requests else (kept.requests,):
                times = per_model.get(str(model))
                if times is None:
                    times = per_model[str(model)] = (array("d"), array("d"))
                times[0].append(t_start)
                times[1].append(t_end)
        if not child:
            cell_starts.append(t_start)
            cell_ends.append(t_end)
            kept.cell_workers.append(t.get("worker") or 0)
            queue_starts.append(t_ready)
            queue_ends.append(t_start)
            if queue_spans and t_start > t_ready:
                waited_starts.append(t_ready)
                waited_ends.append(t_start)
    kept.lines, kept.sessions, kept.span_s = reader.lines, reader.session_starts, reader.span_s
    return kept


@dataclass
class _Lanes:
    """Threads of the queue and of each model, and which lane each of their spans goes to."""

    queue: array
    """The lane of each drawn wait, in file order."""
    n_queue: int
    models: list[str]
    model: dict[str, array]
    """Per model: the lane of each request drawn, in file order."""
    model_tid_base: dict[str, int]

    @classmethod
    def packed(cls, first: _FirstPass, models: list[str]) -> _Lanes:
        queue, n_queue = assign_lanes(*first.waited)
        model_lanes: dict[str, array] = {}
        tid_base: dict[str, int] = {}
        next_tid = MODEL_TID_BASE
        for model in models:
            model_lanes[model], count = assign_lanes(*first.laned.get(model, (array("d"), array("d"))))
            tid_base[model] = next_tid
            next_tid += count
        return cls(queue, n_queue, models, model_lanes, tid_base)


@dataclass(frozen=True)
class _Tracks:
    """Where cells' attempts are drawn: on pid 1's slot threads, or, in a run with workers, on each
    worker's process (its slots its threads)."""

    workers: list[int]
    """The workers seen, in order; none for a run in one process."""

    @classmethod
    def of(cls, first: _FirstPass) -> _Tracks:
        seen = np.unique(np.frombuffer(first.cell_workers, dtype=np.int64)).tolist()
        return cls(seen if any(seen) else [])

    def slot(self, worker: int, slot: int) -> tuple[int, int]:
        """The pid and tid of a worker's slot."""
        if not self.workers:
            return SLOTS_PID, SLOT_TID_BASE + slot
        return WORKER_PID_BASE + worker, WORKER_TID_BASE + worker * WORKER_TID_STRIDE + slot


def _start(handle: IO[str], summary: RunSummary | None, first: _FirstPass) -> _Writer:
    """The file's head (`otherData`), then a `resumed` instant where each later session starts."""
    other = {
        "source": "treadle",
        "run": None if summary is None else summary.name,
        "status": None if summary is None else summary.status,
        "wall_s": None if summary is None else summary.wall_s,
        "trace_lines": first.lines,
        "sessions": len(first.sessions),
    }
    handle.write('{"displayTimeUnit":"ms","otherData":' + json.dumps(other, default=str) + ',"traceEvents":[')
    writer = _Writer(handle)
    for i, start in enumerate(first.sessions[1:], start=1):
        writer.event(
            {"name": "resumed", "cat": "run", "ph": "i", "s": "g", "ts": _us(start), "pid": SLOTS_PID,
             "args": {"session": i}}
        )  # fmt: skip
    return writer


def _write_attempts(
    writer: _Writer, path: Path, lines: int, lanes: _Lanes, tracks: _Tracks, queue_spans: bool, model_requests: bool
) -> set[tuple[int, int]]:
    """Pass 2: every attempt's span (and its request and queue copies), written as it is read.
    Returns the slots seen, with their workers."""
    quote = _Quoted().__getitem__
    slots: set[tuple[int, int]] = set()
    waited = 0
    model_index = dict.fromkeys(lanes.models, 0)
    model_tid_base, model_lanes, queue_lanes = lanes.model_tid_base, lanes.model, lanes.queue
    for t in TraceReader(path, limit=lines):
        t_ready, t_start, t_end = t["t_ready"], t["t_start"], t["t_end"]
        model = t.get("model")
        parent = t.get("parent")
        model_tid = None
        if model is not None and (parent is not None or model_requests):
            key = str(model)
            model_tid = model_tid_base[key] + model_lanes[key][model_index[key]]
            model_index[key] += 1
        queue_tid = None
        if parent is None and queue_spans and t_start > t_ready:
            queue_tid = QUEUE_TID_BASE + queue_lanes[waited]
            waited += 1
        try:
            column = quote(t.get("column"))
            status = t.get("status")
            message = t.get("message")
            args = _ARGS % (
                _int(t.get("row")),
                column,
                _int(t.get("attempt")),
                quote(status),
                quote(t.get("error_class")),
                "null" if message is None else json.dumps(message, ensure_ascii=False),
                _int(t.get("tokens_in")),
                _int(t.get("tokens_out")),
                (t_start - t_ready) * 1e3,
                quote(model),
                _int(t.get("seq")),
                "" if parent is None else ',"parent":' + quote(parent),
            )
            retry_after = t.get("retry_after_s")
            if retry_after is not None:
                args = f'{args[:-1]},"retry_after_s":{float(retry_after):.6f}}}'
            rows = t.get("rows")
            if rows is not None:  # a batch call: one slice for its rows
                args = f'{args[:-1]},"rows":{int(rows)}}}'
            worker = int(t.get("worker") or 0)
            if tracks.workers:
                args = f'{args[:-1]},"worker":{worker}}}'
        except (TypeError, ValueError):  # a line treadle did not write
            continue
        ts, dur = t_start * 1e6, max((t_end - t_start) * 1e6, 0.0)
        colour = _COLOURS.get(status, "")
        if parent is not None:
            assert model_tid is not None
            writer.raw(_X % (column, "attempt", ts, dur, MODELS_PID, model_tid, colour, args))
            continue
        slot = t.get("slot")
        slot = slot if isinstance(slot, int) and slot >= 0 else 0
        slots.add((worker, slot))
        writer.raw(_X % (column, "attempt", ts, dur, *tracks.slot(worker, slot), colour, args))
        if model_tid is not None:
            writer.raw(_X % (column, "request", ts, dur, MODELS_PID, model_tid, colour, args))
        if queue_tid is not None:
            writer.raw(
                _QUEUED
                % (column, t_ready * 1e6, (t_start - t_ready) * 1e6, queue_tid, _int(t.get("row")), column,
                   _int(t.get("attempt")), slot)
            )  # fmt: skip
    return slots


class _Counters:
    """Counter events (`ph: "C"`): step series of what was in flight, queued, and the limits."""

    def __init__(
        self,
        writer: _Writer,
        summary: RunSummary | None,
        history: LimitHistory,
        wall: float,
        session_start: float,
        max_points: int,
    ) -> None:
        self.writer = writer
        self.summary = summary
        self.history = history
        self.wall = wall
        self.session_start = session_start
        """Where the last session starts: summary.json's times (its rate limits) count from there."""
        self.max_points = max_points

    def write(self, first: _FirstPass, models: list[str], tracks: _Tracks) -> None:
        self.in_flight(SLOTS_PID, "cells in flight", "cells", first.cells)
        self.limit(SLOTS_PID, "slot limit", "slots", SLOTS_LIMIT)
        workers = np.frombuffer(first.cell_workers, dtype=np.int64)
        starts, ends = (np.frombuffer(times, dtype=np.float64) for times in first.cells)
        for worker in tracks.workers:
            mine = workers == worker
            self.in_flight(WORKER_PID_BASE + worker, "cells in flight", "cells", (starts[mine], ends[mine]))
        self.in_flight(QUEUE_PID, "cells queued", "cells", first.queued)
        for model in models:
            requests = first.requests.get(model, (array("d"), array("d")))
            self.in_flight(MODELS_PID, f"{model} in flight", "requests", requests)
            self.limit(MODELS_PID, f"{model} limit", "requests", f"model:{model}")
            self.adaptive(model)

    def steps(self, pid: int, name: str, key: str, times: list[float], values: list[int]) -> None:
        for ts, value in zip(times, values, strict=True):
            self.writer.event(
                {"name": name, "cat": "counter", "ph": "C", "ts": _us(ts), "pid": pid, "args": {key: value}}
            )

    def in_flight(self, pid: int, name: str, key: str, spans: _Spans) -> None:
        times, values, _, _ = step_series(*spans, self.max_points)
        self.steps(pid, name, key, times, values)

    def limit(self, pid: int, name: str, key: str, limit: str) -> None:
        """A limit's totals over the run (its history, else its final total from 0), to the wall time."""
        if limit in self.history:
            points = self.history[limit]
        else:
            info = None if self.summary is None else self.summary.limits.get(limit)
            if info is None:
                return
            points = [(0.0, int(info.total))]
        points = [*points, (max(self.wall, points[-1][0]), points[-1][1])]
        self.steps(pid, name, key, [p[0] for p in points], [p[1] for p in points])

    def adaptive(self, model: str) -> None:
        """The adaptive value and the pace each time they changed (summary.json's rate_limits), and an
        instant event saying why."""
        rates = None if self.summary is None else self.summary.rate_limits.get(model)
        for t, concurrency, paced_rpm, reason in [] if rates is None else rates.changes:
            ts = _us(self.session_start + float(t))
            values = {"adaptive": concurrency, **({"pace_rpm": paced_rpm} if paced_rpm is not None else {})}
            self.writer.event({"name": f"{model} rate", "cat": "counter", "ph": "C", "ts": ts, "pid": MODELS_PID,
                               "args": values})  # fmt: skip
            self.writer.event({"name": f"{model} limit adapted", "cat": "limits", "ph": "i", "s": "p", "ts": ts,
                               "pid": MODELS_PID, "tid": 0, "args": {"reason": str(reason)}})  # fmt: skip


def _write_metadata(writer: _Writer, slots: set[tuple[int, int]], lanes: _Lanes, tracks: _Tracks) -> None:
    """Names and order of the processes and threads (`ph: "M"`)."""

    def metadata(name: str, pid: int, args: dict[str, Any], tid: int | None = None) -> None:
        event: dict[str, Any] = {"name": name, "ph": "M", "pid": pid, "args": args}
        if tid is not None:
            event["tid"] = tid
        writer.event(event)

    metadata("process_name", SLOTS_PID, {"name": "all workers" if tracks.workers else "slots"})
    metadata("process_sort_index", SLOTS_PID, {"sort_index": 1})
    for worker in tracks.workers:
        metadata("process_name", WORKER_PID_BASE + worker, {"name": f"worker {worker}"})
        metadata("process_sort_index", WORKER_PID_BASE + worker, {"sort_index": 2 + worker})
    for worker, slot in sorted(slots):
        pid, tid = tracks.slot(worker, slot)
        metadata("thread_name", pid, {"name": f"slot {slot}"}, tid)
        metadata("thread_sort_index", pid, {"sort_index": slot}, tid)
    after = 3 + max(tracks.workers, default=-1)  # models, then queue, after the workers
    if lanes.models:
        metadata("process_name", MODELS_PID, {"name": "models"})
        metadata("process_sort_index", MODELS_PID, {"sort_index": after})
        for model in lanes.models:
            base = lanes.model_tid_base[model]
            for lane in range(max(lanes.model[model], default=-1) + 1):
                metadata("thread_name", MODELS_PID, {"name": f"{model} #{lane}"}, base + lane)
                metadata("thread_sort_index", MODELS_PID, {"sort_index": base - MODEL_TID_BASE + lane}, base + lane)
    metadata("process_name", QUEUE_PID, {"name": "queue"})
    metadata("process_sort_index", QUEUE_PID, {"sort_index": after + 1})
    for lane in range(lanes.n_queue):
        metadata("thread_name", QUEUE_PID, {"name": f"queued #{lane}"}, QUEUE_TID_BASE + lane)
        metadata("thread_sort_index", QUEUE_PID, {"sort_index": lane}, QUEUE_TID_BASE + lane)
