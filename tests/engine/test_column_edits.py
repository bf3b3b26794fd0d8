"""Fixing a column while its run goes on: edits checked as `treadle validate` would, a python function
reloaded from its file, failed cells of a column retried and a column recomputed, the versions in
run.json, summary.json and output.parquet, and resume at the latest version. Real runs held open
(RunOptions.hold_open) so that each change is made while the run is live; llm columns go over HTTP to
the simulator, whose answers echo the prompt they were sent."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import pandas as pd
import pytest
import yaml

import treadle
from treadle.engine.column_edits import available_fields, prepare_edit
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions
from treadle.sim import SimulatorThread

BROKEN = """
def double(row):
    if row["id"] % 2:
        raise ValueError(f"odd row {row['id']}")
    return row["id"] * 2
"""
FIXED = """
def double(row):
    return row["id"] * 2
"""
FLAGGED = """
from pathlib import Path


def double(row):
    if row["id"] % 2 and (Path(__file__).parent / "broken").exists():
        raise ValueError(f"odd row {row['id']}")
    return row["id"] * 2
"""
SYNTAX_ERROR = """
def double(row)
    return row["id"] * 2
"""


def write_pipeline(tmp_path: Path, module: str, columns: list[dict], rows: int = 6, url: str | None = None) -> Path:
    """pipeline.yaml in tmp_path, with a seed of `rows` ids and the python module `module` (BROKEN)."""
    pd.DataFrame({"id": range(rows)}).to_csv(tmp_path / "seed.csv", index=False)
    (tmp_path / f"{module}.py").write_text(BROKEN)
    config: dict = {
        "seed": {"path": "seed.csv"},
        "columns": columns,
        "run": {"row_group_size": 4, "max_parallel": 4, "retries": 0, "backoff_s": 0, "early_stop": None},
    }
    if url is not None:
        config["models"] = {"m": {"model": "sim-model", "base_url": url, "max_parallel": 4}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def held_open(path: Path, out: Path) -> tuple[RunController, queue.SimpleQueue]:
    controller = RunController(treadle.load(path), RunOptions(out=out, hold_open=True))
    events = controller.subscribe()
    return controller.start(), events


def wait_idle(events: queue.SimpleQueue) -> None:
    while events.get(timeout=30).type != "idle":
        pass


def finish(controller: RunController) -> pd.DataFrame:
    controller.close()
    result = controller.wait(60)
    assert result is not None
    return pd.read_parquet(result.output_path)


def python_column(module: str) -> dict:
    return {"name": "a", "kind": "python", "function": f"{module}:double"}


def test_a_bad_edit_is_refused_with_one_line_and_nothing_changes(tmp_path):
    columns = [python_column("bad_edits"), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    loaded = treadle.load(write_pipeline(tmp_path, "bad_edits", columns))
    refused = {
        "{{ aa }}?": "b.template: unknown column or seed field 'aa' (did you mean 'a'?)",
        "{{ a }": "b.template: template syntax error at line 1: unexpected '}'",
    }
    for template, message in refused.items():
        with pytest.raises(ValueError) as caught:
            prepare_edit(loaded, "b", {"template": template})
        assert str(caught.value) == message
    with pytest.raises(ValueError, match=r"^b: cannot change prompt of a template column"):
        prepare_edit(loaded, "b", {"prompt": "x"})
    with pytest.raises(ValueError, match=r"^a is a python column: .* \(reload its function instead\)$"):
        prepare_edit(loaded, "a", {"template": "x"})
    with pytest.raises(ValueError, match=r"^no column named"):
        prepare_edit(loaded, "c", {"template": "x"})
    assert available_fields(loaded, "b") == ["id", "a"]
    assert loaded.graph.nodes["b"].config.template == "{{ a }}!"


def test_an_edit_that_needs_a_new_dependency_is_refused(tmp_path):
    columns = [
        python_column("new_dependency"),
        {"name": "b", "kind": "template", "template": "{{ id }}"},
        {"name": "c", "kind": "template", "template": "{{ id }}-"},
    ]
    loaded = treadle.load(write_pipeline(tmp_path, "new_dependency", columns))
    with pytest.raises(ValueError, match=r"^c: reads b, which it does not depend on; .* \(it may read: id\)$"):
        prepare_edit(loaded, "c", {"template": "{{ b }}"})


def test_template_edit_function_reload_and_column_retry_while_the_run_goes(tmp_path):
    module = "fix_and_retry"
    columns = [python_column(module), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    path = write_pipeline(tmp_path, module, columns)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    assert sorted(f["row"] for f in controller.failures()) == [1, 3, 5]

    assert controller.update_column("b", template="{{ a }}?") == 2
    assert controller.update_column("b", template="{{ a }}?") is None  # nothing differs: no version
    (tmp_path / f"{module}.py").write_text(FIXED)
    assert controller.reload_function("a") == 3
    assert controller.retry(columns=["a"]) == 3
    wait_idle(events)
    out = finish(controller)

    assert out["a"].tolist() == [0, 2, 4, 6, 8, 10]
    assert out["b"].tolist() == ["0!", "2?", "4!", "6?", "8!", "10?"]
    assert out["a__version"].tolist() == [1, 3, 1, 3, 1, 3]
    assert out["b__version"].tolist() == [1, 2, 1, 2, 1, 2]
    versions = json.loads((tmp_path / "run" / "run.json").read_text())["versions"]
    assert [(v["version"], v["column"], v["kind"]) for v in versions] == [(2, "b", "edit"), (3, "a", "reload")]
    assert versions[0]["changes"] == {"template": {"old": "{{ a }}!", "new": "{{ a }}?"}}
    assert "raise ValueError" in versions[1]["changes"]["function"]["old"]
    assert "raise" not in versions[1]["changes"]["function"]["new"]
    assert all(v["at"] for v in versions)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["versions"] == versions


def test_a_reload_that_fails_keeps_the_old_function_and_the_run_going(tmp_path):
    module = "reload_fails"
    path = write_pipeline(tmp_path, module, [python_column(module)])
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    (tmp_path / f"{module}.py").write_text(SYNTAX_ERROR)
    with pytest.raises(ValueError) as caught:
        controller.reload_function("a")
    assert str(caught.value) == f"a: module '{module}' has a syntax error at {module}.py line 2: expected ':'"
    assert controller.versions() == []
    assert controller.retry(columns=["a"]) == 3  # still the old function: the same rows fail again
    wait_idle(events)
    assert sorted(f["row"] for f in controller.failures()) == [1, 3, 5]
    (tmp_path / f"{module}.py").write_text(FIXED)
    controller.reload_function("a")
    controller.retry(rows=[3], columns=["a"])
    wait_idle(events)
    assert sorted(f["row"] for f in controller.failures()) == [1, 5]
    out = finish(controller)
    assert out["a"].tolist()[2:4] == [4, 6]


def test_recompute_reruns_a_column_and_its_dependents_for_finished_rows(tmp_path):
    module = "recomputed"
    columns = [python_column(module), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    path = write_pipeline(tmp_path, module, columns, rows=10)
    controller, events = held_open(path, tmp_path / "run")
    wait_idle(events)
    (tmp_path / f"{module}.py").write_text(FIXED.replace("* 2", "* 3"))
    controller.reload_function("a")
    plan = controller.recompute_plan("a")
    assert (plan.cells, plan.calls) == (10, 0)  # five done, five failed; no llm column
    assert controller.recompute("a") == 10
    wait_idle(events)
    out = finish(controller)
    assert out["a"].tolist() == [i * 3 for i in range(10)]
    assert out["b"].tolist() == [f"{i * 3}!" for i in range(10)]
    assert set(out["a__version"]) == {2}


def test_resume_continues_with_the_latest_version(tmp_path):
    module = "resumed_edit"
    columns = [python_column(module), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    path = write_pipeline(tmp_path, module, columns)
    # A resume in this process imports the module it already has: the fix is the flag file's removal.
    (tmp_path / f"{module}.py").write_text(FLAGGED)
    (tmp_path / "broken").touch()
    run_dir = tmp_path / "run"
    controller, events = held_open(path, run_dir)
    wait_idle(events)
    controller.update_column("b", template="[{{ a }}]")
    controller.close()
    assert controller.wait(60).status == "failed"

    (tmp_path / "broken").unlink()
    resumed = RunController.from_run_dir(run_dir).start()  # the pipeline file is as it was: no --recompute
    result = resumed.wait(60)
    assert result.status == "done"
    out = pd.read_parquet(result.output_path)
    assert out["b"].tolist() == ["0!", "[2]", "4!", "[6]", "8!", "[10]"]
    assert out["b__version"].tolist() == [1, 2, 1, 2, 1, 2]
    assert [v["version"] for v in json.loads((run_dir / "run.json").read_text())["versions"]] == [2]


def test_llm_prompt_and_max_tokens_edits_reach_the_next_requests(tmp_path):
    module = "llm_edits"
    llm = {"name": "l", "kind": "llm", "model": "m", "prompt": "Say {{ a }}"}
    with SimulatorThread() as url:
        path = write_pipeline(tmp_path, module, [python_column(module), llm], url=url)
        controller, events = held_open(path, tmp_path / "run")
        wait_idle(events)
        with pytest.raises(ValueError, match=r"^l\.max_tokens: Input should be greater than or equal to 1$"):
            controller.update_column("l", max_tokens=0)
        assert controller.update_column("l", prompt="Shout {{ a }} loudly", system_prompt="Be brief.") == 2
        (tmp_path / f"{module}.py").write_text(FIXED)
        controller.reload_function("a")
        controller.retry(columns=["a"])
        wait_idle(events)
        assert controller.update_column("l", max_tokens=3) == 4
        assert controller.recompute("l", rows=[0]) == 1
        wait_idle(events)
        out = finish(controller)
    answers = out["l"].tolist()
    assert answers[1::2] == [f"Simulated answer to: Shout {2 * i} loudly" for i in (1, 3, 5)]
    assert answers[2:5:2] == ["Simulated answer to: Say 4", "Simulated answer to: Say 8"]
    assert len(answers[0]) < len("Simulated answer to: Say 0")  # cut at 3 tokens
    assert out["l__version"].tolist() == [4, 2, 1, 2, 1, 2]


def test_a_recomputed_llm_cell_asks_the_model_not_the_cache(tmp_path):
    module = "cache_bypass"
    llm = {"name": "l", "kind": "llm", "model": "m", "prompt": "Say {{ id }}"}
    sim = SimulatorThread()
    with sim as url:
        path = write_pipeline(tmp_path, module, [llm], rows=4, url=url)
        assert treadle.run(path, out=tmp_path / "first").status == "done"  # its answers fill the cache
        requests = sim.stats()["requests_total"]
        controller, events = held_open(path, tmp_path / "run")
        wait_idle(events)
        assert controller.snapshot().cache["hits"] == 4 and sim.stats()["requests_total"] == requests
        assert controller.recompute_plan("l").calls == 4
        assert controller.recompute("l") == 4
        wait_idle(events)
        assert sim.stats()["requests_total"] - requests == 4
        assert controller.snapshot().cache["hits"] == 4
        out = finish(controller)
    assert out["l"].tolist() == [f"Simulated answer to: Say {i}" for i in range(4)]


def test_the_changes_saved_to_the_pipeline_file_and_resumed_from_it(tmp_path):
    module = "saved_edit"
    columns = [python_column(module), {"name": "b", "kind": "template", "template": "{{ a }}!"}]
    path = write_pipeline(tmp_path, module, columns)
    (tmp_path / f"{module}.py").write_text(FLAGGED)
    (tmp_path / "broken").touch()
    before = path.read_text()
    run_dir = tmp_path / "run"
    controller, events = held_open(path, run_dir)
    wait_idle(events)
    controller.update_column("b", template="<{{ a }}>")
    diff = controller.pipeline_file_edit()
    assert path.read_text() == before  # shown, not written
    assert "-  template: '{{ a }}!'\n+  template: \"<{{ a }}>\"\n" in diff
    assert controller.pipeline_file_edit(save=True) == diff
    assert yaml.safe_load(path.read_text())["columns"][1]["template"] == "<{{ a }}>"
    controller.close()
    controller.wait(60)

    (tmp_path / "broken").unlink()
    result = RunController.from_run_dir(run_dir).start().wait(60)  # the file holds the latest version
    assert result.status == "done"
    assert pd.read_parquet(result.output_path)["b"].tolist() == ["0!", "<2>", "4!", "<6>", "8!", "<10>"]
