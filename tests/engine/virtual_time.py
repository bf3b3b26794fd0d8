"""An event loop on a virtual clock, for tests of timing: backoff, timeouts, deadlines.

asyncio's timers (`call_later`, `asyncio.sleep`, `wait_for`) and the engine's injected clock all read
one `VirtualClock`. Whenever the loop has nothing to do until its next timer, the clock jumps to that
timer instead of the loop sleeping: a test runs in no real time, and the times it sees are exact.
Only coroutines on the loop move things along; work in threads would not be waited for.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualClock:
    """Seconds that pass only when the loop waits; past `limit_s` of them a test that hangs fails."""

    def __init__(self, start: float = 1000.0, limit_s: float = 100_000.0) -> None:
        self.now = start
        self._end = start + limit_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.now > self._end:
            raise RuntimeError(f"virtual time ran past its limit ({self.now:g}): the run under test never ends")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # no timer and nothing ready: only another thread could wake the loop
            raise RuntimeError("the loop waits with no timer set: the run under test hangs")
        self._clock.advance(timeout)
        return events


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_JumpingSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock.now


def run_virtual(main: Coroutine[Any, Any, T], clock: VirtualClock) -> T:
    """Run `main` to its end on a new loop whose time is `clock`."""
    loop = _VirtualLoop(clock)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


async def until(condition: Callable[[], bool], within_s: float = 3600.0, step_s: float = 0.01) -> None:
    """Wait until `condition()` holds, looking every `step_s` virtual seconds; fail after `within_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"still not so after {within_s:g} virtual seconds")
        await asyncio.sleep(step_s)
