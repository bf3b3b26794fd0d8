"""--executor ray from the command line, when it cannot start: no Ray installed, no cluster there."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from treadle.cli import main


def _pipeline(tmp_path: Path) -> Path:
    (tmp_path / "s.csv").write_text("q\nhello\n")
    pipeline = tmp_path / "pipeline.yaml"
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "t", "kind": "template", "template": "{{ q }}!"}],
    }
    pipeline.write_text(json.dumps(config))
    return pipeline


def test_executor_ray_without_ray_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    pipeline = _pipeline(tmp_path)
    code = main(["run", str(pipeline), "--no-ui", "--executor", "ray", "--out", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip() == "treadle: error: --executor ray needs Ray: pip install 'treadle[ray]'"
    assert not (tmp_path / "r").exists()  # nothing started


def test_a_ray_address_nobody_answers_at_is_one_error_line(tmp_path, capsys):
    pytest.importorskip("ray", reason="needs Ray: pip install 'treadle[ray]'")
    with socket.socket() as closed:  # a port that was free a moment ago: refused at once
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    out = str(tmp_path / "r")
    code = main(
        ["run", str(_pipeline(tmp_path)), "--no-ui", "--executor", "ray", "--ray-address", address, "--out", out]
    )
    assert code == 1
    assert f"treadle: error: cannot reach the Ray cluster at {address}" in capsys.readouterr().err
