"""Routing over real HTTP: chat completions however the path is spelled, and the answers of aiohttp's router
(404, 405 with Allow, HEAD, Expect) for everything else, as an aiohttp Application gives them."""

from __future__ import annotations

import aiohttp
from sim_helpers import chat
from yarl import URL

from treadle.sim import SimConfig, Simulator


async def test_no_route_is_404_and_a_wrong_method_405_with_allow(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url:
        root = url.removesuffix("/v1")
        answers = []
        for method, path in [
            ("GET", "/nope"),
            ("POST", "/v1/chat/completions/"),
            ("GET", "/v1/models/a/b"),
            ("GET", "/v1/chat/completions"),
            ("HEAD", "/v1/chat/completions"),
            ("POST", "/v1/models"),
            ("GET", "/stats/reset"),
        ]:
            async with session.request(method, f"{root}{path}") as response:
                answers.append((response.status, response.headers.get("Allow"), await response.text()))
    not_found = (404, None, "404: Not Found")
    assert answers == [
        not_found,
        not_found,
        not_found,
        (405, "POST", "405: Method Not Allowed"),
        (405, "POST", ""),
        (405, "GET,HEAD", "405: Method Not Allowed"),
        (405, "POST", "405: Method Not Allowed"),
    ]


async def test_head_of_a_get_route_has_its_headers_and_no_body(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url:
        async with session.get(f"{url}/models") as response:
            listed = await response.read()
        async with session.head(f"{url}/models") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(listed))
            assert await response.read() == b""


async def test_chat_completions_however_the_path_is_spelled(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url:
        root = url.removesuffix("/v1")
        contents = []
        for path in ["/v1/chat/completions?trace=1", "/v1/ch%61t/completions"]:
            async with session.post(URL(f"{root}{path}", encoded=True), json=chat("spelled")) as response:
                contents.append((await response.json())["choices"][0]["message"]["content"])
        async with session.post(URL(f"{root}/v1/chat%2Fcompletions", encoded=True), json=chat()) as response:
            assert response.status == 404  # an encoded slash is not a path separator
    assert contents == ["Simulated answer to: spelled"] * 2


async def test_expect_100_continue_is_answered_and_any_other_expectation_refused(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimConfig(api_key="k")) as url:
        key = {"Authorization": "Bearer k"}
        async with session.post(f"{url}/chat/completions", json=chat("go on"), headers=key, expect100=True) as response:
            assert (await response.json())["choices"][0]["message"]["content"] == "Simulated answer to: go on"
        headers = {**key, "Expect": "something-else"}
        async with session.post(f"{url}/chat/completions", json=chat(), headers=headers) as response:
            assert response.status == 417
        async with session.get(f"{url.removesuffix('/v1')}/stats") as response:
            stats = await response.json()
    assert stats["by_status"] == {"200": 1}  # the refused expectation never reached the handler


async def test_a_model_name_is_decoded_from_the_path(session: aiohttp.ClientSession) -> None:
    async with Simulator() as url, session.get(URL(f"{url}/models/org%2Fmodel%20x", encoded=True)) as response:
        assert (await response.json())["id"] == "org/model x"
