"""The column context: LLM calls from inside a python column, through the run's own models.

A python function that takes a second argument gets a `ColumnContext`. Sync functions (in a worker
thread) call `ctx.llm(...)` / `ctx.llm_batch(...)`: the call is handed to the engine's loop with
`run_coroutine_threadsafe` and the thread waits for it; no new event loop is ever made. Async
functions `await ctx.allm(...)` / `ctx.allm_batch(...)`. Either way a call waits for a request slot
of its model (so per-model limits hold, and a paused run pauses it), is retried like an llm column,
is traced as a child span of its cell, and adds its tokens to the cell's `<column>__usage`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from treadle.engine.errors import CellError
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.limits import model_limit
from treadle.engine.pipeline import LLMColumn
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.policy import RATE_LIMIT_EXTRA_ATTEMPTS, is_rate_limit, is_retryable

if TYPE_CHECKING:
    from treadle.engine.generators.llm import LLMGenerator
    from treadle.engine.rate_limits import ModelRate
    from treadle.engine.response_cache import ResponseCache
    from treadle.engine.tracing import TraceStatus


class CallServices(Protocol):
    """What calls made inside cells need of the run (treadle.engine.services.CellServices)."""

    def clock(self) -> float: ...

    async def acquire_model(self, key: str) -> None:
        """Wait for a request slot of the model limit `key`, and take it."""

    def release_model(self, key: str) -> None: ...

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before the next attempt of a call that failed."""

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
    ) -> None: ...


class ContextServices:
    """What every column context of a run shares: the models and their call paths, and the run's
    services for the calls (request slots under the models' limits, backoff, tracing)."""

    def __init__(self, loaded: LoadedPipeline, calls: CallServices) -> None:
        self.loaded = loaded
        self.calls = calls
        self._callers: dict[tuple[str, str | None, str | None], LLMGenerator] = {}
        self._rates: dict[str, ModelRate] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.cache: ResponseCache | None = None
        """The response cache for the calls of models whose answers are reused."""

    def observe(self, rates: dict[str, ModelRate]) -> None:
        """The models' pacing, told of every answer to `ctx.llm` calls too (called on the engine loop)."""
        self._rates = rates

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the engine loop when the run starts."""
        self.loop = loop
        self.loop_thread = threading.get_ident()

    def caller(self, model: str, system: str | None, schema: dict[str, Any] | None) -> LLMGenerator:
        """An LLM call path for (model, system, schema), built once: the same client, parsing and checks
        as an llm column, with the prompt given as text."""
        import json

        from treadle.engine.generators.llm import LLMGenerator
        from treadle.engine.generators.llm_client import model_client

        key = (model, system, None if schema is None else json.dumps(schema, sort_keys=True))
        caller = self._callers.get(key)
        if caller is None:
            config = LLMColumn(
                name="ctx", kind="llm", model=model, prompt="{{ prompt }}", system=system, output_schema=schema
            )
            caller = self._callers[key] = LLMGenerator("ctx", config, model_client(model, self.loaded))
            if (rate := self._rates.get(model_limit(model))) is not None:
                caller.client.observe(rate)
            if self.loaded.config.models[model].cache:
                caller.cache = self.cache
        return caller

    def default_model(self) -> str:
        models = list(self.loaded.config.models)
        if len(models) != 1:
            raise CellError(f"ctx.llm needs model=... (the pipeline has {len(models)} models: {', '.join(models)})")
        return models[0]

    def retries(self, model: str) -> int:
        config = self.loaded.config.models[model]
        return config.retries if config.retries is not None else self.loaded.config.run.retries

    async def aclose(self) -> None:
        for caller in self._callers.values():
            await caller.aclose()

    async def run(
        self, generator: Generator, row: dict[str, Any], row_index: int, node: int, slot: int, threads: Executor
    ) -> dict[str, Any]:
        """Run one cell of a python function that takes `ctx` (a sync one on `threads`); the cell's LLM
        calls end with it, and their tokens go to `<column>__usage` unless the function set it."""
        ctx = ColumnContext(self, row_index, node, slot)
        view = MappingProxyType(row)
        # The base Generator's signatures leave out `ctx`: wants_context says this one takes it.
        function: Any = generator.agenerate if generator.mode is RunMode.ASYNC else generator.generate
        try:
            if generator.mode is RunMode.ASYNC:
                values = await function(view, ctx)
            else:
                values = await asyncio.get_running_loop().run_in_executor(threads, function, view, ctx)
        finally:
            ctx.cancel()
        usage_key = f"{generator.outputs[0]}__usage" if generator.outputs else None  # a filter writes none
        if ctx.calls and usage_key is not None and usage_key not in values:
            values[usage_key] = ctx.usage
        return values


class ColumnContext:
    """`ctx` of one cell. Its calls end with the cell: a cancelled cell cancels them."""

    def __init__(self, services: ContextServices, row: int, node: int, slot: int) -> None:
        self._services = services
        self._row = row
        self._node = node
        self._slot = slot
        """The execution slot the cell runs on (its calls' traces show it there)."""
        self._pending: set[concurrent.futures.Future] = set()
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.calls = 0

    # ---- for sync functions (worker threads) ---------------------------------------------------------

    def llm(
        self, prompt: str, *, model: str | None = None, system: str | None = None, output_schema: dict | None = None
    ) -> Any:
        """The model's answer to `prompt` (text, or the parsed JSON with `output_schema`)."""
        return self._wait(self.allm(prompt, model=model, system=system, output_schema=output_schema))

    def llm_batch(
        self,
        prompts: Sequence[str],
        *,
        model: str | None = None,
        system: str | None = None,
        output_schema: dict | None = None,
    ) -> list[Any]:
        """Answers to several prompts, run concurrently under the model's limit, in order."""
        return self._wait(self.allm_batch(prompts, model=model, system=system, output_schema=output_schema))

    def _wait(self, coroutine: Any) -> Any:
        loop = self._services.loop
        assert loop is not None
        if threading.get_ident() == self._services.loop_thread:
            coroutine.close()
            raise RuntimeError("ctx.llm blocks: in an async column function use `await ctx.allm(...)`")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        self._pending.add(future)
        try:
            return future.result()
        finally:
            self._pending.discard(future)

    def cancel(self) -> None:
        """Cancel the calls a worker thread is still waiting on (the cell ended without it)."""
        for future in list(self._pending):
            future.cancel()

    # ---- for async functions (the engine loop) -----------------------------------------------------------

    async def allm(
        self, prompt: str, *, model: str | None = None, system: str | None = None, output_schema: dict | None = None
    ) -> Any:
        services = self._services
        name = model or services.default_model()
        if name not in services.loaded.config.models:
            raise CellError(f"ctx.llm: no model named {name!r} in the pipeline")
        caller = services.caller(name, system, output_schema)
        calls = services.calls
        key = model_limit(name)
        if (hit := caller.cached({"prompt": prompt})) is not None:  # from the response cache: no slot, no request
            now = calls.clock()
            calls.trace_child(self._row, self._node, self._slot, name, 1, (now, now, now), "cached", None)
            self._count(hit)  # the answer's usage, as its first run had it: the same output
            return hit["ctx"]
        attempt = 0
        while True:
            attempt += 1
            ready = calls.clock()
            await calls.acquire_model(key)
            started = calls.clock()
            error: Exception | None = None
            try:
                values = await caller.agenerate({"prompt": prompt})
            except Exception as exc:
                error = exc
            finally:
                calls.release_model(key)
            ended = calls.clock()
            if error is not None:
                budget = services.retries(name) + (RATE_LIMIT_EXTRA_ATTEMPTS if is_rate_limit(error) else 0)
                retry = is_retryable(error) and attempt <= budget
                status: TraceStatus = "retry" if retry else "failed"
                retry_after = getattr(error, "retry_after", None) if retry else None
                times = (ready, started, ended)
                calls.trace_child(
                    self._row, self._node, self._slot, name, attempt, times, status, error, retry_after=retry_after
                )
                if not retry:
                    raise error
                if is_rate_limit(error):  # the model's pace and its hold decide when requests go again
                    await asyncio.sleep(retry_after or 0.0)
                else:
                    await asyncio.sleep(calls.backoff(attempt, retry_after))
                continue
            usage = self._count(values)
            calls.trace_child(
                self._row, self._node, self._slot, name, attempt, (ready, started, ended), "done", None, usage
            )
            return values["ctx"]

    def _count(self, values: dict[str, Any]) -> dict[str, Any]:
        """Add a call's answer to the cell's usage and calls; returns its usage."""
        usage = values.get("ctx__usage") or {}
        for field in self.usage:
            self.usage[field] += int(usage.get(field) or 0)
        self.calls += 1
        return usage

    async def allm_batch(
        self,
        prompts: Sequence[str],
        *,
        model: str | None = None,
        system: str | None = None,
        output_schema: dict | None = None,
    ) -> list[Any]:
        return list(
            await asyncio.gather(
                *(self.allm(p, model=model, system=system, output_schema=output_schema) for p in prompts)
            )
        )
