"""Commands over `--serve` (treadle/serve_commands.py): a column edited, a function reloaded, failed cells
of a column retried and a column recomputed, over real HTTP against a run held open."""

from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request

import pandas as pd
import pytest
import yaml

import treadle
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions
from treadle.serve import ProgressServer

BROKEN = 'def double(row):\n    if row["id"] % 2:\n        raise ValueError("odd")\n    return row["id"] * 2\n'
FIXED = 'def double(row):\n    return row["id"] * 2\n'


def call(url: str, body: dict | None = None, content_type: str = "application/json") -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def served(tmp_path):
    """A run held open with failed cells in column `a` (odd rows), served on a loopback port."""
    pd.DataFrame({"id": range(4)}).to_csv(tmp_path / "seed.csv", index=False)
    (tmp_path / "served_fix.py").write_text(BROKEN)
    config = {
        "seed": {"path": "seed.csv"},
        "columns": [
            {"name": "a", "kind": "python", "function": "served_fix:double"},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
        "run": {"retries": 0, "early_stop": None},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    controller = RunController(
        treadle.load(tmp_path / "pipeline.yaml"), RunOptions(out=tmp_path / "run", hold_open=True)
    )
    events = controller.subscribe()
    controller.start()
    server = ProgressServer(controller)
    url = server.start()
    yield controller, events, url, tmp_path
    server.stop()
    controller.close()
    controller.wait(20)


def wait_idle(events: queue.SimpleQueue) -> None:
    while events.get(timeout=20).type != "idle":
        pass


def test_fix_and_retry_over_http(served):
    controller, events, url, folder = served
    wait_idle(events)
    assert call(f"{url}/columns/b", {"template": "{{ a }"}) == (
        400,
        {"error": "b.template: template syntax error at line 1: unexpected '}'"},
    )
    assert call(f"{url}/columns/b", {"template": "{{ a }}?"}) == (200, {"version": 2})
    (folder / "served_fix.py").write_text(FIXED)
    assert call(f"{url}/columns/a/reload", {}) == (200, {"version": 3})
    assert call(f"{url}/retry", {"columns": ["a"]}) == (200, {"retried": 2})
    wait_idle(events)
    assert call(f"{url}/columns/b/recompute", {"dry_run": True}) == (200, {"cells": 4, "calls": 0})
    assert call(f"{url}/columns/b/recompute", {"rows": [0]}) == (200, {"cells": 1})
    wait_idle(events)
    status, versions = call(f"{url}/versions")
    assert status == 200 and [v["column"] for v in versions] == ["b", "a"]
    status, answer = call(f"{url}/pipeline-file", {})
    assert status == 200 and '+  template: "{{ a }}?"' in answer["diff"]
    assert "{{ a }}!" in (folder / "pipeline.yaml").read_text()
    assert call(f"{url}/pipeline-file", {"save": True}) == (200, answer)
    assert "{{ a }}?" in (folder / "pipeline.yaml").read_text()
    controller.close()
    out = pd.read_parquet(controller.wait(20).output_path)
    assert out["b"].tolist() == ["0?", "2?", "4!", "6?"]


def test_a_command_must_be_sent_as_json(served):
    url = served[2]
    status, answer = call(f"{url}/retry", {"all_failed": True}, content_type="text/plain")
    assert status == 400 and "Content-Type: application/json" in answer["error"]
    assert call(f"{url}/columns/nope", {"template": "x"})[0] == 400
    assert call(f"{url}/retry", {"rows": "1"}) == (400, {"error": "rows must be a list of row numbers"})
