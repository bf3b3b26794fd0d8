"""The real clients the engine uses parse the simulator cleanly: openai's SDK and ChatOpenAI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from treadle.sim import SimConfig, Simulator


class Step(BaseModel):
    title: str
    minutes: int


class Plan(BaseModel):
    goal: str
    steps: list[Step]
    risky: bool
    note: str | None = None


def sdk(url: str, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, **options)


async def test_openai_sdk_completion_with_reasoning() -> None:
    async with Simulator(SimConfig(reasoning=True)) as url, sdk(url) as client:
        answer = await client.chat.completions.create(
            model="gpt-sim", messages=[{"role": "user", "content": "Why is the sky blue?"}]
        )
    message = answer.choices[0].message
    assert message.content == "Simulated answer to: Why is the sky blue?"
    assert message.model_extra["reasoning_content"].startswith("Simulated reasoning about:")
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens > 0


async def test_openai_sdk_stream_with_usage() -> None:
    async with Simulator() as url, sdk(url) as client:
        stream = await client.chat.completions.create(
            model="gpt-sim",
            messages=[{"role": "user", "content": "count to three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated answer to: count to three"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_openai_sdk_models_and_errors() -> None:
    async with Simulator(SimConfig(models=["only"])) as url, sdk(url) as client:
        assert [m.id async for m in client.models.list()] == ["only"]
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"


async def test_openai_sdk_structured_parse(validate_json: Callable[[Any, dict[str, Any]], None]) -> None:
    async with Simulator() as url, sdk(url) as client:
        parsed = await client.chat.completions.parse(
            model="gpt-sim", messages=[{"role": "user", "content": "plan a trip"}], response_format=Plan
        )
    message = parsed.choices[0].message
    assert isinstance(message.parsed, Plan)
    validate_json(json.loads(message.content or ""), Plan.model_json_schema())


async def test_chat_openai_invoke_and_stream() -> None:
    async with Simulator() as url:
        llm = ChatOpenAI(base_url=url, api_key="x", model="gpt-sim", max_retries=0)
        message = await llm.ainvoke("Hello from langchain")
        pieces = [chunk.content async for chunk in llm.astream("Stream from langchain")]
    assert message.content == "Simulated answer to: Hello from langchain"
    assert message.usage_metadata is not None and message.usage_metadata["input_tokens"] > 0
    assert "".join(pieces) == "Simulated answer to: Stream from langchain"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_chat_openai_structured_output(method: str) -> None:
    async with Simulator() as url:
        llm = ChatOpenAI(base_url=url, api_key="x", model="gpt-sim", max_retries=0)
        plan = await llm.with_structured_output(Plan, method=method).ainvoke("plan a trip")
        again = await llm.with_structured_output(Plan, method=method).ainvoke("plan a trip")
    assert isinstance(plan, Plan)
    assert plan == again  # the same prompt synthesises the same JSON
