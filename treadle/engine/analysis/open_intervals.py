"""The step series of a run (`series.step_series`: cells in flight and queued, each model's requests in
flight) made while its trace is read chunk by chunk, without holding a time per attempt: the same
times, values, peak and `exact` flag.

Two passes over the trace. In the first (metrics.py's tally) `OpenIntervals.note` keeps each series'
first and last time (which give step_series' bucket width) and, per chunk, its earliest series event.
In the second, `OpenIntervals.step_series` reads the times again and walks each series' events in time
order (`_Sweep`): an event earlier than every event of the chunks still to come is final, the others
wait in a sorted buffer. A trace lists attempts about as they end, so what waits is about the
attempts running at a chunk's end, not the trace; in the worst order (every chunk holding an event
earlier than the ones before it) every time waits, 8 bytes each, as a sort of them all would hold.

Within what is final, the starts and the ends, each sorted, are merged in blocks of at most
BLOCK_EVENTS of each: after the last event at a time t, the intervals open are those open before the
block plus the block's starts at or before t less its ends at or before t."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

import numpy as np

from treadle.engine.analysis.series import nice_width
from treadle.engine.trace_reader import TraceChunks, TraceColumns

BLOCK_EVENTS = 1 << 14
"""At most this many starts and as many ends are merged at once: about 1 MB of temporaries, which the
allocator keeps for the next block (blocks of 2^16 took 2.5x as long, their temporaries given back to
the system and faulted in again block after block)."""

SERIES_FIELDS = ["column", "model", "t_ready", "t_start", "t_end"]
"""What the second pass reads of the trace."""

StepSeries = tuple[list[float], list[int], int, bool]
"""What `step_series` returns: times, values, peak, exact."""


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


def _walk(starts: np.ndarray, ends: np.ndarray, open_before: int, steps: _Steps) -> int:
    """Give `steps` the distinct times of `starts` and `ends` (each sorted, all earlier than any event to
    come) and the intervals open after each, `open_before` being open before them; returns those open
    after the last."""
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
        values = (open_before + s_lo - e_lo + np.cumsum(steps_at, dtype=np.int64))[distinct]
        steps.add(times[distinct], values)
    return open_before + len(starts) - len(ends)


def _merged(waiting: np.ndarray, times: np.ndarray) -> np.ndarray:
    """`waiting` (sorted) and `times`, sorted: a stable sort (a merge sort) takes the sorted run as it is."""
    merged = np.concatenate((waiting, times))
    merged.sort(kind="stable")
    return merged


class _Sweep:
    """One step series walked in time order as its intervals come, in any order: the events earlier than
    any to come are final and walked; the others wait (sorted)."""

    def __init__(self, first: float, last: float, max_points: int) -> None:
        self.steps = _Steps(first, nice_width(last - first, max(max_points // 2 - 1, 1)), max_points)
        self.starts = self.ends = np.empty(0, np.float64)
        self.open = 0

    def add(self, starts: np.ndarray, ends: np.ndarray, final_before: float) -> None:
        """More intervals' starts and ends; every event still to come is at or after `final_before`."""
        self.starts, self.ends = _merged(self.starts, starts), _merged(self.ends, ends)
        s_cut = int(np.searchsorted(self.starts, final_before, "left"))
        e_cut = int(np.searchsorted(self.ends, final_before, "left"))
        self.open = _walk(self.starts[:s_cut], self.ends[:e_cut], self.open, self.steps)
        self.starts, self.ends = self.starts[s_cut:].copy(), self.ends[e_cut:].copy()

    def result(self) -> StepSeries:
        """The series, once every interval has come."""
        self.open = _walk(self.starts, self.ends, self.open, self.steps)
        self.starts = self.ends = np.empty(0, np.float64)
        return self.steps.result()


def _events(tc: TraceColumns, own: np.ndarray) -> list[tuple[Hashable, np.ndarray, np.ndarray]]:
    """A chunk's intervals per series, as (series, starts, ends): the cells' (`own`: not ctx calls') runs
    ("in_flight") and queue waits ("queued"), and per model its requests (("model", name))."""
    found: list[tuple[Hashable, np.ndarray, np.ndarray]] = [
        ("in_flight", tc.t_start[own], tc.t_end[own]),
        ("queued", tc.t_ready[own], tc.t_start[own]),
    ]
    for code, model in enumerate(tc.names["model"]):
        if model is not None:
            requests = tc.codes["model"] == code
            found.append((("model", model), tc.t_start[requests], tc.t_end[requests]))
    return found


class OpenIntervals:
    """The trace's step series in two passes: `note` each chunk of the first, then `step_series` reads
    the chunks again."""

    def __init__(self) -> None:
        self.bounds: dict[Hashable, tuple[float, float]] = {}
        """Per series (with intervals), its first and last event."""
        self.read = 0
        self.chunk_ends: list[int] = []
        """Per chunk noted, the records read at its end."""
        self.chunk_firsts: list[float] = []
        """Per chunk noted, its earliest series event (inf: none)."""

    def note(self, tc: TraceColumns, own: np.ndarray) -> None:
        """The first pass: a chunk, its cells' records being `own` (the others: ctx calls)."""
        earliest = math.inf
        for key, starts, ends in _events(tc, own):
            if len(starts):
                low, high = min(float(starts.min()), float(ends.min())), max(float(starts.max()), float(ends.max()))
                first, last = self.bounds.get(key, (low, high))
                self.bounds[key] = min(first, low), max(last, high)
                earliest = min(earliest, low)
        self.read += tc.lines
        self.chunk_ends.append(self.read)
        self.chunk_firsts.append(earliest)

    def step_series(
        self, chunks: Iterable[TraceColumns], children: set[str], max_points: int
    ) -> dict[Hashable, StepSeries]:
        """The second pass over the same records (`chunks`: any cut; `children`: the ctx calls' columns):
        cells in flight and queued, and each model's requests in flight (`("model", name)`)."""
        sweeps = {key: _Sweep(first, last, max_points) for key, (first, last) in self.bounds.items()}
        # After chunk k of the first pass, no event is earlier than the earliest of the chunks after it.
        firsts_after = np.append(np.minimum.accumulate(self.chunk_firsts[::-1])[::-1], math.inf)
        read = 0
        for tc in chunks:
            read += tc.lines
            child = np.array([name in children for name in tc.names["column"]], dtype=bool)
            own = ~child[tc.codes["column"]]
            # The records after `read` start in the first-pass chunk holding record `read`.
            final_before = float(firsts_after[np.searchsorted(self.chunk_ends, read, "right")])
            for key, starts, ends in _events(tc, own):
                if key in sweeps:
                    sweeps[key].add(starts, ends, final_before)
        found: dict[Hashable, StepSeries] = {"in_flight": ([0.0], [0], 0, True), "queued": ([0.0], [0], 0, True)}
        found.update((key, sweep.result()) for key, sweep in sweeps.items())
        return found


def series_chunks(trace: TraceColumns | TraceChunks) -> Iterable[TraceColumns]:
    """The trace again for `OpenIntervals.step_series`: a narrow read of a trace read chunk by chunk."""
    return [trace] if isinstance(trace, TraceColumns) else trace.reading(SERIES_FIELDS)
