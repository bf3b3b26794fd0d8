"""The simulator's handlers: auth, rate limits, faults and latency around a reply, and a log (dispatch.py
hands them their requests)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .book import BookError, load_book
from .config import SimConfig
from .faults import Dice
from .limits import RateLimiter, retry_hint
from .replies import ChatRequest, Reply, RequestError, make_reply, parse_request
from .request_log import REQUEST_LOG_MAX, LoggedRequest, RequestLog, Status
from .stats import Stats
from .wire import completion_body, dumps, error_body, models_body, stream_events

DEFAULT_MODELS = ("treadle-sim",)  # what /v1/models lists when any name is accepted
MODELS_PATH = "/v1/models"
_JSON = "application/json"


@dataclass(slots=True)
class _Visit:
    """One chat request on its way through the pipeline."""

    entry: LoggedRequest
    limits: dict[str, str] | None = None  # x-ratelimit-* from admission; None: not admitted or refused yet


class SimServer:
    """Owns the simulator's state and answers its routes (dispatch.web_server() serves them).

    `clock` (monotonic seconds) drives the rate limits and the request log's times; tests inject a
    fake one to step the buckets without sleeping. `request_log_max` bounds GET /requests.
    """

    def __init__(
        self,
        config: SimConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        request_log_max: int = REQUEST_LOG_MAX,
    ) -> None:
        self.config = config
        self.book = load_book(config.book) if config.book else None
        self.stats = Stats()
        self.requests = RequestLog(request_log_max)
        self.dice = Dice(config)
        self.clock = clock
        self.started_at = clock()
        self._limiters: dict[str | None, RateLimiter] = {}
        self._auth = f"Bearer {config.api_key}".encode() if config.api_key else None
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()  # set on shutdown: releases hung requests at once

    def close(self) -> None:
        """Shutting down: release hung requests at once."""
        self._closing.set()

    # --- routes -------------------------------------------------------------------------------

    async def list_models(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._auth_error(request) or _json(200, models_body(self.config.models or DEFAULT_MODELS))

    async def get_model(self, request: web.BaseRequest) -> web.StreamResponse:
        name = request.path.removeprefix(MODELS_PATH + "/")  # the router matched MODELS_PATH/{model}
        if denied := self._auth_error(request):
            return denied
        if self.config.models and name not in self.config.models:
            return self._unknown_model(name)
        return _json(200, dumps({"id": name, "object": "model", "created": 0, "owned_by": "treadle-sim"}))

    async def get_stats(self, _request: web.BaseRequest) -> web.StreamResponse:
        return _json(200, dumps(self.stats.snapshot()))

    async def reset_stats(self, _request: web.BaseRequest) -> web.StreamResponse:
        self.stats.reset()
        self.requests.clear()
        return _json(200, dumps(self.stats.snapshot()))

    async def get_requests(self, request: web.BaseRequest) -> web.StreamResponse:
        """`{"requests": [entry, ...], "next": N}`: the log from arrival index `?since=` on (default 0)."""
        text = request.query.get("since", "0")
        since = int(text) if text.isdecimal() else -1
        if since < 0:
            message = f"since must be an arrival index (an integer >= 0), got {text!r}"
            return _error(400, message, "invalid_request_error", param="since")
        entries = [entry.to_json() for entry in self.requests.since(since)]
        return _json(200, dumps({"requests": entries, "next": self.requests.next_index}))

    async def chat(self, request: web.BaseRequest) -> web.StreamResponse:
        self.stats.started()
        visit = _Visit(self.requests.arrived(self._elapsed()))
        outcome: Status = "cancelled"  # what stays if the client goes away and aiohttp cancels us
        try:
            result = await self._chat(request, visit)
            if isinstance(result, str):  # no answer sent: the connection was cut
                outcome = result
                return web.Response()  # never written: the transport is already aborted
            outcome = result.status
            if not result.prepared:  # a stream was sent with its headers already
                result.headers.update(self._limit_headers(visit))
            return result
        finally:
            visit.entry.status = outcome
            visit.entry.t_end = self._elapsed()
            self.stats.finished(str(outcome))

    # --- the chat completion pipeline ---------------------------------------------------------

    async def _chat(self, request: web.BaseRequest, visit: _Visit) -> web.StreamResponse | str:
        """The answer, or the outcome when none is sent; x-ratelimit-* headers are added by chat()."""
        if denied := self._auth_error(request):
            return denied
        try:
            chat = parse_request(await request.read())
            visit.entry.model = chat.model
            self.stats.by_model[chat.model] += 1
            if self.config.models and chat.model not in self.config.models:
                return self._unknown_model(chat.model)
            reply = make_reply(chat, self.book, self.config.reasoning)
            visit.entry.prompt_tokens = reply.prompt_tokens
        except RequestError as exc:
            return _error(400, str(exc), "invalid_request_error", param=exc.param)
        except BookError as exc:
            return _error(500, str(exc), "server_error")

        limiter = self.limiter(chat.model)
        if limiter.active:
            verdict = limiter.admit(reply.prompt_tokens + reply.completion_tokens)
            visit.limits = verdict.headers
            if not verdict.allowed:
                message = "Rate limit reached (simulated). Please try again later."
                headers = self._retry_headers(visit, verdict.retry_after_s)
                return _error(429, message, "rate_limit_exceeded", "rate_limit_exceeded", headers=headers)

        # Drawn after the rate limit so that only admitted attempts count as "seen" for the seed.
        rng = self.dice.rng_for(chat.digest if self.dice.seeded else "")  # an unseeded digest is never used
        fate = self.dice.fate(rng, reply.completion_tokens)
        if fate.fault is not None:
            self.stats.faults[fate.fault] += 1
        if fate.fault == "overload":  # shed at once, as an overloaded server does: no latency
            message = "The server is overloaded or not ready yet (simulated)."
            headers = self._retry_headers(visit, self.config.overload_retry_after_s)
            return _error(503, message, "server_error", "overloaded", headers=headers)
        if fate.fault == "hang":
            return await self._hang(request)
        await _sleep(fate.latency_s if chat.stream else fate.total_s)
        if fate.fault == "fail":
            wait = self.config.fail_retry_after_s
            message = "The server had an error while processing your request (simulated)."
            hint = self._retry_headers(visit, wait) if wait is not None else None
            return _error(500, message, "server_error", headers=hint)
        if fate.fault == "drop":
            return _abort(request, "dropped")
        if fate.fault == "malformed":
            return _malformed(chat.stream)

        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        ident = f"chatcmpl-sim{next(self._ids)}"
        created = int(time.time())
        if chat.stream:
            return await self._stream(request, chat, reply, ident, created, self._limit_headers(visit))
        return web.Response(body=completion_body(chat, reply, ident, created), content_type=_JSON)

    async def _stream(
        self,
        request: web.BaseRequest,
        chat: ChatRequest,
        reply: Reply,
        ident: str,
        created: int,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        tps = self.config.tokens_per_s
        loop = asyncio.get_running_loop()
        start, sent, pending = loop.time(), 0.0, bytearray()
        for event, tokens in stream_events(chat, reply, ident, created):
            if tps:
                sent += tokens
                wait = start + sent / tps - loop.time()
                if wait > 0.002:  # pace to tokens_per_s; tiny waits are batched into one write
                    await response.write(bytes(pending))
                    pending.clear()
                    await asyncio.sleep(wait)
            pending += event
        await response.write(bytes(pending))
        await response.write_eof()
        return response

    async def _hang(self, request: web.BaseRequest) -> str:
        # Released by the client giving up (aiohttp cancels this handler), by shutdown, or by the cap.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.config.hang_max_s)
        return _abort(request, "hung")

    # --- helpers ------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.clock() - self.started_at

    def _limit_headers(self, visit: _Visit) -> dict[str, str]:
        """x-ratelimit-* for this answer: as admission left them, or as they stand if it never got there."""
        limiter = self.limiter(visit.entry.model)
        if not self.config.ratelimit_headers or not limiter.active:
            return {}
        return visit.limits if visit.limits is not None else limiter.headers()

    def limiter(self, model: str | None) -> RateLimiter:
        """The limits a request to `model` counts against: one set for the server, or with
        `limit_per_model` each model's own (as providers set them; rpm and tpm then apply to each)."""
        if not self.config.limit_per_model:
            model = None
        limiter = self._limiters.get(model)
        if limiter is None:
            config = self.config
            limiter = self._limiters[model] = RateLimiter(
                config.rpm, config.tpm, clock=self.clock, window_s=config.limit_window_s
            )
        return limiter

    def _retry_headers(self, visit: _Visit, wait_s: float) -> dict[str, str]:
        hint = retry_hint(wait_s, self.config.retry_after_format, time.time())
        visit.entry.retry_after_s = hint.wait_s
        return hint.headers

    def _auth_error(self, request: web.BaseRequest) -> web.Response | None:
        if self._auth is None:
            return None
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, self._auth):
            return None
        message = "Incorrect API key provided (simulated endpoint)."
        return _error(401, message, "invalid_request_error", "invalid_api_key")

    def _unknown_model(self, name: str) -> web.Response:
        message = f"The model `{name}` does not exist or you do not have access to it."
        return _error(404, message, "invalid_request_error", "model_not_found", param="model")


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return _json(status, error_body(message, kind, code, param), headers)


def _malformed(stream: bool) -> web.Response:
    """A 200 whose JSON is cut short: inside an SSE event for a stream, else the whole body."""
    broken = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind'
    if stream:
        return web.Response(body=b"data: " + broken + b"\n\ndata: [DONE]\n\n", content_type="text/event-stream")
    return _json(200, broken)


def _abort(request: web.BaseRequest, outcome: str) -> str:
    if request.transport is not None:
        request.transport.abort()
    return outcome


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
