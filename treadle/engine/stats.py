"""Small statistics shared by summaries and reports."""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence

import numpy as np


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, interpolated; 0.0 for none."""
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    low, high = math.floor(k), math.ceil(k)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (k - low)


class LimitChanges:
    """Every total each limit had during a run, from its start: the run's own record of `set_limit`
    (summary.json's `limit_history`), so metrics and the trace export need no `--events` file."""

    def __init__(self, totals: Mapping[str, int]) -> None:
        self._points: dict[str, list[tuple[float, int]]] = {name: [(0.0, total)] for name, total in totals.items()}

    def record(self, name: str, t: float, total: int) -> None:
        """`name` holds `total` from `t` seconds after the run started (a repeated total is not kept)."""
        points = self._points.setdefault(name, [(0.0, total)])
        if points[-1][1] != total:
            points.append((t, total))

    def as_json(self) -> dict[str, list[list[float | int]]]:
        return {name: [[round(t, 3), total] for t, total in points] for name, points in self._points.items()}


EXACT_VALUES = 100_000
"""`Quantiles` keeps this many values as they are (exact percentiles), then counts them in buckets."""
BUCKET_RATIO = 1.01
"""Consecutive bucket bounds differ by this factor: a percentile past EXACT_VALUES is a bucket's geometric
middle, within 0.5% of the exact value (relative), at least 0.1 µs apart from it (values below
SMALLEST share one bucket)."""
SMALLEST, LARGEST = 1e-7, 1e6
_LOG_RATIO = math.log(BUCKET_RATIO)
_LOW = math.floor(math.log(SMALLEST) / _LOG_RATIO)
_BUCKETS = math.floor(math.log(LARGEST) / _LOG_RATIO) - _LOW + 2  # bucket 0: below SMALLEST


class Quantiles:
    """Percentiles, sum and maximum of a stream of non-negative numbers (seconds) in bounded memory: the
    values themselves up to EXACT_VALUES (percentiles as `np.percentile` gives them), then a count per
    log-sized bucket (~3,000 buckets, 24 KB; error: BUCKET_RATIO). `append` (a bound `array.append`,
    for hot paths) and `frombytes` take values like an `array("d")`; `add` takes a float64 array. Past
    EXACT_VALUES, appended values wait in a buffer until `fold` (or any read, or `add`) counts them."""

    def __init__(self) -> None:
        self._buffer = array("d")
        """The values while there are at most EXACT_VALUES; then those not counted yet."""
        self.append = self._buffer.append
        self._counts: np.ndarray | None = None
        """Per bucket, how many values it holds, once there were more than EXACT_VALUES."""
        self._sum, self._count = 0.0, 0
        self._min, self._max = math.inf, -math.inf

    def __len__(self) -> int:
        return self._count + len(self._buffer)

    def frombytes(self, data: bytes) -> None:
        """float64 values, packed."""
        self._buffer.frombytes(data)
        self.fold()

    def add(self, values: np.ndarray) -> None:
        self.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())

    def fold(self) -> None:
        """Count the values waiting in the buffer into buckets, once there are more than EXACT_VALUES."""
        if self._counts is None and len(self._buffer) <= EXACT_VALUES:
            return
        if self._counts is None:
            self._counts = np.zeros(_BUCKETS, dtype=np.int64)
        values = np.frombuffer(self._buffer, dtype=np.float64).copy()
        del self._buffer[:]  # in place: `append` is bound to it
        if not len(values):
            return
        with np.errstate(divide="ignore"):
            index = np.floor(np.log(np.maximum(values, SMALLEST / 2)) / _LOG_RATIO) - _LOW + 1
        self._counts += np.bincount(np.clip(index, 0, _BUCKETS - 1).astype(np.int64), minlength=_BUCKETS)
        self._sum += float(values.sum())
        self._count += len(values)
        self._min, self._max = min(self._min, float(values.min())), max(self._max, float(values.max()))

    def _exact(self) -> np.ndarray | None:
        """The values, while they are all kept."""
        self.fold()
        return np.frombuffer(self._buffer, dtype=np.float64) if self._counts is None else None

    def total(self) -> float:
        exact = self._exact()
        return float(exact.sum()) if exact is not None else self._sum

    def mean(self) -> float:
        """To 1 µs; 0.0 for no values."""
        return round(self.total() / len(self), 6) if len(self) else 0.0

    def maximum(self) -> float:
        """To 1 µs; 0.0 for no values."""
        exact = self._exact()
        if exact is not None:
            return round(float(exact.max()), 6) if len(exact) else 0.0
        return round(self._max, 6)

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        """{"p50": ..., ...} for the `qs` given, to 1 µs; 0.0 for no values."""
        exact = self._exact()
        if exact is not None:
            found = np.percentile(exact, qs).tolist() if len(exact) else [0.0] * len(qs)
        else:
            found = [self._interpolated(q / 100) for q in qs]
        return {f"p{q:g}": round(float(v), 6) for q, v in zip(qs, found, strict=True)}

    def _interpolated(self, q: float) -> float:
        """As np.percentile's linear rule, with each ranked value its bucket's middle (within the extremes)."""
        assert self._counts is not None
        cumulative = np.cumsum(self._counts)
        rank = (self._count - 1) * q
        low, high = math.floor(rank), math.ceil(rank)
        below, above = self._middle(cumulative, low), self._middle(cumulative, high)
        return below + (above - below) * (rank - low)

    def _middle(self, cumulative: np.ndarray, rank: int) -> float:
        bucket = int(np.searchsorted(cumulative, rank, side="right"))
        middle = 0.0 if bucket == 0 else BUCKET_RATIO ** (bucket - 1 + _LOW + 0.5)
        return min(max(middle, self._min), self._max)
