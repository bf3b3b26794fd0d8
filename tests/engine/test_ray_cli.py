"""--executor ray when Ray cannot start, from the command line (run and resume) and the Python API: no Ray
installed, no cluster at the address. One error line and a non-zero exit; the API raises the same error."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import treadle
from treadle.cli import main
from treadle.engine.errors import FatalRunError, TreadleError

NEEDS_RAY = "--executor ray needs Ray: pip install 'treadle[ray]'"


def _needs_ray() -> None:
    """Skipped without Ray, except in CI, which installs it (.ci/run): there a missing Ray is a failure."""
    if not os.environ.get("CI"):
        pytest.importorskip("ray", reason="needs Ray: pip install 'treadle[ray]'")


def _pipeline(tmp_path: Path) -> Path:
    (tmp_path / "s.csv").write_text("q\nhello\n")
    pipeline = tmp_path / "pipeline.yaml"
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "t", "kind": "template", "template": "{{ q }}!"}],
    }
    pipeline.write_text(json.dumps(config))
    return pipeline


def _failed_run(tmp_path: Path) -> Path:
    """A run directory whose one cell failed (in this process, no Ray): a resume has a row group to run."""
    (tmp_path / "s.csv").write_text("q\nhello\n")
    (tmp_path / "fails.py").write_text("def check(row):\n    raise ValueError('not yet')\n")
    pipeline = tmp_path / "pipeline.yaml"
    config = {"seed": {"path": "s.csv"}, "columns": [{"name": "n", "kind": "python", "function": "fails:check"}]}
    pipeline.write_text(json.dumps(config))
    result = treadle.run(pipeline, out=tmp_path / "run")
    assert result.status == "failed"
    return result.run_dir


def _closed_address() -> str:
    with socket.socket() as closed:  # a port that was free a moment ago: refused at once
        closed.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{closed.getsockname()[1]}"


@pytest.fixture
def without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed


def test_executor_ray_without_ray_says_how_to_get_it(tmp_path, without_ray, capsys):
    pipeline = _pipeline(tmp_path)
    code = main(["run", str(pipeline), "--no-ui", "--executor", "ray", "--out", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"treadle: error: {NEEDS_RAY}"
    assert not (tmp_path / "r").exists()  # nothing started


def test_resume_on_ray_without_ray_says_how_to_get_it(tmp_path, without_ray, capsys):
    run_dir = _failed_run(tmp_path)
    assert main(["resume", str(run_dir), "--no-ui", "--executor", "ray"]) == 2
    assert capsys.readouterr().err.strip() == f"treadle: error: {NEEDS_RAY}"


def test_the_api_without_ray_raises_how_to_get_it(tmp_path, without_ray):
    with pytest.raises(TreadleError, match=f"^{re.escape(NEEDS_RAY)}$"):
        treadle.run(_pipeline(tmp_path), out=tmp_path / "r", executor="ray")
    assert not (tmp_path / "r").exists()


def test_the_api_refuses_an_unknown_executor(tmp_path):
    with pytest.raises(ValueError, match="executor: expected 'local' or 'ray', got 'dask'"):
        treadle.run(_pipeline(tmp_path), out=tmp_path / "r", executor="dask")


def test_a_ray_address_nobody_answers_at_is_one_error_line(tmp_path, capsys):
    _needs_ray()
    address = _closed_address()
    out = str(tmp_path / "r")
    code = main(
        ["run", str(_pipeline(tmp_path)), "--no-ui", "--executor", "ray", "--ray-address", address, "--out", out]
    )
    assert code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"treadle: error: cannot reach the Ray cluster at {address}: ")


class _QuietWebServer(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # its own stderr lines are not the run's
        pass


def test_a_web_server_at_the_ray_address_is_one_error_line_at_once(tmp_path, capsys):
    """Not a cluster but something else listening (say the dashboard's port): ray.init would retry for
    minutes, deaf to SIGTERM."""
    _needs_ray()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _QuietWebServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    out = str(tmp_path / "r")
    try:
        code = main(
            ["run", str(_pipeline(tmp_path)), "--no-ui", "--executor", "ray", "--ray-address", address, "--out", out]
        )
    finally:
        server.shutdown()
    assert code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"treadle: error: no Ray cluster answers at {address}: something else listens there")


def test_resume_takes_a_ray_address_and_says_when_nobody_answers(tmp_path, capsys):
    _needs_ray()
    run_dir, address = _failed_run(tmp_path), _closed_address()
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--no-ui", "--executor", "ray", "--ray-address", address]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"treadle: error: cannot reach the Ray cluster at {address}: ")


def test_the_api_raises_when_nobody_answers_at_the_ray_address(tmp_path):
    _needs_ray()
    address = _closed_address()
    with pytest.raises(FatalRunError, match=f"^cannot reach the Ray cluster at {address}: "):
        treadle.run(_pipeline(tmp_path), out=tmp_path / "r", executor="ray", ray_address=address)
    with pytest.raises(FatalRunError, match=f"^cannot reach the Ray cluster at {address}: "):
        treadle.resume(_failed_run(tmp_path), executor="ray", ray_address=address)
