"""--executor ray against a cluster with token authentication (`ray start`'s default once a token exists):
a driver without the cluster's token is told at once what to set, not after ray.init's 20 s of retries,
and the token never shows; with it, the run goes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_head import ray_head

if not os.environ.get("CI"):  # CI installs the Ray extra (.ci/run): there a missing Ray fails, never skips
    pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'treadle[ray]'")

TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with ray_head({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}) as address:
        yield address


def _run(tmp_path: Path, address: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "s.csv").write_text("q\nab\nabc\n")
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "t", "kind": "template", "template": "{{ q }}!"}],
        "run": {"workers": 2, "executor": "ray", "ray_address": address},
    }
    (tmp_path / "pipeline.yaml").write_text(json.dumps(config))
    home = tmp_path / "home"  # no ~/.ray/auth_token of this machine's
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    command = [sys.executable, "-m", "treadle.cli", "run", "pipeline.yaml", "--no-ui", "--out", "run"]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=tmp_path, env={**clean, "HOME": str(home), **env}, capture_output=True, text=True, timeout=120
    )
    return done, time.monotonic() - started


def test_a_driver_without_the_clusters_token_is_told_to_set_it(tmp_path, cluster):
    done, took = _run(tmp_path, cluster, {})
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"treadle: error: the Ray cluster at {cluster} uses token authentication: set RAY_AUTH_MODE=token, with"
        " the cluster's token in RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token"
    )
    assert took < 15, took  # ray.init alone retried for 20 s
    assert "Traceback" not in done.stderr


def test_a_wrong_token_is_told_apart_and_never_shown(tmp_path, cluster):
    wrong = secrets.token_hex(16)
    done, _ = _run(tmp_path, cluster, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": wrong})
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(
        f"treadle: error: the Ray cluster at {cluster} refused this machine's authentication token"
    )
    assert wrong not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr


def test_with_the_clusters_token_the_run_goes(tmp_path, cluster):
    done, _ = _run(tmp_path, cluster, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "done"
    assert TOKEN not in done.stdout + done.stderr
    assert not any(
        TOKEN in path.read_bytes().decode(errors="replace") for path in (tmp_path / "run").rglob("*") if path.is_file()
    )
