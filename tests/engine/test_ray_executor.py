"""--executor ray: engine workers as Ray actors on a local Ray with 2 CPUs, against the simulator over
HTTP; row groups travel to the driver in messages and the driver writes the run directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.events import Progress
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.sim import SimConfig, SimulatorThread

ray = pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'treadle[ray]'")

from treadle.engine.workers.ray_pool import ACTOR_NAME_PREFIX  # noqa: E402  (imports ray)

ROWS = 200
SLOTS = 16

FLAKY = """
def check(row):
    if row["id"] % 17 == 0:
        raise ValueError(f"row {row['id']} is not checkable")
    return len(row["a"])
"""


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (it takes seconds to start); the runs use it rather than their own."""
    root = str(Path(treadle.__file__).resolve().parent.parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield
    ray.shutdown()


def _pipeline(tmp_path: Path, url: str, name: str = "pipeline", **run: object) -> Path:
    """ROWS rows x two dependent llm columns, a python column that fails on some rows, a template."""
    pd.DataFrame({"id": range(ROWS), "q": [f"question {i}" for i in range(ROWS)]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    (tmp_path / "flaky.py").write_text(FLAKY)
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": SLOTS}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
            {"name": "b", "kind": "llm", "model": "m", "prompt": "again {{ a }}"},
            {"name": "n", "kind": "python", "function": "flaky:check", "depends_on": ["a"], "retries": 0},
            {"name": "t", "kind": "template", "template": "{{ id }}:{{ n }}"},
        ],
        "run": {"max_parallel": SLOTS, "row_group_size": 20, "workers": 2, "executor": "ray", **run},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return path


def _sorted_output(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "output.parquet").sort_values("id").reset_index(drop=True)


def test_ray_actors_write_the_same_output_as_one_process(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=5, seed=3)) as url:
        local = _pipeline(tmp_path, url, "local", workers=1, executor="local")
        one = treadle.run(local, out=tmp_path / "one", cache="off")
        actors = treadle.run(_pipeline(tmp_path, url), out=tmp_path / "ray", cache="off")
    failed_rows = len(range(0, ROWS, 17))
    assert one.status == actors.status == "failed"  # the rows whose python cell failed
    pd.testing.assert_frame_equal(_sorted_output(one.run_dir), _sorted_output(actors.run_dir))
    assert one.summary["rows"] == actors.summary["rows"]
    assert actors.summary["rows"]["failed"] == failed_rows
    assert one.summary["cells"] == actors.summary["cells"]
    assert actors.summary["rate_limits"]["m"]["requests"] == 2 * ROWS
    assert actors.summary["limits"]["slots"]["peak"] <= SLOTS
    assert sorted(p.name for p in actors.run_dir.iterdir()) == sorted(p.name for p in one.run_dir.iterdir())
    assert ray.util.list_named_actors() == []  # the run's actors are gone with it


def _wait_for_done_cells(controller, done: int) -> None:
    events = controller.subscribe()
    while True:
        payload = events.get(timeout=60).payload
        if isinstance(payload, Progress) and payload.cells.get("done", 0) >= done:
            return


def test_a_killed_actor_leaves_its_row_groups_to_the_other(tmp_path, caplog):
    sim = SimulatorThread(SimConfig(latency_ms=40, seed=5))
    with sim as url:
        pipeline = _pipeline(tmp_path, url)
        controller = treadle.start(pipeline, out=tmp_path / "run", cache="off")
        _wait_for_done_cells(controller, 60)  # both actors have started and finished some cells
        names = sorted(n for n in ray.util.list_named_actors() if n.startswith(ACTOR_NAME_PREFIX))
        assert len(names) == 2
        with caplog.at_level(logging.WARNING, logger="treadle.workers"):
            ray.kill(ray.get_actor(names[0]))
            result = controller.wait(120)
        requests = sim.stats()["requests_total"]
    assert result is not None and result.status == "failed"  # the python column's rows, as without the kill
    output = _sorted_output(result.run_dir)
    assert output["id"].tolist() == list(range(ROWS))  # every row once: no duplicates, none lost
    assert output["b"].notna().all()
    assert result.summary["cells"]["done"] == 4 * ROWS - 2 * len(range(0, ROWS, 17))
    died = [r.getMessage() for r in caplog.records if r.name == "treadle.workers"]
    assert len(died) == 1 and "Ray actor" in died[0] and "ended mid-run" in died[0]
    # Its groups rerun whole (its journal was on its own disk): at most its groups in flight are asked again.
    assert 2 * ROWS < requests <= 2 * ROWS + 2 * 20 * 3


def test_an_edit_and_a_recompute_reach_every_actor_and_a_killed_ones_groups(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=5, seed=3))
    with sim as url:
        options = RunOptions(out=tmp_path / "run", hold_open=True, cache="off")
        controller = open_controller(treadle.load(_pipeline(tmp_path, url)), options)
        events = controller.subscribe()
        before = set(ray.util.list_named_actors())  # another test's, not yet gone
        controller.start()
        while events.get(timeout=60).type != "idle":
            pass
        ours = sorted(n for n in set(ray.util.list_named_actors()) - before if n.startswith(ACTOR_NAME_PREFIX))
        assert len(ours) == 2
        ray.kill(ray.get_actor(ours[0]))
        while all(w.alive for w in controller.snapshot().workers):
            events.get(timeout=60)  # the driver hears of it on its loop: look again after its next event
        requests = sim.stats()["requests_total"]
        assert controller.update_column("b", prompt="once more {{ a }}") == 2
        assert controller.recompute("b") == ROWS  # the killed actor's groups: adopted with their files
        while events.get(timeout=60).type != "idle":
            pass
        assert sim.stats()["requests_total"] - requests == ROWS
        controller.close()
        result = controller.wait(60)
    assert result is not None
    output = _sorted_output(result.run_dir)
    assert output["id"].tolist() == list(range(ROWS))
    assert (output["b"] == "Simulated answer to: once more " + output["a"]).all()
    assert output["b__version"].tolist() == [2] * ROWS
    assert output["t"].notna().sum() == ROWS - len(range(0, ROWS, 17))  # the other columns, read back
