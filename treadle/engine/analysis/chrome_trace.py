"""Export a run's trace.jsonl to the Chrome trace event format (Perfetto, chrome://tracing).

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

So every trace.jsonl line gives exactly one event with cat `attempt`. Times are microseconds since
the run started; sessions of a resumed run are laid one after another, marked by a `resumed` instant.
trace.jsonl is streamed (twice): events are written as lines are read; only a few numbers per attempt
are kept, for the counters and the lanes (see treadle.engine.analysis.metrics).
"""

from __future__ import annotations

import functools
import gzip
import heapq
import json
import os
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from treadle.engine.analysis.metrics import SLOTS_LIMIT, limit_history, load_summary, step_series
from treadle.engine.errors import ConfigError, Problem
from treadle.engine.trace_reader import TraceReader, trace_path

SLOTS_PID, MODELS_PID, QUEUE_PID = 1, 2, 3
SLOT_TID_BASE = 100
"""A slot's thread id is SLOT_TID_BASE + slot (thread ids are unique across processes)."""
MODEL_TID_BASE = 1_000_000
QUEUE_TID_BASE = 2_000_000
MAX_COUNTER_POINTS = 20_000
_COLOURS = {
    status: f',"cname":"{colour}"'
    for status, colour in {"failed": "terrible", "timeout": "bad", "retry": "bad", "cancelled": "grey"}.items()
}
"""Chrome's reserved colour names (`cname`) for attempts that did not succeed."""
# Events are formatted without building dicts: this runs for every line of a trace of millions.
_X = '{"name":%s,"cat":"%s","ph":"X","ts":%.3f,"dur":%.3f,"pid":%d,"tid":%d%s,"args":%s}'
_ARGS = (
    '{"row":%s,"column":%s,"attempt":%s,"status":%s,"error_class":%s,"message":%s,"tokens_in":%s,'
    '"tokens_out":%s,"queue_wait_ms":%.3f,"model":%s,"seq":%s%s}'
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
    # gzip level 5: three times faster than the default 9, for a file ~10% larger.
    opener = functools.partial(gzip.open, compresslevel=5) if gzipped else open
    try:
        with opener(tmp, "wt", encoding="utf-8") as handle:
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
    """Write `out` (Chrome trace event JSON; gzipped if it ends in .gz) from `run_dir`'s trace.jsonl.

    Returns the number of events written. `queue_spans`: also draw each attempt's wait between ready
    and start (pid 3). `model_requests`: also draw llm column attempts on their model's lanes (pid 2).
    `events`: the run's `--events` file, for limits that changed during the run (else summary.json's
    `limit_history`; for a run older than it, each limit is its final total).

    Two passes over trace.jsonl: the first keeps a few floats per attempt (counters, lane packing),
    the second writes the events as it reads. A run still going on is exported as far as the first
    pass read.
    """
    run_dir, out = Path(run_dir), Path(out)
    path = trace_path(run_dir)
    if not path.exists():
        raise ConfigError(
            [Problem(str(run_dir), "no trace.jsonl here (not a run directory, or the run had run.trace: false)")]
        )
    summary = load_summary(run_dir)

    # ---- pass 1: intervals for the counters and the lanes
    cell_starts, cell_ends = array("d"), array("d")
    queue_starts, queue_ends = array("d"), array("d")
    waited_starts, waited_ends = array("d"), array("d")
    model_times: dict[str, tuple[array, array]] = {}  # every request, for the counters
    laned_times: dict[str, tuple[array, array]] = {}  # the requests drawn on the model's lanes
    reader = TraceReader(path)
    for t in reader:
        t_ready, t_start, t_end = t["t_ready"], t["t_start"], t["t_end"]
        model = t.get("model")
        child = t.get("parent") is not None
        if model is not None:
            for kept in (model_times, laned_times) if child or model_requests else (model_times,):
                times = kept.get(str(model))
                if times is None:
                    times = kept[str(model)] = (array("d"), array("d"))
                times[0].append(t_start)
                times[1].append(t_end)
        if not child:
            cell_starts.append(t_start)
            cell_ends.append(t_end)
            queue_starts.append(t_ready)
            queue_ends.append(t_start)
            if queue_spans and t_start > t_ready:
                waited_starts.append(t_ready)
                waited_ends.append(t_start)
    lines, sessions = reader.lines, reader.session_starts
    history = limit_history(summary, events, sessions[-1] if sessions else 0.0)
    wall = reader.span_s
    if summary is not None:
        wall = max(wall, (sessions[-1] if sessions else 0.0) + float(summary.get("wall_s") or 0.0))
    queue_lanes, n_queue_lanes = assign_lanes(waited_starts, waited_ends)
    del waited_starts, waited_ends
    models = sorted(set(model_times) | {k[6:] for k in ((summary or {}).get("limits") or {}) if k[:6] == "model:"})
    model_lanes: dict[str, array] = {}
    model_tid_base: dict[str, int] = {}
    next_tid = MODEL_TID_BASE
    for model in models:
        starts, ends = laned_times.pop(model, (array("d"), array("d")))
        model_lanes[model], count = assign_lanes(starts, ends)
        model_tid_base[model] = next_tid
        next_tid += count

    tmp = out.with_name(out.name + ".tmp")
    with _open_out(tmp, gzipped=out.suffix == ".gz") as handle:
        other = {
            "source": "treadle",
            "run": (summary or {}).get("name"),
            "status": (summary or {}).get("status"),
            "wall_s": (summary or {}).get("wall_s"),
            "trace_lines": lines,
            "sessions": len(sessions),
        }
        handle.write('{"displayTimeUnit":"ms","otherData":' + json.dumps(other, default=str) + ',"traceEvents":[')
        writer = _Writer(handle)
        for i, start in enumerate(sessions[1:], start=1):
            writer.event(
                {"name": "resumed", "cat": "run", "ph": "i", "s": "g", "ts": _us(start), "pid": SLOTS_PID,
                 "args": {"session": i}}
            )  # fmt: skip

        # ---- pass 2: the spans, written as they are read
        quote = _Quoted().__getitem__
        slots: set[int] = set()
        waited = 0
        model_index = dict.fromkeys(models, 0)
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
            slots.add(slot)
            writer.raw(_X % (column, "attempt", ts, dur, SLOTS_PID, SLOT_TID_BASE + slot, colour, args))
            if model_tid is not None:
                writer.raw(_X % (column, "request", ts, dur, MODELS_PID, model_tid, colour, args))
            if queue_tid is not None:
                writer.raw(
                    _QUEUED
                    % (column, t_ready * 1e6, (t_start - t_ready) * 1e6, queue_tid, _int(t.get("row")), column,
                       _int(t.get("attempt")), slot)
                )  # fmt: skip

        # ---- counters and names
        def counter(pid: int, name: str, key: str, times: list[float], values: list[int]) -> None:
            for ts, value in zip(times, values, strict=True):
                writer.event(
                    {"name": name, "cat": "counter", "ph": "C", "ts": _us(ts), "pid": pid, "args": {key: value}}
                )

        def limit_counter(pid: int, name: str, key: str, limit: str) -> None:
            if limit in history:
                points = history[limit]
            else:
                info = ((summary or {}).get("limits") or {}).get(limit)
                if not isinstance(info, dict) or info.get("total") is None:
                    return
                points = [(0.0, int(info["total"]))]
            points = [*points, (max(wall, points[-1][0]), points[-1][1])]
            counter(pid, name, key, [p[0] for p in points], [p[1] for p in points])

        def adaptive_counters(model: str) -> None:
            """The adaptive value and the pace each time they changed (summary.json's rate_limits), and an
            instant event saying why."""
            rates = ((summary or {}).get("rate_limits") or {}).get(model)
            changes = rates.get("changes") if isinstance(rates, dict) else None
            start = sessions[-1] if sessions else 0.0
            for change in changes or []:
                try:
                    t, concurrency, paced_rpm, reason = change
                    ts = _us(start + float(t))
                except (TypeError, ValueError):
                    continue
                values = {"adaptive": concurrency, **({"pace_rpm": paced_rpm} if paced_rpm is not None else {})}
                writer.event({"name": f"{model} rate", "cat": "counter", "ph": "C", "ts": ts, "pid": MODELS_PID,
                              "args": values})  # fmt: skip
                writer.event({"name": f"{model} limit adapted", "cat": "limits", "ph": "i", "s": "p", "ts": ts,
                              "pid": MODELS_PID, "tid": 0, "args": {"reason": str(reason)}})  # fmt: skip

        times, values, _, _ = step_series(cell_starts, cell_ends, max_counter_points)
        counter(SLOTS_PID, "cells in flight", "cells", times, values)
        limit_counter(SLOTS_PID, "slot limit", "slots", SLOTS_LIMIT)
        del cell_starts, cell_ends
        times, values, _, _ = step_series(queue_starts, queue_ends, max_counter_points)
        counter(QUEUE_PID, "cells queued", "cells", times, values)
        del queue_starts, queue_ends
        for model in models:
            starts, ends = model_times.get(model, (array("d"), array("d")))
            times, values, _, _ = step_series(starts, ends, max_counter_points)
            counter(MODELS_PID, f"{model} in flight", "requests", times, values)
            limit_counter(MODELS_PID, f"{model} limit", "requests", f"model:{model}")
            adaptive_counters(model)

        def metadata(name: str, pid: int, args: dict[str, Any], tid: int | None = None) -> None:
            event: dict[str, Any] = {"name": name, "ph": "M", "pid": pid, "args": args}
            if tid is not None:
                event["tid"] = tid
            writer.event(event)

        metadata("process_name", SLOTS_PID, {"name": "slots"})
        metadata("process_sort_index", SLOTS_PID, {"sort_index": 1})
        for slot in sorted(slots):
            metadata("thread_name", SLOTS_PID, {"name": f"slot {slot}"}, SLOT_TID_BASE + slot)
            metadata("thread_sort_index", SLOTS_PID, {"sort_index": slot}, SLOT_TID_BASE + slot)
        if models:
            metadata("process_name", MODELS_PID, {"name": "models"})
            metadata("process_sort_index", MODELS_PID, {"sort_index": 2})
            for model in models:
                base = model_tid_base[model]
                n_lanes = max(model_lanes[model], default=-1) + 1
                for lane in range(n_lanes):
                    metadata("thread_name", MODELS_PID, {"name": f"{model} #{lane}"}, base + lane)
                    metadata("thread_sort_index", MODELS_PID, {"sort_index": base - MODEL_TID_BASE + lane}, base + lane)
        metadata("process_name", QUEUE_PID, {"name": "queue"})
        metadata("process_sort_index", QUEUE_PID, {"sort_index": 3})
        for lane in range(n_queue_lanes):
            metadata("thread_name", QUEUE_PID, {"name": f"queued #{lane}"}, QUEUE_TID_BASE + lane)
            metadata("thread_sort_index", QUEUE_PID, {"sort_index": lane}, QUEUE_TID_BASE + lane)
        handle.write("\n]}\n")
        count = writer.count
    os.replace(tmp, out)
    return count
