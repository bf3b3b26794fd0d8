"""--executor ray on a cluster whose clock is not the driver's: the actors' times (their attempts in the
trace, the first finished row) reach the run on the driver's clock. The cluster is a `ray start --head`
in a time namespace of its own (Linux, `unshare --time`), its monotonic clock days ahead, as another
machine's is; the run is `treadle run --ray-address` against it, as a user runs one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from workers_helpers import flaky_pipeline, sorted_output

import treadle
from treadle.sim import SimConfig, SimulatorThread

if not os.environ.get("CI"):  # CI installs the Ray extra (.ci/run): there a missing Ray fails, never skips
    pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'treadle[ray]'")

AHEAD_S = 250_000  # about three days: the cluster's machine booted that much before the driver's
ROWS = 120
# Token authentication is Ray's default for `ray start`: the token would come from ~/.ray, off for this test.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(treadle.__file__).resolve().parents[1])}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cluster_ahead() -> Iterator[str]:
    """A one-node Ray cluster whose monotonic clock is AHEAD_S seconds ahead of this process's; its address."""
    if subprocess.run(["unshare", "--time", "true"], capture_output=True).returncode != 0:
        pytest.skip("no time namespaces here (`unshare --time` needs Linux 5.6 and CAP_SYS_ADMIN)")
    port = _free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    # Short: Ray's socket paths under it must fit a Unix socket's 107 bytes (pytest's tmp_path does not).
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    command = ["unshare", "--time", "--monotonic", str(AHEAD_S), ray_cli, "start", "--head", "--block",
               f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
               f"--temp-dir={temp_dir}"]  # fmt: skip
    head = subprocess.Popen(
        command,
        env={**os.environ, **RAY_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its processes in a group of their own: stopped together, no other Ray touched
    )
    try:
        assert head.stdout is not None
        said = []
        for line in head.stdout:  # until it says it runs (with --block it then waits)
            said.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail(f"ray start ended (exit code {head.wait()}):\n{''.join(said[-20:])}")
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_actors_on_a_clock_days_ahead_trace_on_the_drivers_clock(tmp_path, cluster_ahead):
    with SimulatorThread(SimConfig(latency_ms=5, seed=3)) as url:
        pipeline = flaky_pipeline(tmp_path, url, ROWS, workers=2, executor="ray")
        run_dir = tmp_path / "run"
        ran = subprocess.run(
            [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(run_dir),
             "--no-cache", "--ray-address", cluster_ahead],
            env={**os.environ, **RAY_ENV}, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    assert ran.returncode == 1, ran.stderr  # 1: the rows whose python cell fails (flaky_pipeline)
    assert sorted_output(run_dir)["id"].tolist() == list(range(ROWS))
    summary = json.loads((run_dir / "summary.json").read_text())
    trace = pq.read_table(run_dir / "trace.parquet")
    assert trace.num_rows >= 3 * ROWS
    assert set(trace["worker"].to_pylist()) == {0, 1}
    # Every attempt within the run on the driver's clock (AHEAD_S off before the offset was applied).
    assert 0 < pc.min(trace["t_start"]).as_py() <= pc.max(trace["t_end"]).as_py() <= summary["wall_s"]
    assert 0 < summary["first_row_s"] <= summary["wall_s"]
