"""Injected faults are observable by a client, and repeatable under a seed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from sim_helpers import chat, wait_from_headers

from treadle.sim import SimConfig, Simulator
from treadle.sim.faults import Dice


async def test_fail_rate_gives_500_with_error_body(session: aiohttp.ClientSession) -> None:
    async with (
        Simulator(SimConfig(fail_rate=1.0)) as url,
        session.post(f"{url}/chat/completions", json=chat()) as response,
    ):
        body = await response.json()
    assert response.status == 500
    assert body["error"]["type"] == "server_error"
    assert "Retry-After" not in response.headers and "retry-after-ms" not in response.headers


async def test_fail_retry_after_s_puts_a_retry_hint_on_500s(session: aiohttp.ClientSession) -> None:
    config = SimConfig(fail_rate=1.0, fail_retry_after_s=0.25, retry_after_format="ms")
    async with Simulator(config) as url, session.post(f"{url}/chat/completions", json=chat()) as response:
        assert response.status == 500
        assert response.headers["retry-after-ms"] == "250" and "Retry-After" not in response.headers


@pytest.mark.parametrize(("fmt", "wait"), [("seconds", 0.5), ("date", None), ("ms", 0.5)])
async def test_overload_rate_answers_503_with_a_retry_hint(
    fmt: str, wait: float | None, session: aiohttp.ClientSession
) -> None:
    config = SimConfig(overload_rate=1.0, overload_retry_after_s=0.5, retry_after_format=fmt, latency_ms=5_000)
    async with Simulator(config) as url:
        started = time.perf_counter()
        async with session.post(f"{url}/chat/completions", json=chat()) as response:
            body = await response.json()
        assert time.perf_counter() - started < 2.0  # shed at once: no latency first
        told = wait_from_headers(response.headers, time.time())
        sim_stats = await _stats(session, url)
    assert response.status == 503
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "overloaded"
    assert told is not None
    if wait is None:  # an HTTP-date: whole seconds, rounded up
        assert 0 < told < 1.5
    else:
        assert told == wait
    assert sim_stats["faults"] == {"overload": 1} and sim_stats["by_status"] == {"503": 1}


async def test_openai_sdk_sees_overload_as_a_retryable_503() -> None:
    async with (
        Simulator(SimConfig(overload_rate=1.0, overload_retry_after_s=0.2)) as url,
        openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=chat()["messages"])
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after-ms"] == "200"


async def test_malformed_rate_gives_200_that_is_not_json(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(malformed_rate=1.0)) as url:
        async with session.post(f"{url}/chat/completions", json=chat()) as response:
            text = await response.text()
        assert response.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        # The openai SDK surfaces this as a bare json.JSONDecodeError, not as an openai.APIError.
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client:
            with pytest.raises(json.JSONDecodeError):
                await client.chat.completions.create(model="m", messages=chat()["messages"])


async def test_malformed_stream_has_a_broken_event() -> None:
    async with (
        Simulator(SimConfig(malformed_rate=1.0)) as url,
        openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(model="m", messages=chat()["messages"], stream=True)
        with pytest.raises(json.JSONDecodeError):
            _ = [chunk async for chunk in stream]


async def test_drop_rate_cuts_the_connection(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(drop_rate=1.0)) as url:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.post(f"{url}/chat/completions", json=chat()):
                pass
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client:
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="m", messages=chat()["messages"])
        sim_stats = await _stats(session, url)
    assert sim_stats["by_status"] == {"dropped": 2}
    assert sim_stats["faults"] == {"drop": 2}


async def test_hang_rate_never_answers_until_the_client_gives_up() -> None:
    sim = Simulator(SimConfig(hang_rate=1.0))
    async with sim as url:
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=0.2) as client:
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model="m", messages=chat()["messages"])
        stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 0.8  # a hung request does not hold up shutdown
    stats = sim.stats()
    assert stats["in_flight"] == 0  # the hung handler was released, not leaked
    assert stats["faults"] == {"hang": 1}


async def test_hang_is_capped_by_hang_max_s(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(hang_rate=1.0, hang_max_s=0.1)) as url:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.post(f"{url}/chat/completions", json=chat()):
                pass
        assert (await _stats(session, url))["by_status"] == {"hung": 1}


async def _outcome(session: aiohttp.ClientSession, url: str, prompt: str) -> str:
    try:
        async with session.post(f"{url}/chat/completions", json=chat(prompt)) as response:
            text = await response.text()
    except aiohttp.ServerDisconnectedError:
        return "dropped"
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return "malformed"
    return str(response.status)


FAULTY = SimConfig(
    seed=7, fail_rate=0.3, malformed_rate=0.2, drop_rate=0.2, overload_rate=0.15, latency_ms=5, jitter_ms=5
)
PROMPTS = [f"prompt number {i}" for i in range(12)]


async def _run_sequence(concurrent: bool) -> dict[str, list[str]]:
    """Each prompt twice (a first attempt and a 'retry'); outcomes keyed by prompt."""
    outcomes: dict[str, list[str]] = {p: [] for p in PROMPTS}
    connector = aiohttp.TCPConnector(force_close=True)  # a dropped connection must not taint others
    async with Simulator(FAULTY) as url, aiohttp.ClientSession(connector=connector) as session:
        for _attempt in range(2):
            if concurrent:
                order = list(reversed(PROMPTS))
                results = await asyncio.gather(*(_outcome(session, url, p) for p in order))
                for prompt, result in zip(order, results, strict=True):
                    outcomes[prompt].append(result)
            else:
                for prompt in PROMPTS:
                    outcomes[prompt].append(await _outcome(session, url, prompt))
    return outcomes


async def test_seed_makes_outcomes_repeatable_whatever_the_arrival_order() -> None:
    first = await _run_sequence(concurrent=False)
    again = await _run_sequence(concurrent=False)
    shuffled = await _run_sequence(concurrent=True)
    assert first == again == shuffled
    seen = {result for results in first.values() for result in results}
    assert {"200", "500", "503", "malformed", "dropped"} <= seen  # the seed exercises every fault here
    # Some prompt fails on its first attempt and succeeds on its retry.
    assert any(results[0] != "200" and results[1] == "200" for results in first.values())


def test_latency_distributions_have_the_configured_mean() -> None:
    draws = 4000
    lognormal = Dice(SimConfig(latency_ms=100, latency_dist="lognormal", latency_sigma=0.5, seed=1))
    total = sum(lognormal.fate(lognormal.rng_for(str(i)), 0).latency_s for i in range(draws))
    assert total / draws == pytest.approx(0.1, rel=0.1)
    uniform = Dice(SimConfig(latency_ms=100, jitter_ms=20, tokens_per_s=50, seed=1))
    fates = [uniform.fate(uniform.rng_for(str(i)), completion_tokens=10) for i in range(200)]
    assert all(0.08 <= f.latency_s <= 0.12 and f.generation_s == pytest.approx(0.2) for f in fates)


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url.removesuffix('/v1')}/stats") as response:
        return await response.json()


def test_overload_comes_last_so_older_faults_keep_their_seeded_outcomes() -> None:
    before, after = (
        Dice(SimConfig(seed=3, fail_rate=0.2, drop_rate=0.2)),
        Dice(SimConfig(seed=3, fail_rate=0.2, drop_rate=0.2, overload_rate=0.3)),
    )
    old = [before.fate(before.rng_for(str(i)), 0).fault for i in range(300)]
    new = [after.fate(after.rng_for(str(i)), 0).fault for i in range(300)]
    assert all(n == o for o, n in zip(old, new, strict=True) if o is not None)
    assert {n for o, n in zip(old, new, strict=True) if o is None} == {None, "overload"}
