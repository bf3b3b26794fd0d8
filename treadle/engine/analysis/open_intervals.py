"""`series.step_series` of many intervals, from their starts and their ends gathered chunk by chunk
(`Times`) and sorted each on its own: the same times, values, peak and `exact` flag.

After the last event at a time t, the intervals open are the starts at or before t less the ends at
or before t. With the starts and the ends each sorted, the distinct times are walked in blocks of at
most BLOCK_EVENTS starts and as many ends, each block starting from the starts less the ends before
it, so no series sorts its starts and ends together, and one sorted array serves every series using
it (the cells' starts: the ends of their queue waits and the starts of their runs).

`SeriesTimes` gathers the times of a run's step series (cells in flight and queued, each model's
requests in flight) while metrics.py's pass over the trace adds it up, and makes the series."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from treadle.engine.analysis.series import nice_width
from treadle.engine.trace_reader import TraceChunks, TraceColumns

BLOCK_EVENTS = 1 << 16
"""At most this many starts and as many ends are merged at once (about 4 MB of temporaries)."""

StepSeries = tuple[list[float], list[int], int, bool]
"""What `step_series` returns: times, values, peak, exact."""


class Times:
    """Float64 times appended chunk by chunk into one array, sorted in place when asked for.

    `capacity`: how many there will be at most (the trace's records), allocated at once so appending
    never copies; pages never written are never backed by memory. More than that grows the array."""

    def __init__(self, capacity: int = 0) -> None:
        self._data = np.empty(capacity, np.float64)
        self._count = 0
        self._sorted = True

    def add(self, times: np.ndarray) -> None:
        end = self._count + len(times)
        if end > len(self._data):
            self._data = np.concatenate((self._data[: self._count], np.empty(max(end, 2 * len(self._data)))))
        self._data[self._count : end] = times
        self._count = end
        self._sorted = self._sorted and not len(times)

    def sorted(self) -> np.ndarray:
        """The times so far, in ascending order (a view; sorted once)."""
        data = self._data[: self._count]
        if not self._sorted:
            data.sort(kind="stable")  # a merge sort: fast on times that come nearly in order, as a trace's do
            self._sorted = True
        return data


@dataclass
class _Steps:
    """A step series' distinct times and values, reduced bucket by bucket as blocks of them come."""

    first: float
    width: float
    max_points: int
    peak: int = 0
    exact: tuple[list[float], list[int]] | None = field(default_factory=lambda: ([], []))
    """Every distinct time and its value so far, while there are fewer than max_points."""
    buckets: list[np.ndarray] = field(default_factory=list)
    maxima: list[np.ndarray] = field(default_factory=list)
    lasts: list[np.ndarray] = field(default_factory=list)

    def add(self, times: np.ndarray, values: np.ndarray) -> None:
        """The next distinct times (ascending, after those added before) and the values after them."""
        self.peak = max(self.peak, int(values.max()))
        if self.exact is not None:
            self.exact[0].extend(times.tolist())
            self.exact[1].extend(values.tolist())
            if len(self.exact[0]) + 1 > self.max_points:
                self.exact = None
        index = np.floor((times - self.first) / self.width).astype(np.int64)  # as step_series buckets them
        bounds = np.flatnonzero(np.append(True, index[1:] != index[:-1]))
        self.buckets.append(index[bounds])
        self.maxima.append(np.maximum.reduceat(values, bounds))
        self.lasts.append(values[np.append(bounds[1:] - 1, len(values) - 1)])

    def result(self) -> StepSeries:
        """step_series' result: exact if the times are few, else per bucket."""
        out_t, out_v = ([0.0], [0]) if self.first > 0 else ([], [])
        if self.exact is not None:
            return out_t + self.exact[0], out_v + self.exact[1], self.peak, True
        index, maxima, lasts = (np.concatenate(parts) for parts in (self.buckets, self.maxima, self.lasts))
        bounds = np.flatnonzero(np.append(True, index[1:] != index[:-1]))  # a bucket cut between two blocks
        buckets = index[bounds].tolist()
        maxima = np.maximum.reduceat(maxima, bounds).tolist()
        lasts = lasts[np.append(bounds[1:] - 1, len(lasts) - 1)].tolist()
        for i, bucket in enumerate(buckets):
            out_t.append(self.first + bucket * self.width)
            out_v.append(int(maxima[i]))
            following = buckets[i + 1] if i + 1 < len(buckets) else None
            if following != bucket + 1 and int(lasts[i]) != int(maxima[i]):
                out_t.append(self.first + (bucket + 1) * self.width)
                out_v.append(int(lasts[i]))
        return out_t, out_v, self.peak, False


def step_series_of_sorted(starts: np.ndarray, ends: np.ndarray, max_points: int) -> StepSeries:
    """`step_series(starts, ends, max_points)` from the starts and the ends, each sorted ascending."""
    if not len(starts):
        return [0.0], [0], 0, True
    first, last = min(float(starts[0]), float(ends[0])), max(float(starts[-1]), float(ends[-1]))
    steps = _Steps(first, nice_width(last - first, max(max_points // 2 - 1, 1)), max_points)
    # Block bounds: every BLOCK_EVENTS-th start and end, so a block holds at most that many of each.
    bounds = np.unique(np.concatenate((starts[::BLOCK_EVENTS], ends[::BLOCK_EVENTS], [math.inf])))
    s_at: list[int] = np.searchsorted(starts, bounds, "left").tolist()
    e_at: list[int] = np.searchsorted(ends, bounds, "left").tolist()
    for s_lo, s_hi, e_lo, e_hi in zip(s_at[:-1], s_at[1:], e_at[:-1], e_at[1:], strict=True):
        # As step_series: the running sum of +1 per start and -1 per end after the last event at each
        # distinct time, from the intervals open before the block. Merging two sorted runs is cheap.
        times = np.concatenate((starts[s_lo:s_hi], ends[e_lo:e_hi]))
        order = np.argsort(times, kind="stable")
        times = times[order]
        distinct = np.append(times[1:] != times[:-1], True)  # the last event at each time
        steps_at = np.where(order < s_hi - s_lo, np.int8(1), np.int8(-1))
        del order
        values = (s_lo - e_lo + np.cumsum(steps_at, dtype=np.int64))[distinct]
        steps.add(times[distinct], values)
    return steps.result()


class SeriesTimes:
    """The times the step series are made of, gathered chunk by chunk: the cells' (not the ctx calls')
    start and end times, and per model its calls' start and end times (the cells' ready times come
    later, see `step_series`). `lines`: the trace's records, as many as any of them can hold."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.start, self.end = Times(lines), Times(lines)
        self.requests: dict[str, tuple[Times, Times]] = {}

    def add_cells(self, start: np.ndarray, end: np.ndarray) -> None:
        self.start.add(start)
        self.end.add(end)

    def add_requests(self, model: str, start: np.ndarray, end: np.ndarray) -> None:
        starts, ends = self.requests.setdefault(model, (Times(self.lines), Times(self.lines)))
        starts.add(start)
        ends.add(end)

    def step_series(self, max_points: int, ready_times: Iterable[np.ndarray]) -> dict[Hashable, StepSeries]:
        """Cells in flight and queued, and each model's requests in flight. The cells' ready times are
        read (`ready_times`, chunk by chunk) once their end times are freed: two of the three at a time."""
        start = self.start.sorted()  # the end of a cell's queue wait, the start of its run
        found: dict[Hashable, StepSeries] = {"in_flight": step_series_of_sorted(start, self.end.sorted(), max_points)}
        for model, (starts, ends) in self.requests.items():
            found[("model", model)] = step_series_of_sorted(starts.sorted(), ends.sorted(), max_points)
        self.end, self.requests = Times(), {}
        ready = Times(self.lines)
        for times in ready_times:
            ready.add(times)
        found["queued"] = step_series_of_sorted(ready.sorted(), start, max_points)
        return found


def ready_times(trace: TraceColumns | TraceChunks, children: set[str]) -> Iterator[np.ndarray]:
    """The cells' (not the ctx calls') ready times, chunk by chunk (a second, narrow read of the trace)."""
    chunks = [trace] if isinstance(trace, TraceColumns) else trace.reading(["column", "t_ready"])
    for tc in chunks:
        child = np.array([name in children for name in tc.names["column"]], dtype=bool)
        yield tc.t_ready[~child[tc.codes["column"]]]
