"""The counting parts of a model's request rate (rate_limits.py): token buckets that pace starts, and
per-second sums for what a person watches."""

from __future__ import annotations

import math
from collections import deque

HISTORY_S = 60.0
"""Per-second sums (and a model's recent rate-limit answers) are kept this long."""


class PerSecond:
    """Amounts added per whole second over the last minute: sums for a person's view that cost a few
    dozen additions however many requests a second go out."""

    def __init__(self) -> None:
        self._seconds: deque[list[float]] = deque()

    def add(self, now: float, amount: float) -> None:
        second = math.floor(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += amount
        else:
            self._seconds.append([second, amount])
            while self._seconds[0][0] < second - HISTORY_S:
                self._seconds.popleft()

    def total(self, now: float, window_s: float) -> float:
        since = math.floor(now - window_s)
        return sum(amount for second, amount in self._seconds if second > since)


class Bucket:
    """A token bucket: `rate` per second up to `capacity`; the level may go below 0 (a debt to wait out)."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            if self.level < self.capacity:  # a level above the capacity (a first burst) is spent first
                self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` (at most the capacity) is there."""
        self.refill(now)
        missing = min(amount, self.capacity) - self.level
        return 0.0 if missing <= 1e-9 else missing / self.rate  # no waits too short for a clock to tell
