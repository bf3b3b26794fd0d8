"""How late the engine's event loop wakes up: the symptom of blocking work on the loop."""

from __future__ import annotations

import asyncio
from collections import deque

from treadle.engine.stats import percentile

INTERVAL_S = 0.05
KEEP = 6000  # five minutes of samples at 20 a second


class LoopLag:
    """A timer that asks to wake every 50 ms and records how late each wake-up is."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=KEEP)
        self.worst = 0.0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            lag = max(0.0, loop.time() - asked)
            self.samples.append(lag)
            if lag > self.worst:
                self.worst = lag

    def summary_ms(self) -> dict[str, float]:
        ordered = sorted(self.samples)
        return {
            "p50": round(percentile(ordered, 0.5) * 1000, 2),
            "p99": round(percentile(ordered, 0.99) * 1000, 2),
            "max": round(self.worst * 1000, 2),
        }
