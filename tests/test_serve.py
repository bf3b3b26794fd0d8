"""The live progress server: /snapshot and /events (Server-Sent Events) over real HTTP, and its tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pandas as pd
import pytest

import treadle
from treadle.engine.trace_reader import TraceReader
from treadle.serve import ProgressServer, is_loopback

PROBE_DIR = Path(__file__).parent / "data" / "probe"
ROWS = 4
TIMEOUT = 20


def gated_config(tmp_path: Path) -> dict:
    pd.DataFrame({"id": range(ROWS)}).to_csv(tmp_path / "seed.csv", index=False)
    return {
        "seed": {"path": str(tmp_path / "seed.csv")},
        "columns": [
            {"name": "held", "kind": "python", "function": "probe_cols:gated"},
            {"name": "after", "kind": "template", "template": "{{ held }}!"},
        ],
        "run": {"row_group_size": ROWS, "max_parallel": 8},
    }


@pytest.fixture
def held_run(tmp_path, probe):
    """A run held open whose `held` cells all wait at the probe's gate."""
    probe.close_gate()
    controller = treadle.start(gated_config(tmp_path), base_dir=PROBE_DIR, out=tmp_path / "run", hold_open=True)
    probe.wait_for(lambda p: p.running == ROWS)
    yield controller
    probe.open_gate()
    controller.close()
    assert controller.wait(TIMEOUT) is not None


class EventStream:
    """Reads a text/event-stream response: (event name, data) per message, comments skipped."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0

    async def next(self) -> tuple[str, str]:
        name, data = "message", []
        while True:
            raw = await asyncio.wait_for(self.response.content.readline(), TIMEOUT)
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    return name, "\n".join(data)
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    async def until(self, predicate) -> list[tuple[str, str]]:
        seen = []
        while True:
            message = await self.next()
            seen.append(message)
            if predicate(*message):
                return seen


def event_type(name: str, data: str) -> str | None:
    return json.loads(data)["type"] if name == "message" else None


async def test_snapshot_and_events_over_http(held_run, probe):
    controller = held_run
    with ProgressServer(controller) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async with session.get(f"{server.base_url}/snapshot") as response:
                assert response.status == 200
                assert response.content_type == "application/json"
                snapshot = await response.json()
            expected = controller.snapshot()
            assert snapshot["status"] == expected.status == "running"
            assert snapshot["cells"] == expected.cells
            assert snapshot["by_column"] == expected.by_column
            assert snapshot["cells"]["running"] == ROWS and snapshot["by_column"]["after"]["waiting"] == ROWS
            assert snapshot["columns"] == ["held", "after"]
            assert snapshot["limits"]["slots"] == {"total": 8, "in_use": ROWS, "peak": ROWS}
            assert snapshot["total_cells"] == 2 * ROWS and snapshot["finished_cells"] == 0
            assert snapshot["recent_events"][0]["type"] == "run_started"

            async with session.get(f"{server.base_url}/snapshot", params={"rows": "0-1"}) as response:
                window = (await response.json())["window"]
            assert window == {"0": ["running", "waiting"], "1": ["running", "waiting"]}
            async with session.get(f"{server.base_url}/snapshot", params={"rows": "x"}) as response:
                assert response.status == 400

            async with session.get(f"{server.base_url}/events") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
                stream = EventStream(response)
                name, data = await stream.next()
                assert name == "snapshot" and json.loads(data)["cells"]["running"] == ROWS

                probe.open_gate()
                seen = await stream.until(lambda name, data: event_type(name, data) == "idle")
                assert all(name == "message" for name, _ in seen)
                assert controller.snapshot().cells["done"] == 2 * ROWS

                controller.close()
                seen = await stream.until(lambda name, data: name == "end")
                types = [event_type(name, data) for name, data in seen]
                assert types[-2:] == ["run_finished", None]
                assert "stopping" in types
                assert json.loads(seen[-2][1])["status"] == "done"
                assert await asyncio.wait_for(response.content.read(), TIMEOUT) == b""  # closed after `end`

            async with session.get(f"{server.base_url}/") as response:
                page = await response.text()
            assert response.status == 200 and "EventSource" in page and "http" not in page

            # The run's metrics and report, from its run directory.
            assert controller.wait(TIMEOUT) is not None
            async with session.get(f"{server.base_url}/metrics") as response:
                assert response.status == 200
                metrics = await response.json()
            traced = list(TraceReader(controller.run_dir))
            assert metrics["attempts"]["total"] == metrics["attempts"]["done"] == len(traced) == 2 * ROWS
            assert metrics["concurrency"]["peak_in_flight"] == ROWS
            async with session.get(f"{server.base_url}/report") as response:
                report = await response.text()
            assert response.status == 200 and "<svg" in report and "Where did the time go" in report
            assert 'http-equiv="refresh"' not in report  # the run is over


async def test_a_stream_opened_after_the_run_ends_gets_a_snapshot_and_end(tmp_path, probe):
    controller = treadle.start(gated_config(tmp_path), base_dir=PROBE_DIR, out=tmp_path / "run")
    assert controller.wait(TIMEOUT).status == "done"
    with ProgressServer(controller, keepalive_s=0.05) as server:
        async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/events") as response:
            stream = EventStream(response)
            name, data = await stream.next()
            assert name == "snapshot" and json.loads(data)["status"] == "done"
            assert await stream.next() == ("end", "{}")


async def test_the_report_of_a_run_on_two_workers_shows_each_worker(tmp_path):
    (tmp_path / "s.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(40)))
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "t", "kind": "template", "template": "row {{ id }}"}],
        "run": {"row_group_size": 10, "workers": 2},
    }
    controller = treadle.start(config, base_dir=tmp_path, out=tmp_path / "run")
    assert controller.wait(TIMEOUT).status == "done"
    with ProgressServer(controller) as server:
        async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/report") as response:
            report = await response.text()
    assert response.status == 200 and "Workers (engine processes)" in report
    assert "worker 0:" in report and "worker 1:" in report


async def test_keepalive_comments_while_nothing_happens(held_run):
    with ProgressServer(held_run, keepalive_s=0.05) as server:
        async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/events") as response:
            stream = EventStream(response)
            assert (await stream.next())[0] == "snapshot"
            while stream.comments < 2:
                raw = await asyncio.wait_for(response.content.readline(), TIMEOUT)
                if raw.startswith(b":"):
                    stream.comments += 1
                else:
                    assert raw == b"\n" or raw.startswith(b"data: ")  # a progress event may come meanwhile
        # Stopping the server ends open streams too.
        async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/events") as response:
            await EventStream(response).next()
            server.stop()
            rest = await asyncio.wait_for(response.content.read(), TIMEOUT)
            assert rest.replace(b": keepalive\n\n", b"") == b""


def test_binding_beyond_loopback_needs_a_token(held_run):
    for host in ("0.0.0.0", "::", "192.168.1.10", ""):
        with pytest.raises(ValueError, match="needs a token"):
            ProgressServer(held_run, host=host)
    with pytest.raises(ValueError, match="empty"):
        ProgressServer(held_run, token=" ")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com") and not is_loopback(None)
    server = ProgressServer(held_run, host="0.0.0.0", token="s3cret")
    try:
        assert server.start().startswith("http://127.0.0.1:")
    finally:
        server.stop()


async def test_a_token_is_required_on_every_request(held_run):
    with ProgressServer(held_run, token="s3cret") as server:
        base = server.base_url
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/snapshot", "/events"):
                async with session.get(base + path) as response:
                    assert response.status == 401
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                async with session.get(base + path, headers={"Authorization": "Bearer wrong"}) as response:
                    assert response.status == 401
                async with session.get(base + path, params={"token": "s3cre"}) as response:
                    assert response.status == 401
            async with session.get(base + "/snapshot", headers={"Authorization": "Bearer s3cret"}) as response:
                assert response.status == 200
                assert (await response.json())["cells"]["running"] == ROWS
            async with session.get(base + "/snapshot", params={"token": "s3cret"}) as response:
                assert response.status == 200
            async with session.get(base + "/events", params={"token": "s3cret"}) as response:
                assert response.status == 200
                assert (await EventStream(response).next())[0] == "snapshot"


async def test_a_loopback_server_without_token_refuses_other_host_names(held_run):
    with ProgressServer(held_run) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.base_url}/snapshot", headers={"Host": "evil.example"}) as response:
                assert response.status == 403
            async with session.get(f"{server.base_url}/snapshot", headers={"Host": "localhost"}) as response:
                assert response.status == 200


def test_a_port_in_use_is_an_error(held_run):
    with ProgressServer(held_run) as first, pytest.raises(OSError):
        ProgressServer(held_run, port=first.port).start()
