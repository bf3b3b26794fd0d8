"""The app over `--executor ray`: a local Ray the run starts under the app (which captures stderr, where
ray.init wanted a file descriptor), and a Ray that cannot be reached (the app leaves at once and the
error is the run's, raised by `wait`, printed by the CLI as one line)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tui_helpers import pipeline, until

import treadle
from treadle.engine.errors import FatalRunError
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.tui.app import TreadleApp

if not os.environ.get("CI") and importlib.util.find_spec("ray") is None:  # CI installs it: never skipped there
    pytest.skip("the Ray tests need Ray: pip install 'treadle[ray]'", allow_module_level=True)

ROWS = 40


def _controller(tmp_path: Path, **options: object):
    columns = [{"name": "t", "kind": "template", "template": "row {{ id }}"}]
    config = pipeline(tmp_path, ROWS, columns, workers=2, executor="ray")
    return open_controller(treadle.load(config, base_dir=tmp_path), RunOptions(out=tmp_path / "run", **options))


# In a process of its own: pytest turns faulthandler on, which hides what ray.init does without it.
UNDER_THE_APP = """
import asyncio, json, sys
from pathlib import Path

import treadle
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.tui.app import TreadleApp

config = json.loads(sys.argv[1])


async def main():
    loaded = treadle.load(config, base_dir=Path.cwd())
    controller = open_controller(loaded, RunOptions(out=Path("run"), cache="off"))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        controller.start()  # ray.init once the app holds stderr, as when Ray's import takes its second
        while not controller.finished:
            await pilot.pause(0.1)
        workers = len(app.snap.workers)
    result = controller.wait(60)
    print(json.dumps({"status": result.status, "done": result.summary["rows"]["done"], "workers": workers}))


asyncio.run(main())
"""


def test_a_local_ray_starts_under_the_app_and_its_actors_run(tmp_path):
    columns = [{"name": "t", "kind": "template", "template": "row {{ id }}"}]
    config = pipeline(tmp_path, ROWS, columns, workers=2, executor="ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    done = subprocess.run(
        [sys.executable, "-c", UNDER_THE_APP, json.dumps(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {"status": "done", "done": ROWS, "workers": 2}


async def test_a_ray_that_cannot_be_reached_ends_the_app_with_the_runs_error(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    controller = _controller(tmp_path, ray_address=address).start()
    app = TreadleApp(controller)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: not app.is_running or app.leaving, what="the app to leave")
    with pytest.raises(FatalRunError, match=f"^cannot reach the Ray cluster at {address}: "):
        controller.wait(10)
