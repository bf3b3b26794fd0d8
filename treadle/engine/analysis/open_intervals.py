"""`series.step_series` over a trace read in chunks, in bounded memory: the same step series, peak and
`exact` flag, from at most EVENTS_AT_ONCE interval ends (starts and ends) in memory per series.

A series with few events is gathered whole and handed to `step_series`. A larger one is cut along the
time buckets `step_series` reduces it to: a pass counts each bucket's events (and its starts less its
ends, the value it carries into the next), consecutive buckets make partitions of at most EVENTS_AT_ONCE
events, and each further pass sorts one partition of every series, starting from the value its earlier
buckets carried in. Every pass reads the trace again (about 0.3 s per million attempts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import numpy as np

from treadle.engine.analysis.series import MAX_SERIES_POINTS, nice_width, step_series
from treadle.engine.trace_reader import TraceColumns

EVENTS_AT_ONCE = 1 << 19
"""At most this many starts and ends of one series are sorted at once (about 15 MB while sorting)."""

Intervals = Callable[[TraceColumns], tuple[np.ndarray, np.ndarray]]
"""A chunk's intervals of one series: their starts and their ends."""
StepSeries = tuple[list[float], list[int], int, bool]
"""What `step_series` returns: times, values, peak, exact."""


@dataclass
class _Series:
    intervals: Intervals
    max_points: int
    events: int = 0
    first: float = math.inf
    last: float = -math.inf
    gathered: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    width: float = 0.0
    partitions: list[tuple[int, int, int]] = field(default_factory=list)
    """Still to sort: first bucket, bucket after the last, the value carried in."""
    exact: tuple[list[float], list[int]] | None = field(default_factory=lambda: ([], []))
    """Every distinct time and its value so far, while there are fewer than max_points."""
    peak: int = 0
    buckets: list[np.ndarray] = field(default_factory=list)
    maxima: list[np.ndarray] = field(default_factory=list)
    lasts: list[np.ndarray] = field(default_factory=list)

    @property
    def small(self) -> bool:
        return self.events <= EVENTS_AT_ONCE

    def bucket(self, times: np.ndarray) -> np.ndarray:
        return np.floor((times - self.first) / self.width).astype(np.int64)


def step_series_of(
    chunks: Iterable[TraceColumns], selected: dict[Hashable, Intervals], max_points: int = MAX_SERIES_POINTS
) -> dict[Hashable, StepSeries]:
    """Per key, `step_series` of the intervals `selected[key]` picks from each chunk, in chunk order.
    `chunks` is iterated once per pass (a list, or a TraceChunks)."""
    series = {key: _Series(pick, max_points) for key, pick in selected.items()}
    for chunk in chunks:
        for one in series.values():
            starts, ends = one.intervals(chunk)
            if len(starts):
                one.events += 2 * len(starts)
                one.first = min(one.first, float(starts.min()), float(ends.min()))
                one.last = max(one.last, float(starts.max()), float(ends.max()))
    large = [one for one in series.values() if not one.small]
    for one in large:
        one.width = nice_width(one.last - one.first, max(max_points // 2 - 1, 1))
    if any(one.small and one.events for one in series.values()) or large:
        _count_or_gather(chunks, series.values())
    for one in large:
        one.partitions.reverse()  # popped from the end
    while any(one.partitions for one in large):
        _sort_partitions(chunks, [one for one in large if one.partitions])
    found = {}
    for key, one in series.items():
        if one.small:
            starts = np.concatenate([np.zeros(0), *(s for s, _ in one.gathered)])
            found[key] = step_series(starts, np.concatenate([np.zeros(0), *(e for _, e in one.gathered)]), max_points)
        else:
            found[key] = _reduced(one)
    return found


def _count_or_gather(chunks: Iterable[TraceColumns], series: Iterable[_Series]) -> None:
    """A pass: the small series' intervals gathered, the large ones' events counted per bucket and cut
    into partitions."""
    series = [one for one in series if one.events]
    counts = {id(one): (np.zeros(0, np.int64), np.zeros(0, np.int64)) for one in series if not one.small}
    for chunk in chunks:
        for one in series:
            starts, ends = one.intervals(chunk)
            if one.small:
                one.gathered.append((starts, ends))
                continue
            n_buckets = one.bucket(np.array([one.last]))[0] + 1
            opened = np.bincount(one.bucket(starts), minlength=n_buckets)
            closed = np.bincount(one.bucket(ends), minlength=n_buckets)
            total_opened, total_closed = counts[id(one)]
            counts[id(one)] = (opened + _padded(total_opened, n_buckets), closed + _padded(total_closed, n_buckets))
    for one in series:
        if one.small:
            continue
        opened, closed = counts[id(one)]
        events, carried = opened + closed, np.concatenate(([0], np.cumsum(opened - closed)))
        lo, size = 0, 0
        for bucket, n in enumerate(events.tolist()):
            if size and size + n > EVENTS_AT_ONCE:
                one.partitions.append((lo, bucket, int(carried[lo])))
                lo, size = bucket, 0
            size += n
        one.partitions.append((lo, len(events), int(carried[lo])))


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    return np.pad(values, (0, length - len(values))) if len(values) else np.zeros(length, np.int64)


def _sort_partitions(chunks: Iterable[TraceColumns], series: list[_Series]) -> None:
    """A pass: the next partition of each series, sorted, its step values and their bucket maxima kept."""
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {id(one): [] for one in series}
    for chunk in chunks:
        for one in series:
            lo, hi, _ = one.partitions[-1]
            starts, ends = one.intervals(chunk)
            s_bucket, e_bucket = one.bucket(starts), one.bucket(ends)
            parts[id(one)].append(
                (starts[(s_bucket >= lo) & (s_bucket < hi)], ends[(e_bucket >= lo) & (e_bucket < hi)])
            )
    for one in series:
        _, _, carried = one.partitions.pop()
        pieces = parts.pop(id(one))  # freed as soon as they are joined
        starts = np.concatenate([np.zeros(0), *(s for s, _ in pieces)])
        ends = np.concatenate([np.zeros(0), *(e for _, e in pieces)])
        del pieces
        if len(starts) + len(ends):
            _keep_steps(one, starts, ends, carried)


def _keep_steps(one: _Series, starts: np.ndarray, ends: np.ndarray, carried: int) -> None:
    """As step_series: the running sum after the last event at each distinct time, then per bucket."""
    times = np.concatenate((starts, ends))
    order = np.argsort(times, kind="stable")
    times = times[order]
    last = np.append(times[1:] != times[:-1], True)
    steps = (order < len(starts)).astype(np.int8) * np.int8(2) - np.int8(1)  # +1 a start, -1 an end
    del order
    values = (carried + np.cumsum(steps, dtype=np.int64))[last]
    times = times[last]
    one.peak = max(one.peak, int(values.max()))
    if one.exact is not None:
        one.exact[0].extend(times.tolist())
        one.exact[1].extend(values.tolist())
        if len(one.exact[0]) + 1 > one.max_points:
            one.exact = None
    index = one.bucket(times)
    bounds = np.flatnonzero(np.append(True, index[1:] != index[:-1]))
    one.buckets.append(index[bounds])
    one.maxima.append(np.maximum.reduceat(values, bounds))
    one.lasts.append(values[np.append(bounds[1:] - 1, len(values) - 1)])


def _reduced(one: _Series) -> StepSeries:
    """step_series' result from the partitions' steps: exact if they are few, else per bucket."""
    out_t, out_v = ([0.0], [0]) if one.first > 0 else ([], [])
    if one.exact is not None:
        return out_t + one.exact[0], out_v + one.exact[1], one.peak, True
    buckets, maxima, lasts = (np.concatenate(parts).tolist() for parts in (one.buckets, one.maxima, one.lasts))
    for i, bucket in enumerate(buckets):
        out_t.append(one.first + bucket * one.width)
        out_v.append(int(maxima[i]))
        following = buckets[i + 1] if i + 1 < len(buckets) else None
        if following != bucket + 1 and int(lasts[i]) != int(maxima[i]):
            out_t.append(one.first + (bucket + 1) * one.width)
            out_v.append(int(lasts[i]))
    return out_t, out_v, one.peak, False
