"""The call paths treadle does not take, kept for bench/llm_throughput.py to compare with its own.

treadle's llm columns send a prebuilt request (`LLMGenerator.call`, treadle/engine/generators/llm.py).
The generators here override that one method with the paths it replaced:

- `create`: the openai client's `chat.completions.create` (it also walks the request's TypedDict
  annotations on every call);
- `ainvoke`: `ChatOpenAI.ainvoke` (message conversion, callbacks and a thread-pool hop per answer; no
  reasoning column: ChatOpenAI drops `reasoning_content`).

`call_path(path)` makes the llm columns of the runs started inside it use one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import treadle.engine.generators.llm as llm_generator
from treadle.engine.errors import RetryableCellError
from treadle.engine.generators.llm import Answer, LLMGenerator
from treadle.engine.generators.llm_client import model_client
from treadle.engine.pipeline import LLMColumn
from treadle.engine.pipeline_validation import LoadedPipeline

CALL_PATHS = ("send", "create", "ainvoke")
"""`send` is treadle's own."""


class CreateGenerator(LLMGenerator):
    """An llm column calling `chat.completions.create` on the openai client ChatOpenAI built."""

    async def call(self, state: Any, messages: list[dict[str, str]]) -> Answer:
        llm = state.llm
        completion = await llm.async_client.create(messages=messages, **self._request_params(llm))
        if not completion.choices:
            raise RetryableCellError("the endpoint sent a malformed response (an empty choice list)")
        choice = completion.choices[0]
        message = choice.message
        extra = message.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        u = completion.usage
        usage = (
            None
            if u is None
            else {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            }
        )
        reasoning = reasoning if isinstance(reasoning, str) else None
        return Answer(message.content, usage, reasoning, message.refusal, choice.finish_reason)


class AinvokeGenerator(LLMGenerator):
    """An llm column calling `ChatOpenAI.ainvoke`."""

    async def call(self, state: Any, messages: list[dict[str, str]]) -> Answer:
        kwargs = {"response_format": self._response_format} if self._response_format is not None else {}
        answer = await state.llm.ainvoke([(m["role"], m["content"]) for m in messages], **kwargs)
        meta = answer.usage_metadata
        usage = (
            None
            if meta is None
            else {
                "prompt_tokens": meta["input_tokens"],
                "completion_tokens": meta["output_tokens"],
                "total_tokens": meta["total_tokens"],
            }
        )
        refusal = answer.additional_kwargs.get("refusal")
        finish = answer.response_metadata.get("finish_reason")
        return Answer(answer.content, usage, None, refusal, finish)


GENERATORS: dict[str, type[LLMGenerator]] = {"create": CreateGenerator, "ainvoke": AinvokeGenerator}


@contextmanager
def call_path(path: str) -> Iterator[None]:
    """While inside, llm columns are built as `path`'s generator ("send": treadle's own, unchanged).

    treadle builds them through `llm.build_llm_generator`, looked up when a run starts; this swaps it.
    A run inside that built none this way raises: the comparison would have measured treadle's path."""
    if path == "send":
        yield
        return
    generator_class = GENERATORS[path]
    built: list[LLMGenerator] = []

    def build(name: str, config: LLMColumn, loaded: LoadedPipeline) -> LLMGenerator:
        built.append(generator_class(name, config, model_client(config.model, loaded)))
        return built[-1]

    default = llm_generator.build_llm_generator
    llm_generator.build_llm_generator = build
    try:
        yield
    finally:
        llm_generator.build_llm_generator = default
    if not built:
        raise RuntimeError(
            f"no llm column was built as {path!r}: treadle no longer builds them through build_llm_generator"
        )
