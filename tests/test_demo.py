"""`treadle demo` end to end: a real process, the simulator over HTTP on 127.0.0.1, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from treadle.demo import DEMO_DIR

EXPECTED = json.loads((DEMO_DIR / "expected.json").read_text())


def test_demo_runs_offline_and_its_accuracy_matches_the_response_book(tmp_path):
    run_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "demo", "--no-ui", "--out", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    counts = EXPECTED["counts"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["accuracy"] == {
        "rows": EXPECTED["joined_rows"],
        "correct": counts["correct"],
        "wrong": counts["wrong"],
        "not_answered": counts["broken"] + counts["empty_table"],
        "rate": round(counts["correct"] / EXPECTED["joined_rows"], 4),
    }
    assert f"accuracy: {counts['correct']}/{EXPECTED['joined_rows']}" in proc.stdout
    assert (summary["join"]["matched"], summary["join"]["left_only"], summary["join"]["right_only"]) == (198, 2, 3)
    assert summary["rows"]["failed"] == EXPECTED["failed_rows"]

    output = pd.read_parquet(run_dir / "output.parquet")
    outcome = output["id"].map(EXPECTED["outcomes"])
    assert output.loc[outcome == "correct", "correct"].eq(True).all()
    assert output.loc[outcome == "wrong", "correct"].eq(False).all()
    assert output.loc[outcome.isin(["broken", "empty_table"]), "correct"].isna().all()
    assert output.loc[outcome != "empty_table", "plan__usage"].map(lambda u: u["total_tokens"] > 0).all()

    failures = [json.loads(line) for line in (run_dir / "failures.jsonl").read_text().splitlines()]
    by_column = {column: [f for f in failures if f["column"] == column] for column in ("table_schema", "result")}
    assert len(by_column["table_schema"]) == counts["empty_table"]
    assert all("tables/empty.csv is empty" in f["message"] for f in by_column["table_schema"])
    assert len(by_column["result"]) == counts["broken"]
    assert all(f["message"].startswith("generated code") for f in by_column["result"])
