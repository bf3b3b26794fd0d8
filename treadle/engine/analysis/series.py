"""Numbers over the attempts of a run: step series of intervals open over time, percentiles, sums and
histograms of time buckets, computed with numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_SERIES_POINTS = 2_000
"""Step series longer than this are reduced to per-bucket maxima (peaks are kept)."""

Floats = Any
"""A sequence of floats numpy takes as it is: an `array('d')` or a float64 ndarray."""


def as_array(values: Floats) -> np.ndarray:
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
    s, e = as_array(starts), as_array(ends)
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
    out_t, out_v = ([0.0], [0]) if first > 0 else ([], [])
    if len(times) + 1 <= max_points:
        return out_t + times.tolist(), out_v + values.tolist(), peak, True
    width = nice_width(float(times[-1]) - first, max(max_points // 2 - 1, 1))
    index = np.floor((times - first) / width).astype(np.int64)
    bounds = np.flatnonzero(np.append(True, index[1:] != index[:-1]))
    maxima = np.maximum.reduceat(values, bounds)
    lasts = values[np.append(bounds[1:] - 1, len(values) - 1)]
    buckets = index[bounds]
    for i, bucket in enumerate(buckets.tolist()):
        out_t.append(first + bucket * width)
        out_v.append(int(maxima[i]))
        following = int(buckets[i + 1]) if i + 1 < len(buckets) else None
        if following != bucket + 1 and int(lasts[i]) != int(maxima[i]):
            out_t.append(first + (bucket + 1) * width)
            out_v.append(int(lasts[i]))
    return out_t, out_v, peak, False


def percentiles(values: Floats, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., "p95": ..., "p99": ...} (for the `qs` given), to 1 µs; 0.0 for no values."""
    data = as_array(values)
    if len(data) == 0:
        return {f"p{q:g}": 0.0 for q in qs}
    return {f"p{q:g}": round(float(v), 6) for q, v in zip(qs, np.percentile(data, qs), strict=True)}


def total(values: Floats) -> float:
    return float(as_array(values).sum())


def mean(values: Floats) -> float:
    return round(total(values) / len(values), 6) if len(values) else 0.0


def maximum(values: Floats) -> float:
    return round(float(as_array(values).max()), 6) if len(values) else 0.0


def histogram(times: Floats, width: float, n_buckets: int, weights: np.ndarray | None = None) -> list[int]:
    """How many of `times` fall in each bucket of `width` from 0 (later ones count in the last); with
    `weights`, each time counts its weight (a batch call: its rows)."""
    data = as_array(times)
    if len(data) == 0:
        return [0] * n_buckets
    index = np.minimum(np.floor(data / width).astype(np.int64), n_buckets - 1)
    counts = np.bincount(np.maximum(index, 0), weights=weights, minlength=n_buckets)
    return counts.astype(np.int64).tolist()
