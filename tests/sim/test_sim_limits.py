"""Rate limits: 429 with retry hints and x-ratelimit headers, burst windows, and the buckets' arithmetic."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter

import aiohttp
import openai
import pytest
from sim_helpers import FakeClock, chat, wait_from_headers

from treadle.sim import SimConfig, Simulator
from treadle.sim.limits import RateLimiter, format_duration


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


def test_short_window_bursts_a_window_of_the_rate_then_the_steady_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=1200, tpm=0, clock=clock, window_s=2.0)  # 20/s, 40 at once
    assert all(limiter.admit(1).allowed for _ in range(40))
    refused = limiter.admit(1)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.05)
    assert refused.headers["x-ratelimit-limit-requests"] == "1200"  # the per-minute limit, as OpenAI's
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert not limiter.admit(1).allowed  # refusals took nothing: still 0.05 s to go
    clock.advance(0.05)
    assert limiter.admit(1).allowed
    clock.advance(1.0)  # a second refills 20, not more
    assert sum(limiter.admit(1).allowed for _ in range(25)) == 20
    clock.advance(60.0)  # a long pause refills one window's worth, never a minute's
    assert sum(limiter.admit(1).allowed for _ in range(100)) == 40


def test_a_request_bigger_than_the_bucket_passes_on_a_full_one_and_leaves_debt(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=6, tpm=600, clock=clock, window_s=2.0)  # buckets: 0.2 requests, 20 tokens
    assert limiter.admit(50).allowed  # both buckets were full
    refused = limiter.admit(1)
    # The request bucket refills 0.1/s from -0.8 to 0.2: 10 s, so 6 a minute still holds.
    assert refused.retry_after_s == pytest.approx(10.0)
    clock.advance(10.0)
    assert limiter.admit(1).allowed  # the token bucket (10/s) was back from -30 to 20 after 5 s


def test_headers_report_without_taking(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=60, tpm=0, clock=clock, window_s=2.0)
    assert limiter.headers()["x-ratelimit-remaining-requests"] == "2"
    assert limiter.headers()["x-ratelimit-remaining-requests"] == "2"
    limiter.admit(1)
    assert limiter.headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "1s",
    }


async def test_burst_over_http_with_a_two_second_window(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    async with Simulator(SimConfig(rpm=600, limit_window_s=2), clock=clock) as url:
        endpoint = f"{url}/chat/completions"

        async def status(i: int) -> int:
            async with session.post(endpoint, json=chat(f"burst {i}")) as response:
                return response.status

        statuses = await asyncio.gather(*(status(i) for i in range(25)))
        assert Counter(statuses) == {200: 20, 429: 5}
        async with session.post(endpoint, json=chat()) as response:
            assert response.status == 429
            assert response.headers["retry-after-ms"] == "100"  # 600 rpm: one every 0.1 s
        clock.advance(0.1)
        async with session.post(endpoint, json=chat()) as response:
            assert response.status == 200
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
            assert response.headers["x-ratelimit-limit-requests"] == "600"


async def test_every_chat_answer_carries_ratelimit_headers(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(rpm=100, tpm=100_000, models=["m"])) as url:
        endpoint = f"{url}/chat/completions"
        answers = []
        for request in (chat(), chat(stream=True), chat(model="unknown"), {"model": "m", "messages": []}):
            async with session.post(endpoint, json=request) as response:
                await response.read()
                answers.append((response.status, response.headers))
        async with session.post(endpoint, data=b"{not json") as response:
            answers.append((response.status, response.headers))
    assert [status for status, _ in answers] == [200, 200, 404, 400, 400]
    for _, headers in answers:
        assert {name for name in headers if name.startswith("x-ratelimit-")} == {
            f"x-ratelimit-{kind}-{unit}" for kind in ("limit", "remaining", "reset") for unit in ("requests", "tokens")
        }
    remaining = [int(headers["x-ratelimit-remaining-requests"]) for _, headers in answers]
    assert remaining == [99, 98, 98, 98, 98]  # only admitted requests take from the bucket


async def test_faulty_answers_carry_ratelimit_headers_too(session: aiohttp.ClientSession) -> None:
    async with (
        Simulator(SimConfig(rpm=100, fail_rate=1.0)) as url,
        session.post(f"{url}/chat/completions", json=chat()) as response,
    ):
        assert response.status == 500
        assert response.headers["x-ratelimit-remaining-requests"] == "99"
        assert "Retry-After" not in response.headers  # no fail_retry_after_s, no hint


async def test_no_ratelimit_headers_when_off_but_the_retry_hint_stays(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # the simulator's clock stands still: the hint is the whole window however slow the machine is
    async with Simulator(SimConfig(rpm=1, tpm=1000, ratelimit_headers=False), clock=clock) as url:
        headers = []
        for _ in range(2):
            async with session.post(f"{url}/chat/completions", json=chat()) as response:
                headers.append((response.status, response.headers))
    assert [status for status, _ in headers] == [200, 429]
    assert not [name for _, h in headers for name in h if name.lower().startswith("x-ratelimit")]
    assert int(headers[1][1]["Retry-After"]) == 60 and headers[1][1]["retry-after-ms"] == "60000"


@pytest.mark.parametrize("fmt", ["seconds", "date", "ms"])
async def test_each_retry_after_format_reads_back_as_the_wait(
    fmt: str, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    config = SimConfig(rpm=120, limit_window_s=0.5, retry_after_format=fmt)  # 1 at once, then one per 0.5 s
    async with Simulator(config, clock=clock) as url:
        async with session.post(f"{url}/chat/completions", json=chat()) as response:
            assert response.status == 200
        before = time.time()
        async with session.post(f"{url}/chat/completions", json=chat()) as response:
            after = time.time()
            assert response.status == 429
            headers = response.headers
        async with session.get(f"{url.removesuffix('/v1')}/requests?since=1") as response:
            (logged,) = (await response.json())["requests"]
    if fmt == "seconds":
        assert (headers["Retry-After"], headers["retry-after-ms"]) == ("1", "500")
        assert wait_from_headers(headers, after) == logged["retry_after_s"] == 0.5
    elif fmt == "ms":
        assert "Retry-After" not in headers and headers["retry-after-ms"] == "500"
        assert wait_from_headers(headers, after) == logged["retry_after_s"] == 0.5
    else:
        assert "retry-after-ms" not in headers and headers["Retry-After"].endswith(" GMT")
        at = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
        assert at == int(at) and before + 0.5 <= at < after + 1.5  # rounded up to a whole second
        assert 0.5 <= logged["retry_after_s"] < 1.5
        assert wait_from_headers(headers, after) <= logged["retry_after_s"] <= wait_from_headers(headers, before)


async def test_limits_per_model_give_each_model_its_own_buckets(session: aiohttp.ClientSession) -> None:
    for per_model, expected in ((False, [200, 429, 429]), (True, [200, 429, 200])):
        config = SimConfig(rpm=60, limit_window_s=1, limit_per_model=per_model)  # one at once, then one a second
        async with Simulator(config) as url:
            statuses = []
            for model in ("a", "a", "b"):
                async with session.post(f"{url}/chat/completions", json=chat(model=model)) as response:
                    await response.read()
                    statuses.append(response.status)
        assert statuses == expected, per_model
