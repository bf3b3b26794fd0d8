"""GET /requests: what the simulator saw, request by request, bounded, and cleared with the stats."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import aiohttp
import pytest
from sim_helpers import FakeClock, chat, early_arrivals

from treadle.sim import SimConfig, Simulator, SimulatorThread


async def get_requests(session: aiohttp.ClientSession, url: str, query: str = "") -> dict[str, Any]:
    async with session.get(f"{url.removesuffix('/v1')}/requests{query}") as response:
        assert response.status == 200
        return await response.json()


async def post_status(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    async with session.post(f"{url}/chat/completions", json=body) as response:
        await response.read()
        return response.status


async def test_log_records_arrival_model_status_hint_and_tokens(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    config = SimConfig(rpm=60, limit_window_s=1, models=["a", "b"])  # one at once, then one a second
    async with Simulator(config, clock=clock) as url:
        assert await post_status(session, url, chat("first", model="a")) == 200
        clock.advance(0.25)
        assert await post_status(session, url, chat("second", model="b")) == 429
        clock.advance(0.25)
        assert await post_status(session, url, chat("third", model="nope")) == 404
        async with session.post(f"{url}/chat/completions", data=b"{not json") as response:
            assert response.status == 400
        log = await get_requests(session, url)
    assert log["next"] == 4
    first, second, third, fourth = log["requests"]
    assert first == {
        "index": 0,
        "t": 0.0,
        "model": "a",
        "status": 200,
        "retry_after_s": None,
        "prompt_tokens": first["prompt_tokens"],
        "t_end": 0.0,
    }
    assert first["prompt_tokens"] > 0
    assert (second["index"], second["t"], second["model"], second["status"]) == (1, 0.25, "b", 429)
    assert second["retry_after_s"] == 0.75 and second["t_end"] == 0.25
    assert (third["t"], third["model"], third["status"], third["prompt_tokens"]) == (0.5, "nope", 404, None)
    assert (fourth["model"], fourth["status"], fourth["prompt_tokens"]) == (None, 400, None)


async def test_t_is_the_arrival_before_latency(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(latency_ms=60)) as url:
        assert await post_status(session, url, chat()) == 200
        (entry,) = (await get_requests(session, url))["requests"]
    assert entry["t_end"] - entry["t"] >= 0.055


async def test_answers_never_sent_are_logged_by_outcome(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(drop_rate=1.0)) as url:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post_status(session, url, chat())
        (entry,) = (await get_requests(session, url))["requests"]
    assert entry["status"] == "dropped" and entry["model"] == "m"


async def test_since_reset_and_bad_since(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url:
        for i in range(5):
            assert await post_status(session, url, chat(f"q{i}")) == 200
        assert [e["index"] for e in (await get_requests(session, url, "?since=3"))["requests"]] == [3, 4]
        assert (await get_requests(session, url, "?since=9"))["requests"] == []
        for bad in ("-1", "x", "1.5"):
            async with session.get(f"{url.removesuffix('/v1')}/requests?since={bad}") as response:
                body = await response.json()
            assert response.status == 400 and body["error"]["param"] == "since"
        async with session.post(f"{url.removesuffix('/v1')}/stats/reset") as response:
            assert response.status == 200
        assert await get_requests(session, url) == {"requests": [], "next": 5}
        assert await post_status(session, url, chat()) == 200
        log = await get_requests(session, url, "?since=5")
    assert [e["index"] for e in log["requests"]] == [5]  # indexes go on after a reset: cursors stay valid


async def test_log_keeps_only_the_newest_entries(session: aiohttp.ClientSession) -> None:
    async with Simulator(request_log_max=3) as url:
        for i in range(7):
            assert await post_status(session, url, chat(f"q{i}")) == 200
        log = await get_requests(session, url)
        since_five = await get_requests(session, url, "?since=5")
        since_one = await get_requests(session, url, "?since=1")
    assert [e["index"] for e in log["requests"]] == [4, 5, 6] and log["next"] == 7
    assert [e["index"] for e in since_five["requests"]] == [5, 6]
    assert since_one == log  # evicted entries are gone, the rest follows


async def test_log_shows_whether_clients_waited_as_told(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    config = SimConfig(rpm=60, limit_window_s=1, retry_after_format="ms")  # one at once, then one a second
    async with Simulator(config, clock=clock) as url:
        assert await post_status(session, url, chat(model="a")) == 200
        assert await post_status(session, url, chat(model="a")) == 429  # told: 1 s
        assert await post_status(session, url, chat(model="b")) == 429  # b is told 1 s too
        clock.advance(0.5)
        assert await post_status(session, url, chat(model="a")) == 429  # too early; told 0.5 s more
        clock.advance(0.5)
        assert await post_status(session, url, chat(model="b")) == 200  # b waited its second
        clock.advance(1.0)
        assert await post_status(session, url, chat(model="a")) == 200
        log = (await get_requests(session, url))["requests"]
    assert [e["retry_after_s"] for e in log] == [None, 1.0, 1.0, 0.5, None, None]
    assert early_arrivals(log) == [3]
    assert early_arrivals(log[:3] + log[4:]) == []


def test_early_arrivals_ignores_requests_sent_before_the_hint_went_out() -> None:
    slow_500 = {"index": 0, "t": 0.0, "t_end": 0.3, "model": "m", "retry_after_s": 1.0}
    during = {"index": 1, "t": 0.1, "t_end": 0.1, "model": "m", "retry_after_s": None}
    after = {"index": 2, "t": 0.5, "t_end": 0.5, "model": "m", "retry_after_s": None}
    assert early_arrivals([slow_500, during, after]) == [2]


def test_runners_read_the_log_on_the_servers_loop() -> None:
    runner = SimulatorThread(Simulator(SimConfig(), request_log_max=10))
    with runner as url:
        request = urllib.request.Request(
            f"{url}/chat/completions", data=json.dumps(chat()).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        (entry,) = runner.requests()
        assert (entry["index"], entry["status"], entry["model"]) == (0, 200, "m")
        assert runner.requests(since=1) == []
        runner.reset_stats()
        assert runner.requests() == []
