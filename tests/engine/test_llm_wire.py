"""The prebuilt chat completion request (`ModelClient.complete`) against a scripted aiohttp endpoint.

Each answer the endpoint can give is classified on the prebuilt path exactly as the openai client's
own request method (`post`, whose exceptions the create and ainvoke paths also raise) gets it
classified; and the request itself is byte for byte what that method sends.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from typing import Any

import pytest
from aiohttp import web

from treadle.engine.errors import CellError, FatalRunError, RetryableCellError
from treadle.engine.generators.llm_client import REFUSED_BEFORE_STOP, ModelClient, _httpx
from treadle.engine.pipeline import ModelConfig

KEY = "sk-wiretest0123456789abcdef"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}
BODY = {"model": "wire-model", "temperature": 0.5, "top_k": 3, "messages": [{"role": "user", "content": "é?"}]}


def error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    work: Callable[[ModelClient], Awaitable[Any]],
    timeout_s: float = 5,
) -> Any:
    """Serve `handler` at /v1/chat/completions on this loop and run `work` with a client pointed at it."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = ModelClient(
        name="m",
        config=ModelConfig(model="wire-model", temperature=0.5, extra_body={"top_k": 3}),
        base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1",
        api_key=KEY,
        api_key_env="WIRE_KEY",
        timeout_s=timeout_s,
    )
    try:
        return await work(client)
    finally:
        await client.aclose()
        await runner.cleanup()


async def outcome(client: ModelClient, path: str) -> Any:
    """The answer, or the treadle error the failure becomes, on the prebuilt path or openai's `post`."""
    state = client.state()
    try:
        if path == "send":
            return await client.complete(state, BODY)
        return await state.llm.root_async_client.post("/chat/completions", body=BODY, cast_to=object)
    except Exception as exc:
        classified = client.failure(state, exc)
        assert classified is not None, repr(exc)
        return classified


def test_the_request_is_what_the_openai_client_sends(monkeypatch):
    # The organization header comes from the environment, through ChatOpenAI's openai client.
    monkeypatch.setenv("OPENAI_ORG_ID", "org-wiretest")
    seen: list[tuple[str, list[tuple[str, str]], bytes]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append((str(request.rel_url), list(request.headers.items()), await request.read()))
        return web.json_response(COMPLETION)

    async def work(client: ModelClient) -> list[Any]:
        return [await outcome(client, "send"), await outcome(client, "post")]

    assert asyncio.run(serve(chat, work, timeout_s=7)) == [COMPLETION, COMPLETION]
    assert seen[0] == seen[1]
    path, headers, body = seen[0]
    assert path == "/v1/chat/completions"
    assert json.loads(body) == BODY
    names = {name.lower(): value for name, value in headers}
    assert names["authorization"] == f"Bearer {KEY}"
    assert names["openai-organization"] == "org-wiretest"
    assert names["x-stainless-read-timeout"] == "7.0"


def _internals_problems(llm: Any) -> list[str]:
    """What `llm_client._wire` reads from ChatOpenAI and its openai client that is missing or changed."""
    httpx = _httpx()
    problems = []
    client = getattr(llm, "root_async_client", None)
    if client is None:
        problems.append("ChatOpenAI has no root_async_client (the openai AsyncOpenAI client)")
    else:
        for name in ("auth_headers", "default_headers"):
            if not isinstance(getattr(client, name, None), Mapping):
                problems.append(f"root_async_client.{name} is missing or not a mapping of header names to values")
        base = getattr(client, "base_url", None)
        if not (hasattr(base, "copy_with") and isinstance(getattr(base, "raw_path", None), bytes)):
            problems.append("root_async_client.base_url is missing or not an httpx URL (copy_with, raw_path)")
        elif not base.raw_path.endswith(b"/"):
            problems.append(f"root_async_client.base_url no longer ends with '/': {base}")
        try:
            httpx.Timeout(client.timeout)
        except (AttributeError, TypeError, ValueError) as exc:
            problems.append(f"root_async_client.timeout is missing or not an httpx timeout: {exc!r}")
    http = getattr(llm, "http_async_client", None)
    if not isinstance(getattr(http, "headers", None), Mapping):
        problems.append("ChatOpenAI.http_async_client.headers is missing or not a mapping")
    if not hasattr(httpx, "Request"):
        problems.append(f"{httpx.__name__} has no Request class")
    return problems


def test_the_openai_internals_the_prebuilt_request_copies_are_still_there():
    # llm_client._wire rebuilds what openai's _build_request puts on a chat completion request from
    # these attributes; pyproject.toml bounds openai and langchain-openai to the majors it was checked with.
    async def main() -> list[str]:
        client = ModelClient("m", ModelConfig(model="wire-model"), "http://127.0.0.1:9/v1", KEY, "WIRE_KEY", 5)
        llm = client._build()
        try:
            return _internals_problems(llm)
        finally:
            if getattr(llm, "root_async_client", None) is not None:
                await llm.root_async_client.close()

    problems = asyncio.run(main())
    installed = f"openai {version('openai')}, langchain-openai {version('langchain-openai')}"
    assert not problems, (
        f"with {installed}, the internals llm_client._wire copies to prebuild the request changed: "
        + "; ".join(problems)
        + ". Update _wire (and the upper bounds in pyproject.toml) to match."
    )


def respond(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler answering `status` with `body`: JSON, or bytes sent as text/html."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, headers=headers, content_type="text/html")
        return web.json_response(body, status=status, headers=headers)

    return chat


CASES = {
    "429 with Retry-After": (
        respond(429, error("Rate limit reached"), {"Retry-After": "2"}),
        RetryableCellError,
        "rate limited by the endpoint (429): Rate limit reached",
    ),
    "500": (
        respond(500, error("The server had an error")),
        RetryableCellError,
        "endpoint error (500): The server had an error",
    ),
    "502 from a proxy, in HTML": (
        respond(502, b"<html><body>Bad gateway</body></html>"),
        RetryableCellError,
        "endpoint error (502): <html><body>Bad gateway</body></html>",
    ),
    "408": (respond(408, error("Request timeout")), RetryableCellError, "endpoint error (408): Request timeout"),
    "409": (respond(409, error("Conflict")), RetryableCellError, "endpoint error (409): Conflict"),
    "425": (respond(425, error("Too early")), RetryableCellError, "endpoint error (425): Too early"),
    "400": (
        respond(400, error("n must be an integer")),
        CellError,
        "the endpoint rejected the request (400): n must be an integer",
    ),
    "422 not OpenAI-style": (
        respond(422, {"detail": "bad"}),
        CellError,
        'the endpoint rejected the request (422): {"detail": "bad"}',
    ),
    "401 quoting the key": (
        respond(401, error(f"Incorrect API key provided: {KEY}", "invalid_api_key")),
        FatalRunError,
        "model 'm' at {url}: the endpoint refused the API key from WIRE_KEY (401)",
    ),
    "403": (
        respond(403, error("Forbidden")),
        FatalRunError,
        "model 'm' at {url}: the endpoint refused the API key from WIRE_KEY (403)",
    ),
    "404 unknown model": (
        respond(404, error("The model `wire-model` does not exist", "model_not_found")),
        FatalRunError,
        "model 'm' at {url}: the endpoint does not know model 'wire-model' (404)",
    ),
    "404 elsewhere": (
        respond(404, error("No such route")),
        FatalRunError,
        "model 'm' at {url}: the endpoint answered 404 Not Found: No such route",
    ),
    "200 that is not JSON": (
        respond(200, b"<html>hello</html>"),
        RetryableCellError,
        "the endpoint sent a malformed response (not valid JSON): Expecting value: line 1 column 1 (char 0)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_answers_are_classified_as_on_the_openai_clients_path(case):
    handler, kind, message = CASES[case]

    async def work(client: ModelClient) -> tuple[Any, Any, str]:
        return await outcome(client, "send"), await outcome(client, "post"), client.base_url

    sent, posted, url = asyncio.run(serve(handler, work))
    assert (type(sent), str(sent)) == (kind, message.replace("{url}", url))
    assert KEY not in str(sent)
    if isinstance(sent, CellError):
        assert sent.retry_after == (2.0 if case.startswith("429") else None)
    if case == "200 that is not JSON":  # openai's post hands a text/html body back as a string
        assert posted == "<html>hello</html>"
    elif "HTML" in case or "not OpenAI-style" in case:  # openai says only "Error code: N"; we quote the body
        assert type(posted) is kind
        assert str(posted).endswith(f"): Error code: {case[:3]}")
    else:
        assert (type(posted), str(posted)) == (type(sent), str(sent))


def test_an_empty_error_body_says_the_status_reason():
    async def work(client: ModelClient) -> Any:
        return await outcome(client, "send")

    sent = asyncio.run(serve(respond(503, b""), work))
    assert (type(sent), str(sent)) == (RetryableCellError, "endpoint error (503): Service Unavailable")


def test_a_dropped_connection_and_a_hung_request_are_retryable():
    async def drop(request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)  # sync-ok: a server that does not answer within the client timeout
        return web.json_response(COMPLETION)

    async def work(client: ModelClient) -> list[Any]:
        return [await outcome(client, "send"), await outcome(client, "post")]

    dropped = asyncio.run(serve(drop, work))
    assert [(type(e), str(e)) for e in dropped] == [
        (RetryableCellError, "the server closed the connection without an answer")
    ] * 2
    hung = asyncio.run(serve(hang, work, timeout_s=0.2))
    assert [(type(e), str(e)) for e in hung] == [(RetryableCellError, "the request timed out after 0.2 s")] * 2


def test_connections_refused_before_any_success_stop_the_run():
    async def main() -> tuple[list[Any], str]:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        client = ModelClient("m", ModelConfig(model="wire-model"), url, KEY, "WIRE_KEY", 5)
        try:
            return [await outcome(client, "send") for _ in range(REFUSED_BEFORE_STOP)], url
        finally:
            await client.aclose()

    errors, url = asyncio.run(main())
    assert [type(e) for e in errors] == [RetryableCellError] * (REFUSED_BEFORE_STOP - 1) + [FatalRunError]
    assert str(errors[0]) == f"cannot connect to {url}: connection refused"
    assert str(errors[-1]) == f"cannot reach {url} for model 'm': connection refused"
