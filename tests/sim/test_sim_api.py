"""The OpenAI surface over real HTTP: models, completions, usage, streaming, auth, errors, stats."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from treadle.sim import SimConfig, Simulator


def chat(content: str = "Hello there", model: str = "m1", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


async def test_base_url_and_models_list_accepts_any_model(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with session.get(f"{url}/models") as response:
            body = await response.json()
        assert response.status == 200
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["treadle-sim"]
        async with session.post(f"{url}/chat/completions", json=chat(model="anything-goes")) as response:
            assert response.status == 200


async def test_configured_models_listed_and_unknown_model_is_404(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(models=["small", "large"])) as url:
        async with session.get(f"{url}/models") as response:
            assert [m["id"] for m in (await response.json())["data"]] == ["small", "large"]
        async with session.get(f"{url}/models/large") as response:
            assert (await response.json())["id"] == "large"
        async with session.post(f"{url}/chat/completions", json=chat(model="nope")) as response:
            body = await response.json()
        assert response.status == 404
        assert body["error"]["code"] == "model_not_found"
        assert body["error"]["type"] == "invalid_request_error"
        assert "nope" in body["error"]["message"]


async def test_completion_shape_and_usage(session: aiohttp.ClientSession) -> None:
    request = chat("What is the answer?")
    async with Simulator() as url, session.post(f"{url}/chat/completions", json=request) as response:
        body = await response.json()
    assert response.status == 200
    assert body["object"] == "chat.completion"
    assert body["model"] == "m1"
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Simulated answer to: What is the answer?",
        "refusal": None,
    }
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_longer_prompts_cost_more_tokens_and_max_tokens_truncates(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator() as url:
        endpoint = f"{url}/chat/completions"
        async with session.post(endpoint, json=chat("short")) as response:
            short = (await response.json())["usage"]["prompt_tokens"]
        async with session.post(endpoint, json=chat("long " * 400)) as response:
            long = (await response.json())["usage"]["prompt_tokens"]
        async with session.post(endpoint, json=chat("cut me off " * 20, max_tokens=3)) as response:
            cut = await response.json()
    assert long > short + 400  # ~4 characters a token
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] <= 3


async def test_streaming_sends_chunks_then_usage_then_done(session: aiohttp.ClientSession) -> None:
    request = chat("Stream this please", stream=True, stream_options={"include_usage": True})
    async with Simulator() as url, session.post(f"{url}/chat/completions", json=request) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line.decode().strip() for line in (await response.read()).splitlines() if line.strip()]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Simulated answer to: Stream this please"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_api_key_required_when_configured(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(api_key="sekrit")) as url:
        async with session.post(f"{url}/chat/completions", json=chat()) as response:
            body = await response.json()
        assert response.status == 401
        assert body["error"]["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer nope"}
        async with session.get(f"{url}/models", headers=wrong) as response:
            assert response.status == 401
        good = {"Authorization": "Bearer sekrit"}
        async with session.post(f"{url}/chat/completions", json=chat(), headers=good) as response:
            assert response.status == 200


async def test_bad_requests_get_400_in_openai_format(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url:
        endpoint = f"{url}/chat/completions"
        async with session.post(endpoint, data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        async with session.post(endpoint, json={"model": "m", "messages": []}) as response:
            assert (await response.json())["error"]["param"] == "messages"


async def test_a_prompt_longer_than_aiohttps_default_body_limit_is_answered(session: aiohttp.ClientSession) -> None:
    long_prompt = "word " * (2 * 1024**2 // 5)  # 2 MiB: aiohttp refuses bodies over 1 MiB unless told otherwise
    async with Simulator() as url, session.post(f"{url}/chat/completions", json=chat(long_prompt)) as response:
        body = await response.json()
    assert response.status == 200
    assert body["usage"]["prompt_tokens"] > 500_000


async def test_latency_delays_the_answer(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(latency_ms=120)) as url:
        start = time.perf_counter()
        async with session.post(f"{url}/chat/completions", json=chat()) as response:
            await response.read()
        assert time.perf_counter() - start >= 0.115


async def test_tokens_per_second_paces_the_stream(session: aiohttp.ClientSession) -> None:
    # The reply is ~12 tokens; at 100 tokens/s the stream takes >= ~0.1 s after the first chunk.
    request = chat("pace this stream out", stream=True)
    async with Simulator(SimConfig(tokens_per_s=100)) as url:
        async with session.post(f"{url}/chat/completions", json=request) as response:
            start = time.perf_counter()
            await response.read()
            streamed_s = time.perf_counter() - start
        assert streamed_s >= 0.08


async def test_stats_count_requests_statuses_models_and_peak(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(latency_ms=200, models=["a", "b"])) as url:
        endpoint = f"{url}/chat/completions"

        async def call(model: str) -> int:
            async with session.post(endpoint, json=chat(model=model)) as response:
                return response.status

        statuses = await asyncio.gather(*(call(m) for m in ["a", "a", "b", "b", "zzz"]))
        async with session.get(f"{root(url)}/stats") as response:
            stats = await response.json()
        assert sorted(statuses) == [200, 200, 200, 200, 404]
        assert stats["requests_total"] == 5
        assert stats["by_status"] == {"200": 4, "404": 1}
        assert stats["by_model"] == {"a": 2, "b": 2, "zzz": 1}
        assert stats["in_flight"] == 0
        assert stats["max_in_flight"] == 5
        async with session.post(f"{root(url)}/stats/reset") as response:
            assert (await response.json())["requests_total"] == 0
        async with session.get(f"{root(url)}/stats") as response:
            assert (await response.json())["by_status"] == {}
