"""How aiohttp hands requests to the SimServer: its low-level server, chat completions first.

Under load nearly every request is a chat completion, so it goes straight to its handler; an
Application would first look its route up, make its own request object and run its handler chain,
~4% of the simulator's instructions per request (bench/RESULTS.md). The other routes are resolved by
aiohttp's own router, as an Application does, so their answers (404, 405 with Allow, HEAD,
`Expect: 100-continue`) are the ones aiohttp gives.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from aiohttp import hdrs, web

from .server import MODELS_PATH, SimServer

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader
    from aiohttp.web_protocol import RequestHandler

CHAT_PATH = "/v1/chat/completions"
_MAX_BODY = 64 * 1024**2  # long prompts are normal; aiohttp's 1 MiB default is not


def web_server(sim: SimServer) -> web.Server:
    """The aiohttp server for `sim`: no access log (a line per request would cost more than the
    request), and a client that gives up cancels its handler (which frees a hung one)."""
    loop = asyncio.get_running_loop()

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=_MAX_BODY)

    return web.Server(Dispatcher(sim), request_factory=make_request, handler_cancellation=True, access_log=None)


class Dispatcher:
    """The low-level server's handler: a chat completion to SimServer.chat, the rest through the router."""

    def __init__(self, sim: SimServer) -> None:
        self._chat = sim.chat
        self._router = router = web.UrlDispatcher()
        router.add_get(MODELS_PATH, sim.list_models)
        router.add_get(MODELS_PATH + "/{model}", sim.get_model)
        router.add_post(CHAT_PATH, sim.chat)  # for its other spellings, an Expect header, a 405's Allow
        router.add_get("/stats", sim.get_stats)
        router.add_post("/stats/reset", sim.reset_stats)
        router.add_get("/requests", sim.get_requests)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        # Only the path as it is spelled most often; any other spelling the router resolves as before.
        if request.method == "POST" and request.rel_url.raw_path == CHAT_PATH and hdrs.EXPECT not in request.headers:
            return await self._chat(request)
        return await self._route(request)

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        """What an Application does with a request: resolve its route, answer an Expect header, call
        the handler (which, for no route or the wrong method, raises aiohttp's 404 or 405)."""
        routed = cast(web.Request, request)  # the router reads only what every request has: method, path, headers
        match = await self._router.resolve(routed)
        if request.headers.get(hdrs.EXPECT):
            early = await match.expect_handler(routed)
            await request.writer.drain()
            if early is not None:
                return early
        return await match.handler(routed)
