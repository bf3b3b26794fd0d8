"""Injected faults are observable by a client, and repeatable under a seed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest

from treadle.sim import SimConfig, Simulator
from treadle.sim.faults import Dice


def chat(content: str = "Hello") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


async def test_fail_rate_gives_500_with_error_body(session: aiohttp.ClientSession) -> None:
    async with (
        Simulator(SimConfig(fail_rate=1.0)) as url,
        session.post(f"{url}/chat/completions", json=chat()) as response,
    ):
        body = await response.json()
    assert response.status == 500
    assert body["error"]["type"] == "server_error"


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


FAULTY = SimConfig(seed=7, fail_rate=0.3, malformed_rate=0.2, drop_rate=0.2, latency_ms=5, jitter_ms=5)
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
    assert {"200", "500", "malformed", "dropped"} <= seen  # the seed exercises every fault here
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
