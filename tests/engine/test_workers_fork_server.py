"""--workers N: the worker processes are forked from one warm process (workers/forkserver.py), which
lives as long as the process that started it; each worker still sees that process's world as it is at
its run (environment, working directory), and a server that has died is started again."""

from __future__ import annotations

import json
import os
import select
import signal
from pathlib import Path

import pandas as pd

import treadle
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller

ROWS = 40

WHERE = """
import os


def where(row):
    return f"{os.environ.get('TREADLE_TEST_MARK')}|{os.getcwd()}"
"""


def _pipeline(tmp_path: Path) -> Path:
    pd.DataFrame({"id": range(ROWS)}).to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "where_am_i.py").write_text(WHERE)
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "w", "kind": "python", "function": "where_am_i:where"}],
        "run": {"row_group_size": 10, "workers": 2},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


def _run(pipeline: Path, out: Path) -> tuple[set[str], set[int]]:
    """The run's distinct values of `w`, and the parents of its worker processes (read while the run is
    held open: its workers are alive until it closes)."""
    controller = open_controller(treadle.load(pipeline), RunOptions(out=out, hold_open=True, cache="off"))
    events = controller.subscribe()
    controller.start()
    while events.get(timeout=60).type != "idle":
        pass
    parents = {_parent(worker.pid) for worker in controller.snapshot().workers if worker.pid is not None}
    controller.close()
    result = controller.wait(60)
    assert result is not None and result.status == "done", result
    return set(pd.read_parquet(result.run_dir / "output.parquet")["w"]), parents


def _parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def test_workers_see_the_environment_and_directory_of_their_run(tmp_path, monkeypatch):
    pipeline = _pipeline(tmp_path)
    monkeypatch.setenv("TREADLE_TEST_MARK", "first")
    monkeypatch.chdir(tmp_path)
    first, _ = _run(pipeline, tmp_path / "one")
    assert first == {f"first|{tmp_path}"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("TREADLE_TEST_MARK", "second")  # as a notebook sets a key between two runs
    monkeypatch.chdir(elsewhere)
    second, _ = _run(pipeline, tmp_path / "two")
    assert second == {f"second|{elsewhere}"}


def test_a_dead_fork_server_is_started_again(tmp_path):
    pipeline = _pipeline(tmp_path)
    _, servers = _run(pipeline, tmp_path / "one")
    _, again = _run(pipeline, tmp_path / "two")
    assert len(servers) == 1 and again == servers  # the next run's workers come from the same warm server
    (server,) = servers
    assert server != os.getpid()
    pidfd = os.pidfd_open(server)
    try:
        os.kill(server, signal.SIGKILL)
        assert select.select([pidfd], [], [], 30)[0], "the fork server outlived SIGKILL"
    finally:
        os.close(pidfd)
    values, replaced = _run(pipeline, tmp_path / "three")
    assert len(values) == 1 and len(replaced) == 1 and replaced != servers
