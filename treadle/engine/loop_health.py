"""How late the engine's event loop wakes up: the symptom of blocking work on the loop."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from treadle.engine.stats import percentile

INTERVAL_S = 0.02
QUIET_INTERVAL_S = 0.25
"""While no cell runs: 50 wake-ups a second cost a run held open (or paused) ~1% of a core for nothing."""
KEEP = 15000  # five minutes of samples at 50 a second


class LoopLag:
    """A timer that asks to wake every 20 ms while cells run (every 250 ms while none does) and records
    how late each wake-up is."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=KEEP)
        self.worst = 0.0
        self._cached: dict[str, float] | None = None
        self._cached_at = 0.0

    async def watch(self, cells_running: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = INTERVAL_S if cells_running() else QUIET_INTERVAL_S
            asked = loop.time() + interval
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - asked)
            self.samples.append(lag)
            if lag > self.worst:
                self.worst = lag

    def summary_ms(self, max_age_s: float = 0.0) -> dict[str, float]:
        """p50, p99 and max in milliseconds; reuses one computed less than `max_age_s` ago (UIs ask
        15 times a second, and sorting the samples each time would itself load the loop)."""
        now = time.monotonic()
        if self._cached is None or now - self._cached_at >= max_age_s:
            ordered = sorted(self.samples)
            self._cached = {
                "p50": round(percentile(ordered, 0.5) * 1000, 2),
                "p99": round(percentile(ordered, 0.99) * 1000, 2),
                "max": round(self.worst * 1000, 2),
            }
            self._cached_at = now
        return self._cached
