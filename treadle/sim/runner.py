"""Ways to run the simulator: on the current loop, on its own thread, or in its own process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from .config import SimConfig
from .dispatch import web_server
from .request_log import REQUEST_LOG_MAX
from .server import SimServer

_SHUTDOWN_GRACE_S = 1.0  # in-flight requests get this long on shutdown before being cancelled


class Simulator:
    """`async with Simulator(SimConfig(...)) as base_url:` serves on the current event loop.

    port=0 lets the OS pick a free port; base_url is like "http://127.0.0.1:PORT/v1". `clock`
    (monotonic seconds) drives the rate limits and the request log's times: a test can inject a fake
    one to refill the buckets without sleeping. `request_log_max` bounds GET /requests.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        request_log_max: int = REQUEST_LOG_MAX,
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.clock = clock
        self.request_log_max = request_log_max
        self.base_url: str | None = None
        self._server: SimServer | None = None
        self._runner: web.ServerRunner | None = None

    async def start(self) -> str:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._server = SimServer(self.config, clock=self.clock, request_log_max=self.request_log_max)
        runner = web.ServerRunner(web_server(self._server), shutdown_timeout=_SHUTDOWN_GRACE_S)
        await runner.setup()
        try:
            # A deep backlog: benches open hundreds of connections at once.
            await web.TCPSite(runner, self.host, self.port, backlog=2048).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            if self._server is not None:
                self._server.close()
            await runner.cleanup()

    def stats(self) -> dict[str, Any]:
        """The /stats counters (call from the loop the simulator runs on)."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the /stats counters and empty the request log (as POST /stats/reset does)."""
        if self._server is not None:
            self._server.stats.reset()
            self._server.requests.clear()

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The GET /requests entries from arrival index `since` on (call from the simulator's loop)."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return [entry.to_json() for entry in self._server.requests.since(since)]

    def in_thread(self) -> SimulatorThread:
        return SimulatorThread(self)

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class SimulatorThread:
    """`with SimulatorThread(SimConfig(...)) as base_url:` serves from a thread with its own loop.

    For sync callers, and for benches that keep the server's CPU apart from the client's loop.
    """

    def __init__(self, sim: Simulator | SimConfig | None = None) -> None:
        self.sim = sim if isinstance(sim, Simulator) else Simulator(sim)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), name="treadle-sim")
        self._thread.start()
        try:
            return ready.result()
        except BaseException:
            self._thread.join()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join()

    def stats(self) -> dict[str, Any]:
        return self._call(self.sim.stats)

    def reset_stats(self) -> None:
        self._call(self.sim.reset_stats)

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call(lambda: self.sim.requests(since))

    def _call(self, fn: Callable[[], Any]) -> Any:
        # The counters live on the server's loop: read them there, not racing it from here.
        if self._loop is None:
            raise RuntimeError("simulator thread not running")

        async def on_loop() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result()

    async def _main(self, ready: concurrent.futures.Future[str]) -> None:
        try:
            url = await self.sim.start()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready.set_result(url)
        try:
            await self._stop.wait()
        finally:
            await self.sim.stop()


async def serve(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; on_ready gets the base URL once the port is open."""
    async with Simulator(config, host=host, port=port) as url:
        if on_ready is not None:
            on_ready(url)
        await asyncio.get_running_loop().create_future()  # forever, until cancelled
