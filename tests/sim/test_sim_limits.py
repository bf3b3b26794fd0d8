"""Rate limits: 429 with Retry-After and x-ratelimit headers, and the buckets' refill arithmetic."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from treadle.sim import SimConfig, Simulator
from treadle.sim.limits import RateLimiter, format_duration


def chat(content: str = "Hello") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


async def test_rpm_limit_answers_429_with_retry_after_and_headers(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(rpm=3)) as url:
        endpoint = f"{url}/chat/completions"
        for remaining in ("2", "1", "0"):
            async with session.post(endpoint, json=chat()) as response:
                assert response.status == 200
                assert response.headers["x-ratelimit-limit-requests"] == "3"
                assert response.headers["x-ratelimit-remaining-requests"] == remaining
        async with session.post(endpoint, json=chat()) as response:
            body = await response.json()
            headers = response.headers
    assert response.status == 429
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert int(headers["Retry-After"]) >= 1
    assert 0 < int(headers["retry-after-ms"]) <= 20_000  # one request refills in 60/3 s
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in headers


async def test_tpm_limit_counts_prompt_and_completion_tokens(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(tpm=200)) as url:
        endpoint = f"{url}/chat/completions"
        async with session.post(endpoint, json=chat("x" * 400)) as response:  # ~100 prompt tokens
            assert response.status == 200
            assert int(response.headers["x-ratelimit-remaining-tokens"]) < 100
        async with session.post(endpoint, json=chat("x" * 400)) as response:
            assert response.status == 429
            assert response.headers["x-ratelimit-limit-tokens"] == "200"
            assert int(response.headers["Retry-After"]) >= 1


async def test_openai_sdk_sees_rate_limit_error() -> None:
    async with (
        Simulator(SimConfig(rpm=1)) as url,
        openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client,
    ):
        await client.chat.completions.create(model="m", messages=chat()["messages"])
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=chat()["messages"])
    assert caught.value.response.headers["retry-after"]


def test_buckets_refill_over_time_and_refusals_cost_nothing() -> None:
    now = [0.0]
    limiter = RateLimiter(rpm=60, tpm=600, clock=lambda: now[0])
    assert all(limiter.admit(5).allowed for _ in range(60))
    refused = limiter.admit(5)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.0)  # 60 rpm: one request a second
    now[0] = 1.0
    assert limiter.admit(5).allowed
    assert not limiter.admit(5).allowed
    now[0] = 100.0  # a long pause refills to capacity, never beyond
    verdict = limiter.admit(600)  # the whole token bucket at once
    assert verdict.allowed
    assert verdict.headers["x-ratelimit-remaining-tokens"] == "0"
    assert verdict.headers["x-ratelimit-remaining-requests"] == "59"


def test_format_duration_matches_openai_style() -> None:
    assert format_duration(0.02) == "20ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
