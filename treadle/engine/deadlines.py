"""Per-attempt timeouts for running cells, enforced by one periodic check.

`asyncio.timeout` per cell costs a timer handle and two context-manager calls on every attempt,
about a third of the engine's time for cheap cells; a watchdog that looks at the (at most
slot-limit many) running cells a few times a second costs nothing per cell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadlines:
    def __init__(self, shortest_timeout_s: float, clock: Callable[[], float]) -> None:
        self.tick_s = max(0.005, min(0.25, shortest_timeout_s / 20))
        self._clock = clock
        self.running: dict[int, tuple[float, asyncio.Task]] = {}
        """cell -> (deadline, the worker task awaiting it)."""
        self._expired: set[int] = set()

    def expired(self, cell: int, task: asyncio.Task) -> bool:
        """Whether a CancelledError in `cell` came from its deadline (then the cancel is taken back)."""
        if cell not in self._expired:
            return False
        self._expired.discard(cell)
        task.uncancel()
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = self._clock()
            for cell, (deadline, task) in list(self.running.items()):
                if deadline < now and cell not in self._expired:
                    self._expired.add(cell)
                    task.cancel()
