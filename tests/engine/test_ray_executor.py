"""--executor ray: engine workers as Ray actors on a local Ray with 2 CPUs, against the simulator over
HTTP; row groups travel to the driver in messages and the driver writes the run directory. Ray is chosen by
run.executor, by the API's executor= (the killed-actor test) and by `treadle resume --executor ray`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from workers_helpers import SLOTS, flaky_pipeline, sorted_output, wait_for_done_cells

import treadle
from treadle.cli import main
from treadle.engine.events import Progress
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.sim import SimConfig, SimulatorThread

if os.environ.get("CI"):  # CI installs the Ray extra (.ci/run): there a missing Ray fails these tests, never skips them
    import ray
else:
    ray = pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'treadle[ray]'")

from treadle.engine.workers.ray_pool import ACTOR_NAME_PREFIX  # it imports ray: after the check above

ROWS = 200


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (it takes seconds to start); the runs use it rather than their own.
    A new one ("local"), never a cluster RAY_ADDRESS or `ray start` left on this machine names."""
    env = {"env_vars": {"PYTHONPATH": str(Path(treadle.__file__).resolve().parent.parent)}}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
    yield
    ray.shutdown()


def _pipeline(tmp_path: Path, url: str, name: str = "pipeline", **run: object) -> Path:
    return flaky_pipeline(tmp_path, url, ROWS, name, **{"workers": 2, "executor": "ray", **run})


def test_ray_actors_write_the_same_output_as_one_process(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=5, seed=3)) as url:
        local = _pipeline(tmp_path, url, "local", workers=1, executor="local")
        one = treadle.run(local, out=tmp_path / "one", cache="off")
        actors = treadle.run(_pipeline(tmp_path, url), out=tmp_path / "ray", cache="off")
    failed_rows = len(range(0, ROWS, 17))
    assert one.status == actors.status == "failed"  # the rows whose python cell failed
    pd.testing.assert_frame_equal(sorted_output(one.run_dir), sorted_output(actors.run_dir))
    assert one.summary["rows"] == actors.summary["rows"]
    assert actors.summary["rows"]["failed"] == failed_rows
    assert one.summary["cells"] == actors.summary["cells"]
    assert actors.summary["rate_limits"]["m"]["requests"] == 2 * ROWS
    assert actors.summary["limits"]["slots"]["peak"] <= SLOTS
    assert sorted(p.name for p in actors.run_dir.iterdir()) == sorted(p.name for p in one.run_dir.iterdir())
    assert ray.util.list_named_actors() == []  # the run's actors are gone with it


def _wait_until_mid_run(controller, worker: int) -> None:
    """Until a progress event after which `worker` has cells in flight, and the run 60 cells done."""
    events = controller.subscribe()
    while True:
        payload = events.get(timeout=60).payload
        if isinstance(payload, Progress) and payload.cells.get("done", 0) >= 60:
            views = {view.index: view for view in controller.snapshot().workers}
            if views[worker].cells_in_flight > 0:
                return
        assert not controller.finished, f"the run ended before worker {worker} was seen with cells in flight"


def test_a_killed_actor_leaves_its_row_groups_to_the_other(tmp_path, caplog):
    sim = SimulatorThread(SimConfig(latency_ms=100, seed=5))  # 2.5 s at least: progress events come every second
    with sim as url:
        pipeline = _pipeline(tmp_path, url, executor="local")  # Ray from the API's executor= instead
        controller = treadle.start(pipeline, out=tmp_path / "run", cache="off", executor="ray")
        _wait_until_mid_run(controller, 0)
        names = sorted(n for n in ray.util.list_named_actors() if n.startswith(f"{ACTOR_NAME_PREFIX}0-"))
        assert len(names) == 1
        with caplog.at_level(logging.WARNING, logger="treadle.workers"):
            ray.kill(ray.get_actor(names[0]))  # worker 0, with requests in flight
            result = controller.wait(120)
        requests = sim.stats()["requests_total"]
    assert result is not None and result.status == "failed"  # the python column's rows, as without the kill
    output = sorted_output(result.run_dir)
    assert output["id"].tolist() == list(range(ROWS))  # every row once: no duplicates, none lost
    assert output["b"].notna().all()
    assert result.summary["cells"]["done"] == 4 * ROWS - 2 * len(range(0, ROWS, 17))
    died = [r.getMessage() for r in caplog.records if r.name == "treadle.workers"]
    assert len(died) == 1 and "Ray actor treadle-w0-" in died[0] and "ended mid-run" in died[0]
    # Its groups rerun whole (its journal was on its own disk): its requests in flight are asked again, and
    # at most the rest of its groups' (three: its share of row_groups_in_flight, and one more).
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
    output = sorted_output(result.run_dir)
    assert output["id"].tolist() == list(range(ROWS))
    assert (output["b"] == "Simulated answer to: once more " + output["a"]).all()
    assert output["b__version"].tolist() == [2] * ROWS
    assert output["t"].notna().sum() == ROWS - len(range(0, ROWS, 17))  # the other columns, read back


WHERE = """
import ray

def where(row):
    in_actor = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    return "ray" if in_actor else "local"
"""


def _where_pipeline(tmp_path: Path, url: str, rows: int) -> Path:
    """`rows` rows x an llm column and a python column saying whether its cell ran in a Ray actor."""
    pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    (tmp_path / "where.py").write_text(WHERE)
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": SLOTS}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
            {"name": "at", "kind": "python", "function": "where:where", "depends_on": ["a"]},
        ],
        "run": {"max_parallel": SLOTS, "row_group_size": 20},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


def test_a_one_process_run_resumes_on_ray_actors(tmp_path, capsys):
    rows = 2 * ROWS  # column a takes 2 s at least (8 slots, 40 ms): the cancel comes after the first progress (1 s)
    sim = SimulatorThread(SimConfig(latency_ms=40, seed=3))
    with sim as url:
        pipeline = _where_pipeline(tmp_path, url, rows)
        controller = treadle.start(pipeline, out=tmp_path / "run", cache="off", max_parallel=8)  # one process
        wait_for_done_cells(controller, 20)
        controller.cancel()
        first = controller.wait(60)
        assert first is not None and first.status == "interrupted"
        args = ["resume", str(tmp_path / "run"), "--no-ui", "--executor", "ray", "--workers", "2"]
        assert main(args) == 0, capsys.readouterr().err
        requests = sim.stats()["requests_total"]
    output = sorted_output(tmp_path / "run")
    assert output["id"].tolist() == list(range(rows))
    assert output["a"].notna().all()
    ran_at = output["at"].value_counts().to_dict()
    assert ran_at.get("local", 0) > 0 and ran_at.get("ray", 0) > 0  # the rest of the rows ran in the actors
    # No finished cell requested again: beyond one request a row, only those in flight at the cancel.
    assert rows <= requests <= rows + 8
