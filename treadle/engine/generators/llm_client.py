"""One client per model config of a run: ChatOpenAI on openai's aiohttp transport, and its failures.

`ModelClient` holds what never changes for a model (URL, key, request parameters) and is shared by
every llm column of a run using that model. The `ChatOpenAI` itself is built lazily on the loop that
calls it (the engine loop: an aiohttp session belongs to the loop it was made on), one per loop, and
`aclose()` closes it there. With it, once per loop, the parts of a chat completion request that never
change (`Wire`: URL, headers, timeout) as the openai client ChatOpenAI built would send them, so that
`complete()` only encodes the body and sends it through that client's httpx client (openai's aiohttp
transport). It also classifies what went wrong with a call into treadle's errors: retryable (429, 5xx,
timeouts, dropped connections, malformed bodies), not retryable (400), or fatal for the run (a refused
key, an unknown model, an endpoint that cannot be reached at all).

The API key never appears in a message: every text that leaves this module goes through `redact`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from treadle.engine.errors import CellError, ConfigError, FatalRunError, Problem, RetryableCellError, one_line
from treadle.engine.pipeline import check_base_url
from treadle.engine.rate_headers import LimitHeaders
from treadle.engine.rate_limits import ModelRate
from treadle.engine.secrets import read_api_key, redact

if TYPE_CHECKING:
    import httpx2
    from langchain_openai import ChatOpenAI

    from treadle.engine.pipeline import ModelConfig
    from treadle.engine.pipeline_validation import LoadedPipeline

DEFAULT_BASE_URL = "https://api.openai.com/v1"
LOCAL_PLACEHOLDER_KEY = "not-needed"
"""Sent to a local endpoint (simulator, vLLM, Ollama) when no key is set: they do not check it."""
REFUSED_BEFORE_STOP = 5
"""This many calls in a row refused at connect, before any call succeeded, stop the run."""
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
_MAX_ENDPOINT_MESSAGE = 300


def is_local(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost") or host.startswith("127.")


@dataclass(frozen=True)
class Wire:
    """A chat completion request as the openai client ChatOpenAI built sends it, but for the body."""

    http: httpx2.AsyncClient
    """The httpx client given to ChatOpenAI (openai's aiohttp transport)."""
    request: type[httpx2.Request]
    """That httpx's Request class."""
    url: httpx2.URL
    headers: httpx2.Headers
    """The httpx client's defaults under the openai client's (auth, organization, project, user agent,
    custom headers), as openai merges them; Content-Length comes with each body."""
    extensions: dict[str, Any]
    """The timeout, as openai passes it (connect, read, write and pool each timeout_s)."""


class EndpointStatusError(Exception):
    """The endpoint answered a chat completion with a status other than 2xx."""

    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status_code = response.status_code
        self.headers = response.headers
        text = response.text.strip()
        try:  # openai's way: the body as JSON if it is, else as text
            body: Any = json.loads(text)
        except ValueError:
            body = text
        self.body = body
        self.message = text or response.reason_phrase or f"HTTP {response.status_code}"


@dataclass
class _LoopState:
    """What belongs to one event loop (one run): its ChatOpenAI, its Wire, the tally of refused connects."""

    llm: ChatOpenAI
    wire: Wire
    observer: ModelRate | None = None
    """Told of every answer (status, Retry-After, x-ratelimit headers, tokens used): the run's pacing."""
    succeeded: bool = False
    refused_in_a_row: int = 0
    fatal: FatalRunError | None = None


@dataclass
class ModelClient:
    """A model config of a run, resolved: endpoint, key, request parameters, per-loop clients."""

    name: str
    """The key under `models:` (`planner`)."""
    config: ModelConfig
    base_url: str
    api_key: str
    api_key_env: str
    timeout_s: float
    _states: dict[asyncio.AbstractEventLoop, _LoopState] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # the key stays out of any repr
        return self.redact(f"ModelClient({self.name!r}, {self.config.model!r} at {self.base_url})")

    # ---- the client ------------------------------------------------------------------------------

    def state(self) -> _LoopState:
        """The running loop's client, built on first use."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            llm = self._build()
            state = self._states[loop] = _LoopState(llm, _wire(llm))
        return state

    def _build(self) -> ChatOpenAI:
        import openai
        from langchain_openai import ChatOpenAI
        from pydantic import SecretStr

        httpx = _httpx()
        # The scheduler's per-model limit decides how many calls are in flight; the pool only has to
        # stay out of its way when a person raises that limit during the run (idle room costs nothing).
        # openai's aiohttp transport turns `max_connections` into the TCPConnector's `limit`.
        pool = max(4 * self.config.max_parallel, 256)
        http = openai.DefaultAioHttpClient(
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            timeout=self.timeout_s,
        )
        config = self.config
        params: dict[str, Any] = {}
        if config.temperature is not None:
            params["temperature"] = config.temperature
        if config.max_tokens is not None:
            params["max_tokens"] = config.max_tokens
        if config.extra_body:
            params["extra_body"] = dict(config.extra_body)
        return ChatOpenAI(
            model=config.model,
            base_url=self.base_url,
            api_key=SecretStr(self.api_key),
            max_retries=0,  # treadle retries, with backoff and Retry-After, per cell
            timeout=self.timeout_s,
            http_async_client=http,
            **params,
        )

    async def complete(self, state: _LoopState, body: dict[str, Any]) -> Any:
        """POST `body` to /chat/completions and return the answer's JSON as is.

        Raises EndpointStatusError for a status other than 2xx, httpx (and aiohttp) errors for the
        connection, JSONDecodeError or UnicodeDecodeError for a body that is not JSON: `failure()`
        classifies them all."""
        wire = state.wire
        # openai's encoding (openapi_dumps): compact, UTF-8, no NaN.
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        observer = state.observer
        if observer is not None:
            # A request's tokens before it is sent: ~4 bytes of prompt a token, plus what it may answer.
            observer.estimate_tokens(
                len(content) / 4 + (body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            )
            sent = observer.now()
        response = await wire.http.send(
            wire.request("POST", wire.url, headers=wire.headers, content=content, extensions=wire.extensions)
        )
        status = response.status_code
        if not 200 <= status < 300:
            if observer is not None:
                observer.answered(sent, status, retry_after(response.headers), LimitHeaders.read(response.headers))
            raise EndpointStatusError(response)
        data = json.loads(response.content)
        if observer is not None:
            usage = data.get("usage") if isinstance(data, dict) else None
            used = usage.get("total_tokens") if isinstance(usage, dict) else None
            tokens = float(used) if isinstance(used, int | float) and not isinstance(used, bool) else None
            observer.answered(sent, status, None, LimitHeaders.read(response.headers), tokens)
        return data

    def observe(self, rate: ModelRate) -> None:
        """Tell `rate` of every answer this model gives on the running loop (the run's loop)."""
        self.state().observer = rate

    async def aclose(self) -> None:
        """Close the running loop's client and its aiohttp session (nothing if none was built)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self._states.pop(loop, None)
        if state is not None and state.llm.root_async_client is not None:
            await state.llm.root_async_client.close()

    # ---- outcomes --------------------------------------------------------------------------------

    def succeeded(self, state: _LoopState) -> None:
        state.succeeded = True
        state.refused_in_a_row = 0

    def failure(self, state: _LoopState, exc: BaseException) -> Exception | None:
        """The treadle error a failed call becomes; None for an exception that is not the endpoint's."""
        error = self._classify(exc)
        if error is None:
            return None
        if getattr(error, "refused", False):
            state.refused_in_a_row += 1
            if state.fatal is None and not state.succeeded and state.refused_in_a_row >= REFUSED_BEFORE_STOP:
                state.fatal = FatalRunError(
                    self.redact(f"cannot reach {self.base_url} for model '{self.name}': connection refused")
                )
            if state.fatal is not None:
                return state.fatal
        else:
            state.refused_in_a_row = 0
        return error

    def _where(self) -> str:
        return self.redact(f"model '{self.name}' at {self.base_url}")

    def _classify(self, exc: BaseException) -> Exception | None:
        import openai

        httpx = _httpx()

        if isinstance(exc, EndpointStatusError):
            return self._status_error(exc.status_code, _endpoint_message(exc.body, exc.message), exc.headers)
        if isinstance(exc, openai.APIStatusError):
            fallback = re.sub(r"^Error code: \d+ - ", "", getattr(exc, "message", None) or str(exc))
            return self._status_error(exc.status_code, _endpoint_message(exc.body, fallback), exc.response.headers)
        # A body that is not JSON (or not UTF-8), that httpx cannot decode (Content-Encoding), or that
        # openai's create path cannot read as a chat completion.
        malformed = json.JSONDecodeError | UnicodeDecodeError | httpx.DecodingError | openai.APIResponseValidationError
        if isinstance(exc, malformed):
            detail = one_line(str(exc), _MAX_ENDPOINT_MESSAGE)
            return RetryableCellError(self.redact(f"the endpoint sent a malformed response (not valid JSON): {detail}"))
        # openai's aiohttp transport raises httpx errors, with aiohttp's as the cause; openai wraps
        # those in APIConnectionError (and APITimeoutError) on the create and ainvoke paths.
        if isinstance(exc, httpx.RequestError | openai.APIConnectionError):
            return self._connection_error(exc)
        if isinstance(exc, TimeoutError):
            return RetryableCellError(f"the request timed out after {self.timeout_s:g} s")
        try:
            import aiohttp
        except ImportError:  # pragma: no cover
            return None
        if isinstance(exc, aiohttp.ClientError):
            return self._connection_error(exc)
        return None

    def _status_error(self, status: int, endpoint_message: tuple[str, str | None], headers: Any) -> Exception:
        message, code = endpoint_message
        said = self.redact(message)
        wait = retry_after(headers)
        if status == 429:
            return RetryableCellError(f"rate limited by the endpoint (429): {said}", retry_after=wait, status=status)
        if status in (401, 403):
            return FatalRunError(
                f"{self._where()}: the endpoint refused the API key from {self.api_key_env} ({status})"
            )
        if status == 404:
            if code == "model_not_found" or "model" in message.lower():
                return FatalRunError(f"{self._where()}: the endpoint does not know model '{self.config.model}' (404)")
            return FatalRunError(f"{self._where()}: the endpoint answered 404 Not Found: {said}")
        if status >= 500 or status in (408, 409, 425):
            return RetryableCellError(f"endpoint error ({status}): {said}", retry_after=wait, status=status)
        return CellError(f"the endpoint rejected the request ({status}): {said}", status=status)

    def _connection_error(self, exc: BaseException) -> RetryableCellError:
        refused = _find_cause(exc, ConnectionRefusedError) is not None
        if refused:
            error = RetryableCellError(self.redact(f"cannot connect to {self.base_url}: connection refused"))
            error.refused = True  # type: ignore[attr-defined]
            return error
        try:
            import aiohttp

            dropped = _find_cause(exc, aiohttp.ServerDisconnectedError)
            connector = _find_cause(exc, aiohttp.ClientConnectorError)
            timed_out = _find_cause(exc, aiohttp.ServerTimeoutError, TimeoutError)
        except ImportError:  # pragma: no cover
            dropped = connector = timed_out = None
        if dropped is not None:
            text = "the server closed the connection without an answer"
        elif connector is not None:
            detail = one_line(str(connector.os_error or connector), _MAX_ENDPOINT_MESSAGE)
            text = f"cannot connect to {self.base_url}: {detail}"
        elif timed_out is not None:
            text = f"the request timed out after {self.timeout_s:g} s"
        else:
            cause = exc.__cause__ or exc
            text = f"connection error: {one_line(str(cause) or type(cause).__name__, _MAX_ENDPOINT_MESSAGE)}"
        return RetryableCellError(self.redact(text))

    def redact(self, text: str) -> str:
        """`text` without the API key or anything shaped like a key."""
        key = self.api_key
        return redact(text, [key] if key and key != LOCAL_PLACEHOLDER_KEY else [])


def _find_cause(exc: BaseException, *types: type[BaseException]) -> Any:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        if types and hasattr(current, "os_error") and isinstance(current.os_error, types):
            return current.os_error
        current = current.__cause__ or current.__context__
    return None


def _httpx() -> Any:
    """The httpx openai is built on: httpx2 in recent releases, httpx in older ones."""
    try:
        import httpx2
    except ImportError:  # pragma: no cover - depends on the installed openai
        import httpx

        return httpx
    return httpx2


def _endpoint_message(body: Any, fallback: str) -> tuple[str, str | None]:
    """The endpoint's own error message and code, from an OpenAI-style error body if there is one
    (`{"error": {...}}`, or the inner dict, which is what openai's exceptions keep), else `fallback`."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        if isinstance(message, str) and message:
            return one_line(message, _MAX_ENDPOINT_MESSAGE), code if isinstance(code, str) else None
    return one_line(fallback, _MAX_ENDPOINT_MESSAGE), None


def _wire(llm: ChatOpenAI) -> Wire:
    """What `llm`'s openai client puts on every chat completion request (its `_build_request`), once:
    the httpx client's default headers overridden by openai's auth and default headers (an openai
    `Omit` value leaves a header out), its retry-count and read-timeout headers, the URL under its
    base_url, the timeout. treadle gives ChatOpenAI no default_query, so there is no query string."""
    httpx = _httpx()
    client = llm.root_async_client
    http = llm.http_async_client
    if http is None:
        raise RuntimeError("ChatOpenAI built no async httpx client: langchain-openai changed, see test_llm_wire.py")
    timeout = httpx.Timeout(client.timeout)
    merged: dict[str, tuple[str, str]] = {}
    for name, value in [*client.auth_headers.items(), *client.default_headers.items()]:
        if isinstance(value, str):
            merged[name.lower()] = (name, value)
        else:
            merged.pop(name.lower(), None)
    merged["x-stainless-retry-count"] = ("x-stainless-retry-count", "0")  # treadle's retries are new requests
    if timeout.read is not None:
        merged["x-stainless-read-timeout"] = ("x-stainless-read-timeout", str(timeout.read))
    headers = httpx.Headers(http.headers)
    headers.update(dict(merged.values()))
    base = client.base_url  # openai keeps it with a trailing slash
    return Wire(
        http=http,
        request=httpx.Request,
        url=base.copy_with(raw_path=base.raw_path + b"chat/completions"),
        headers=headers,
        extensions={"timeout": timeout.as_dict()},
    )


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` (precise, OpenAI's) or `Retry-After` (seconds or a date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---- building: one ModelClient per model config of a loaded pipeline -----------------------------

_CLIENTS: dict[int, dict[str, ModelClient]] = {}


def model_client(name: str, loaded: LoadedPipeline) -> ModelClient:
    """The shared client of model `name` for this pipeline (built once; raises ConfigError for a missing key)."""
    clients = _CLIENTS.get(id(loaded))
    if clients is None:
        clients = _CLIENTS[id(loaded)] = {}
        weakref.finalize(loaded, _CLIENTS.pop, id(loaded), None)
    client = clients.get(name)
    if client is None:
        client = clients[name] = _resolve(name, loaded)
    return client


def _resolve(name: str, loaded: LoadedPipeline) -> ModelClient:
    config = loaded.config.models[name]
    where = loaded.path.name if loaded.path is not None else "PipelineConfig"
    from_env = os.environ.get("OPENAI_BASE_URL") if config.base_url is None else None
    if from_env and (reason := check_base_url(from_env)):
        raise ConfigError([Problem(where, f"OPENAI_BASE_URL {reason}", key=f"models.{name}.base_url")])
    base_url = (config.base_url or from_env or DEFAULT_BASE_URL).rstrip("/")
    key = read_api_key(config.api_key_env, loaded.base_dir)
    if key is None:
        if not is_local(base_url):
            raise ConfigError(
                [
                    Problem(
                        where,
                        f"environment variable {config.api_key_env} is not set "
                        "(put it in the environment or in .env beside the pipeline)",
                        key=f"models.{name}.api_key_env",
                    )
                ]
            )
        key = LOCAL_PLACEHOLDER_KEY
    return ModelClient(
        name=name,
        config=config,
        base_url=base_url,
        api_key=key,
        api_key_env=config.api_key_env,
        timeout_s=config.timeout_s or loaded.config.run.timeout_s,
    )
