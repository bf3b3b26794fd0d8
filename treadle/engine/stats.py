"""Small statistics shared by summaries and reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


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
