"""The engine's own thread and event loop: a run goes there, calls are handed to it in the order given
(`call_soon_threadsafe`), and its result, or the error that ended it, is waited for from other threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from treadle.engine.errors import TreadleError

T = TypeVar("T")
R = TypeVar("R")
COMMAND_TIMEOUT_S = 10.0
"""How long a command waits for the engine loop to answer."""


class EngineThread(Generic[R]):
    """Runs `main` on a loop of its own, then `after` (the loop stopped) for the result that `wait` returns."""

    def __init__(self, main: Callable[[], Coroutine[Any, Any, None]], after: Callable[[], R]) -> None:
        self._main = main
        self._after = after
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._result: R | None = None

    def start(self) -> None:
        """Start the thread; returns once calls may be handed to it."""
        self._thread = threading.Thread(target=self._run, name="treadle-engine", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            task = loop.create_task(self._main())
            # Commands may arrive once the run's first step (admission, workers) has been taken.
            loop.call_soon(self._ready.set)
            loop.run_until_complete(task)
            self._result = self._after()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self._error = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._ready.set()
            self._done.set()

    def wait(self, timeout: float | None = None) -> R | None:
        """The result once the run has finished; None if `timeout` passed first."""
        if not self._done.wait(timeout):
            return None
        if self._error is not None:
            if isinstance(self._error, TreadleError):
                raise self._error
            raise RuntimeError(f"the engine failed: {self._error!r}") from self._error
        return self._result

    def ended(self, timeout: float | None = None) -> bool:
        """Whether the thread has ended, waiting up to `timeout` for it (an error is not raised here)."""
        return self._done.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def failed(self) -> bool:
        """The run ended in an error (`wait` raises it) rather than with its result."""
        return self._done.is_set() and self._error is not None

    def call(self, fn: Callable[[], T]) -> T | None:
        """Run `fn` on the engine loop and return its result; None once the run is over."""
        loop = self.loop
        if loop is None or self._done.is_set():
            return None
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop closed between the check and the call
            return None
        try:
            return future.result(COMMAND_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return None
