"""Each worker's clock against the parent's: the times a worker sends (its attempts in the trace, its
first finished row, its rate signals) are on its own monotonic clock, which on another machine (a Ray
actor on a cluster's node) can be days apart from the parent's.

The offset is estimated from the ticks: the parent's time at hearing one, less the worker's time at
sending it, is the offset plus the message's transit; the least seen is the best estimate (the transit
left out). Processes on the parent's machine read the same clock and need none."""

from __future__ import annotations

import math
import time


class WorkerClocks:
    def __init__(self, shared: bool = True) -> None:
        self.shared = shared
        """The workers read the parent's own clock (one machine): their times are the parent's."""
        self._offsets: dict[int, float] = {}

    def heard(self, worker: int, sent_at: float) -> float:
        """A tick sent at `sent_at` on the worker's clock, heard now: what to add to the worker's times."""
        if self.shared:
            return 0.0
        offset = min(self._offsets.get(worker, math.inf), time.perf_counter() - sent_at)
        self._offsets[worker] = offset
        return offset
