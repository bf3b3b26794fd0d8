"""The services behind `ctx.llm`: what calls made from inside cells get from the run.

A call waits for a request slot of its model as an llm column's cell does (the run unpaused, the
model's limit, pace and Retry-After), draws its backoff jitter from the run's random generator and is
traced as a child span of its cell. treadle.engine.context reaches these through its `CallServices`
protocol. The scheduler wakes waiting calls when one of its own cells frees a model's slot, and all of
them when a limit, a model's pace or the pause changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

from treadle.engine.policy import FailurePolicies, error_message
from treadle.engine.rate_limits import ModelRate
from treadle.engine.tracing import Tracer, TraceStatus


class Workers(Protocol):
    """What the services need of the scheduler (treadle.engine.scheduler.Scheduler)."""

    paused: bool

    def model_slot_freed(self) -> None:
        """A model's request slot came free: an idle worker may be waiting for it."""


class CellServices:
    """Request slots of the models, the clock, backoff and tracing, for calls made inside cells."""

    def __init__(
        self,
        rates: dict[str, ModelRate],
        policies: FailurePolicies,
        tracer: Tracer,
        clock: Callable[[], float],
        rng: random.Random,
        workers: Workers,
    ) -> None:
        self._rates = rates
        self._retry = policies.retry
        self._redact = policies.redact
        self._tracer = tracer
        self._clock = clock
        self._rng = rng
        self._workers = workers
        self.waiters: dict[str, deque[asyncio.Future[None]]] = {}
        """Per model limit name: calls waiting for a request slot (empty until a call waits)."""

    def clock(self) -> float:
        return self._clock()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1` of a call that failed (not for a rate limit)."""
        return self._retry.delay(attempt, retry_after, self._rng)

    async def acquire_model(self, key: str) -> None:
        """Wait until a request to a model may start (the run unpaused, its slot, pace and Retry-After),
        then take its slot."""
        rate = self._rates[key]
        loop = asyncio.get_running_loop()
        while True:
            delay = math.inf if self._workers.paused else rate.start_delay(self._clock())
            if delay == 0:
                break
            waiter = loop.create_future()
            self.waiters.setdefault(key, deque()).append(waiter)
            if delay == math.inf:
                await waiter
            else:  # the pace or a Retry-After: back when it allows, or sooner when a slot frees
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), delay)
                waiter.cancel()  # a waiter left behind would take the wake-up meant for another
        rate.started(self._clock())

    def release_model(self, key: str) -> None:
        self._rates[key].finished()
        self.wake_model(key)
        self._workers.model_slot_freed()

    def wake_model(self, key: str) -> None:
        """Wake one call waiting for the model `key`."""
        waiters = self.waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all_models(self) -> None:
        """Every waiting call looks again (a limit, a pace or the pause changed)."""
        for waiters in self.waiters.values():
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def trace_child(
        self,
        row: int,
        node: int,
        slot: int,
        model: str,
        attempt: int,
        times: tuple[float, float, float],
        status: TraceStatus,
        error: BaseException | None,
        usage: dict | None = None,
        retry_after: float | None = None,
    ) -> None:
        """One attempt of a call made by the cell (row, node) that runs on execution slot `slot`;
        `times` is (ready, started, ended)."""
        message = None if error is None else self._redact(error_message(error))
        child = (model, usage)
        self._tracer.record(row, node, attempt, slot, *times, status, error, message, None, child, retry_after)
