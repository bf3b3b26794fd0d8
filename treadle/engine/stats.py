"""Small statistics shared by summaries and reports."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, interpolated; 0.0 for none."""
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    low, high = math.floor(k), math.ceil(k)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (k - low)
