"""What the tests of several engine processes (`--workers`, Ray actors) share: a pipeline of two dependent
llm columns, a python column that fails on some rows and a template; one of the two llm columns alone;
its output; waiting for progress."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from treadle.engine.events import Progress

SLOTS = 16

FLAKY = """
def check(row):
    if row["id"] % 17 == 0:
        raise ValueError(f"row {row['id']} is not checkable")
    return len(row["a"])
"""


TWO_LLM_COLUMNS = [
    {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
    {"name": "b", "kind": "llm", "model": "m", "prompt": "again {{ a }}"},
]


def _write_pipeline(tmp_path: Path, url: str, rows: int, columns: list[dict], run: dict, name: str, slots: int) -> Path:
    """`rows` rows (id, q) in s.csv and a pipeline of `columns` on model m at the simulator, `slots` slots."""
    seed = pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]})
    seed.to_csv(tmp_path / "s.csv", index=False)
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": slots}},
        "columns": columns,
        "run": {"max_parallel": slots, "row_group_size": 20, **run},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return path


def flaky_pipeline(tmp_path: Path, url: str, rows: int, name: str = "pipeline", **run: object) -> Path:
    """`rows` rows x two dependent llm columns, a python column that fails on every 17th row, a template."""
    (tmp_path / "flaky.py").write_text(FLAKY)
    columns = [
        *TWO_LLM_COLUMNS,
        {"name": "n", "kind": "python", "function": "flaky:check", "depends_on": ["a"], "retries": 0},
        {"name": "t", "kind": "template", "template": "{{ id }}:{{ n }}"},
    ]
    return _write_pipeline(tmp_path, url, rows, columns, run, name, SLOTS)


def llm_pipeline(tmp_path: Path, url: str, rows: int = 300, slots: int = SLOTS) -> Path:
    """`rows` rows x two dependent llm columns on `--workers 2`, `slots` execution slots, groups of 20 rows."""
    return _write_pipeline(tmp_path, url, rows, TWO_LLM_COLUMNS, {"workers": 2}, "pipeline", slots)


def sorted_output(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "output.parquet").sort_values("id").reset_index(drop=True)


def wait_until_settled(events) -> None:
    """After a pause: until two progress events in a row on `events` (a controller's subscription) count
    nothing running in any worker."""
    settled = 0
    while settled < 2:
        payload = events.get(timeout=60).payload
        if isinstance(payload, Progress):
            settled = settled + 1 if not payload.cells.get("running") else 0


def wait_for_done_cells(controller, done: int) -> None:
    """Until a progress event counts at least `done` cells done."""
    events = controller.subscribe()
    while True:
        payload = events.get(timeout=60).payload
        if isinstance(payload, Progress) and payload.cells.get("done", 0) >= done:
            return
