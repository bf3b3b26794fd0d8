"""The loop-lag sampler (engine/loop_health.py) wakes 50 times a second while cells run, and a few times
a second while none does: a run held open for retries, or paused, costs next to no CPU."""

from __future__ import annotations

import asyncio

from treadle.engine.loop_health import INTERVAL_S, QUIET_INTERVAL_S, LoopLag

WINDOW_S = 1.0


async def _samples_in_window(cells_running: bool) -> int:
    lag = LoopLag()
    watch = asyncio.create_task(lag.watch(lambda: cells_running))
    await asyncio.sleep(WINDOW_S)  # the window measured, not a wait for something to happen
    watch.cancel()
    return len(lag.samples)


async def test_the_sampler_wakes_often_only_while_cells_run():
    running = await _samples_in_window(cells_running=True)
    quiet = await _samples_in_window(cells_running=False)
    assert quiet <= WINDOW_S / QUIET_INTERVAL_S
    assert running > 4 * quiet  # ~50 against 4 (fewer on a loaded machine: late wake-ups)
    assert running <= WINDOW_S / INTERVAL_S
