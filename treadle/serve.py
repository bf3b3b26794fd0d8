"""Live progress over HTTP: `GET /snapshot` (JSON), `GET /events` (Server-Sent Events), `GET /` (a page),
`GET /metrics` (the run's metrics so far, treadle.engine.analysis, JSON) and `GET /report` (the HTML report);
and commands that fix a column and rerun cells (treadle/serve_commands.py).

`ProgressServer` runs an aiohttp server on its own thread and event loop, so it never blocks the
engine: it reads the run only through the controller's thread-safe API (`snapshot()` runs in an
executor thread; events come from one `subscribe()` queue, read by a bridge thread and fanned out
to every connected client).

Security: on a loopback address (127.0.0.1, ::1, localhost) a token is optional, and requests must
name a loopback host (a web page cannot reach the server through DNS rebinding). Any other address
needs a token: every request must carry `Authorization: Bearer <token>` or `?token=<token>`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import queue
import threading
from typing import TYPE_CHECKING, Any

from aiohttp import web

from treadle.engine.events import RunEvent, RunFinished
from treadle.serve_commands import add_command_routes

if TYPE_CHECKING:
    from treadle.engine.analysis.cost import Prices
    from treadle.engine.analysis.metrics_record import RunMetrics
    from treadle.engine.controller import RunController, Snapshot

KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies and browsers from closing an idle event stream."""
CLIENT_BACKLOG = 10_000
"""Events a slow client may fall behind by before its stream is closed (it reconnects, fresh)."""
MAX_WINDOW_ROWS = 1_000
METRICS_EVERY_S = 2.0
"""/metrics and /report compute from the run's trace at most this often (requests meanwhile share the result)."""
_CLOSE = object()
_LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def event_dict(event: RunEvent) -> dict[str, Any]:
    """A RunEvent as the plain dict its JSON line holds: type, t, and the event's fields."""
    return json.loads(event.to_json())


def snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    """A controller Snapshot as plain JSON-ready data (limits and recent events as dicts)."""
    data = {
        field.name: getattr(snapshot, field.name)
        for field in dataclasses.fields(snapshot)
        if field.name not in ("limits", "recent_events", "window", "rates", "workers")
    }
    data["columns"] = list(snapshot.columns)
    data["limits"] = {name: dataclasses.asdict(limit) for name, limit in snapshot.limits.items()}
    data["rates"] = {name: dataclasses.asdict(rate) for name, rate in snapshot.rates.items()}
    data["recent_events"] = [event_dict(event) for event in snapshot.recent_events]
    data["window"] = {str(row): list(states) for row, states in snapshot.window.items()}
    data["workers"] = [dataclasses.asdict(worker) for worker in snapshot.workers]
    data["finished_cells"] = snapshot.finished_cells
    data["total_cells"] = snapshot.total_cells
    return data


def _sse(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n").encode()


class _Client:
    __slots__ = ("overflowed", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=CLIENT_BACKLOG)
        self.overflowed = False


class ProgressServer:
    """Serves a run's progress over HTTP from its own thread; `start()` returns the base URL."""

    def __init__(
        self,
        controller: RunController,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        keepalive_s: float = KEEPALIVE_S,
        prices: Prices | None = None,
    ) -> None:
        """`prices` (per model: input_per_1m, output_per_1m) give /metrics and /report a cost."""
        if token is not None and not token.strip():
            raise ValueError("the server token is empty: give a non-empty token, or none on a loopback address")
        if not is_loopback(host) and token is None:
            raise ValueError(
                f"serving progress on {host or 'every address'} (beyond this machine) needs a token: "
                "pass one (--serve-token) or bind 127.0.0.1"
            )
        self.controller = controller
        self.host = host
        self.port = port
        self.token = token
        self.keepalive_s = keepalive_s
        self.prices = prices
        self._metrics: tuple[float, RunMetrics] | None = None
        self._metrics_lock: asyncio.Lock | None = None
        self.base_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bridge: threading.Thread | None = None
        self._events: queue.SimpleQueue[Any] | None = None
        self._stop: asyncio.Event | None = None
        self._clients: set[_Client] = set()
        self._ended = False

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving; returns the base URL (like http://127.0.0.1:PORT). Raises OSError if the port is taken."""
        if self._thread is not None:
            raise RuntimeError("the progress server is already started")
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="treadle-serve", daemon=True)
        self._thread.start()
        try:
            self.base_url = ready.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        # Subscribed once serving: nobody knew the address before, so no client missed an event.
        self._events = self.controller.subscribe()
        self._bridge = threading.Thread(target=self._forward_events, name="treadle-serve-events", daemon=True)
        self._bridge.start()
        return self.base_url

    def stop(self) -> None:
        """Close every stream and stop serving (waits for the server thread)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._events is not None:
            self.controller.unsubscribe(self._events)
            self._events.put(_CLOSE)
        if self._bridge is not None:
            self._bridge.join()
            self._bridge = None

    def __enter__(self) -> ProgressServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: concurrent.futures.Future[str]) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: concurrent.futures.Future[str]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._metrics_lock = asyncio.Lock()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException as exc:
            await runner.cleanup()
            ready.set_exception(exc)
            return
        port = runner.addresses[0][1]
        host = self.host
        if host in ("0.0.0.0", "", None):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        self.port = port
        ready.set_result(f"http://{f'[{host}]' if ':' in host else host}:{port}")
        await self._stop.wait()
        for client in list(self._clients):
            self._close_client(client)
        await runner.cleanup()

    # ---- events: one subscription, fanned out ----------------------------------------------------------

    def _forward_events(self) -> None:
        """Bridge thread: the controller's queue to the server loop."""
        assert self._events is not None
        while True:
            event = self._events.get()
            if event is _CLOSE:
                return
            loop = self._loop
            if loop is None or loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(self._fan_out, event)
            except RuntimeError:  # the server loop closed meanwhile
                continue

    def _fan_out(self, event: RunEvent) -> None:
        if isinstance(event.payload, RunFinished):
            self._ended = True
        for client in self._clients:
            if client.overflowed:
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                client.overflowed = True
                self._close_client(client)

    def _close_client(self, client: _Client) -> None:
        while True:
            try:
                client.queue.put_nowait(_CLOSE)
                return
            except asyncio.QueueFull:
                client.queue.get_nowait()

    # ---- HTTP --------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/snapshot", self._snapshot)
        app.router.add_get("/events", self._event_stream)
        app.router.add_get("/metrics", self._metrics_json)
        app.router.add_get("/report", self._report)
        add_command_routes(app, self.controller)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None:
            given = request.query.get("token")
            header = request.headers.get("Authorization", "")
            if header[:7].lower() == "bearer ":
                given = header[7:].strip()
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.json_response(
                    {"error": "a token is required: Authorization: Bearer <token> or ?token=<token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="treadle"'},
                )
        elif not is_loopback(request.url.host if request.host else None):
            return web.json_response({"error": "this server answers only requests for a loopback host"}, status=403)
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def _take_snapshot(self, rows: list[int] | None = None) -> Snapshot:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.controller.snapshot, rows or ())

    async def _snapshot(self, request: web.Request) -> web.Response:
        rows = None
        if "rows" in request.query:
            try:
                rows = _parse_rows(request.query["rows"])
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(snapshot_dict(await self._take_snapshot(rows)), dumps=_dumps)

    async def _event_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        client = _Client()
        self._clients.add(client)  # before the snapshot, so no event falls between the two
        try:
            snapshot = await self._take_snapshot()
            await response.write(b"retry: 2000\n" + _sse(_dumps(snapshot_dict(snapshot)), "snapshot"))
            ended = self._ended or self.controller.finished
            ended = ended or any(isinstance(e.payload, RunFinished) for e in snapshot.recent_events)
            while not ended:
                try:
                    event = await asyncio.wait_for(client.queue.get(), self.keepalive_s)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is _CLOSE:
                    return response
                await response.write(_sse(event.to_json()))
                ended = isinstance(event.payload, RunFinished)
            await response.write(_sse("{}", "end"))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._clients.discard(client)
        return response

    async def _run_metrics(self) -> RunMetrics:
        """Metrics of the run so far, recomputed at most every METRICS_EVERY_S (off the server's loop)."""
        from treadle.engine.analysis.metrics import measure_run

        assert self._metrics_lock is not None
        loop = asyncio.get_running_loop()
        async with self._metrics_lock:
            if self._metrics is None or loop.time() - self._metrics[0] >= METRICS_EVERY_S:
                metrics = await loop.run_in_executor(None, measure_run, self.controller.run_dir, self.prices)
                self._metrics = (loop.time(), metrics)
            return self._metrics[1]

    async def _metrics_or_error(self) -> RunMetrics | web.Response:
        from treadle.engine.errors import TreadleError

        try:
            return await self._run_metrics()
        except TreadleError as exc:  # nothing traced or summarised yet
            return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "1"})

    async def _metrics_json(self, request: web.Request) -> web.Response:
        metrics = await self._metrics_or_error()
        return metrics if isinstance(metrics, web.Response) else web.json_response(metrics.to_json(), dumps=_dumps)

    async def _report(self, request: web.Request) -> web.Response:
        from treadle.engine.analysis.per_worker import measure_workers
        from treadle.report import render_html

        metrics = await self._metrics_or_error()
        if isinstance(metrics, web.Response):
            return metrics
        loop = asyncio.get_running_loop()
        workers = await loop.run_in_executor(None, measure_workers, self.controller.run_dir, metrics.wall_s)
        refresh = None if self._ended or self.controller.finished else 5
        page = render_html(metrics, refresh_s=refresh, workers=workers)
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html", charset="utf-8")


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


def _parse_rows(text: str) -> list[int]:
    """`START-END` (inclusive) or `A,B,C`: at most MAX_WINDOW_ROWS rows."""
    try:
        if "-" in text:
            start, end = (int(part) for part in text.split("-", 1))
            rows = list(range(start, min(end, start + MAX_WINDOW_ROWS - 1) + 1))
        else:
            rows = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"rows must be START-END or A,B,C, got {text!r}") from None
    if len(rows) > MAX_WINDOW_ROWS:
        raise ValueError(f"at most {MAX_WINDOW_ROWS} rows at once")
    return rows


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>treadle: live</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}
td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}
#log{font:12px monospace;white-space:pre;max-height:300px;overflow:auto;background:#f7f7f7;padding:6px}
</style></head><body>
<h1>treadle: <span id="status">connecting</span></h1>
<p id="summary"></p><p><a id="report" href="report">report: time, concurrency, cost</a></p>
<table id="cells"></table>
<h2>Limits</h2><table id="limits"></table>
<h2>Events</h2><div id="log"></div>
<script>
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (id) => document.getElementById(id);
$("report").href = "report" + q;
function cell(tag, text) { const e = document.createElement(tag); e.textContent = text; return e; }
function table(el, headers, rows) {
  el.replaceChildren();
  const head = document.createElement("tr"); headers.forEach(h => head.append(cell("th", h))); el.append(head);
  rows.forEach(r => {
    const tr = document.createElement("tr"); r.forEach(v => tr.append(cell("td", v))); el.append(tr);
  });
}
function show(s) {
  $("status").textContent = s.status;
  $("summary").textContent = `${s.finished_cells} of ${s.total_cells} cells finished, ${s.elapsed_s.toFixed(1)} s`;
  const states = Object.keys(s.cells);
  table($("cells"), ["column", ...states], [
    ...s.columns.map(c => [c, ...states.map(k => s.by_column[c][k])]), ["all", ...states.map(k => s.cells[k])]]);
  table($("limits"), ["limit", "total", "in use", "peak"],
    Object.entries(s.limits).map(([n, l]) => [n, l.total, l.in_use, l.peak]));
}
function log(text) { const l = $("log"); l.textContent += text + "\\n"; l.scrollTop = l.scrollHeight; }
let pending = null;
async function fetchSnapshot() {
  pending = null; const r = await fetch("snapshot" + q); if (r.ok) show(await r.json());
}
function refresh() { if (!pending) pending = setTimeout(fetchSnapshot, 300); }
const events = new EventSource("events" + q);
events.addEventListener("snapshot", e => show(JSON.parse(e.data)));
events.onmessage = e => { const ev = JSON.parse(e.data); if (ev.type !== "progress") log(e.data); refresh(); };
events.addEventListener("end", () => { events.close(); log("(run finished)"); refresh(); });
</script></body></html>
"""
