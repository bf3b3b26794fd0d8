"""--executor ray on a cluster that is not this machine: its own monotonic clock (days ahead of the
driver's) and its own disk (the driver's pipeline folder is not there). The cluster is a `ray start
--head` in namespaces of its own (Linux: `unshare --time --mount`, with an empty filesystem over the
driver's folder). The pipeline's modules go to the actors with the run, a function reloaded on the driver
runs in the actors as the driver read it, and the actors' times reach the run on the driver's clock."""

from __future__ import annotations

import json
import os
import queue
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from ray_head import TREADLE_PATH, ray_head
from workers_helpers import sorted_output

import treadle
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller

if not os.environ.get("CI"):  # CI installs the Ray extra (.ci/run): there a missing Ray fails, never skips
    pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'treadle[ray]'")

AHEAD_S = 250_000  # about three days: the cluster's machine booted that much before the driver's
ROWS = 120
# Token authentication is Ray's default for `ray start`: the token would come from ~/.ray, off for these tests.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": TREADLE_PATH}
HIDE = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'  # an empty filesystem over the driver's folder


@pytest.fixture(scope="module")
def driver_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the driver keeps its pipelines and runs: the cluster does not see its files."""
    return tmp_path_factory.mktemp("driver")


@pytest.fixture(scope="module")
def cluster(driver_folder: Path) -> Iterator[str]:
    """A one-node Ray cluster on a clock AHEAD_S seconds ahead, without `driver_folder`'s files; its address."""
    probe = subprocess.run(["unshare", "--time", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no time and mount namespaces here (Linux 5.6, CAP_SYS_ADMIN): {probe.stderr.strip()}")
    wrapper = ["unshare", "--time", "--monotonic", str(AHEAD_S), "--mount", "--propagation", "private",
               "sh", "-c", HIDE, "sh", str(driver_folder)]  # fmt: skip
    with ray_head(RAY_ENV, wrapper) as address:
        yield address


CHECKS = """
from helpers import size


def check(row):
    if row["id"] % 7 == 0:
        raise ValueError("not checkable yet")
    return size(row["q"])
"""

FIXED = CHECKS.replace('raise ValueError("not checkable yet")', "return -1")


def test_actors_elsewhere_import_and_reload_the_drivers_modules_and_trace_on_its_clock(
    driver_folder, cluster, monkeypatch
):
    folder = driver_folder / "reload"
    folder.mkdir()
    pd.DataFrame({"id": range(ROWS), "q": [f"question {i}" for i in range(ROWS)]}).to_csv(folder / "s.csv", index=False)
    (folder / "checks.py").write_text(CHECKS)
    (folder / "helpers.py").write_text("def size(text):\n    return len(text)\n")  # imported by checks.py
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "n", "kind": "python", "function": "checks:check", "retries": 0}],
        "run": {"row_group_size": 20, "workers": 2, "executor": "ray", "ray_address": cluster},
    }
    (folder / "pipeline.yaml").write_text(json.dumps(config))
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    options = RunOptions(out=folder / "run", hold_open=True, cache="off")
    controller = open_controller(treadle.load(folder / "pipeline.yaml"), options)
    events: queue.SimpleQueue = controller.subscribe()
    controller.start()
    _wait_idle(events)
    failing = len(range(0, ROWS, 7))
    assert controller.snapshot().cells["failed"] == failing
    (folder / "checks.py").write_text(FIXED)
    assert controller.reload_function("n") == 2
    assert controller.retry(all_failed=True) == failing
    _wait_idle(events)
    controller.close()
    result = controller.wait(60)
    assert result is not None and result.status == "done", result
    output = sorted_output(result.run_dir)  # the first values from the modules sent, the others from the reload
    expected = [-1 if i % 7 == 0 else len(f"question {i}") for i in range(ROWS)]
    assert output["n"].tolist() == expected
    trace = pq.read_table(result.run_dir / "trace.parquet")
    assert trace.num_rows == ROWS + failing and set(trace["worker"].to_pylist()) == {0, 1}
    # Every attempt within the run on the driver's clock (AHEAD_S off before the offset was applied).
    assert 0 < pc.min(trace["t_start"]).as_py() <= pc.max(trace["t_end"]).as_py() <= result.summary["wall_s"]
    assert 0 < result.summary["first_row_s"] <= result.summary["wall_s"]


def _wait_idle(events: queue.SimpleQueue) -> None:
    while events.get(timeout=120).type != "idle":
        pass
