"""`treadle demo` end to end: a real process, the simulator over HTTP on 127.0.0.1, real files.

The first 48 joined rows, not all 198: they hold each outcome (correct, wrong, broken code, an
empty table) and are enough to run into the simulator's rate limit, so the run shows failures,
retries and the pace it learns in ~10 s instead of ~40 s. The response book's outcome for every
row is checked without the endpoint in tests/examples/test_tableqa_functions.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pandas as pd

from treadle.demo import DEMO_DIR

EXPECTED = json.loads((DEMO_DIR / "expected.json").read_text())
ROWS = 48
"""Row 47 (q048) is the first whose generated code is broken."""


def test_demo_runs_offline_and_its_accuracy_matches_the_response_book(tmp_path):
    run_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "demo", "--no-ui", "--rows", str(ROWS), "--out", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    first_rows = list(EXPECTED["outcomes"])[:ROWS]  # the joined rows, in seed order
    counts = Counter(EXPECTED["outcomes"][row] for row in first_rows)
    assert all(counts[outcome] for outcome in ("correct", "wrong", "broken", "empty_table")), counts
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["accuracy"] == {
        "rows": ROWS,
        "correct": counts["correct"],
        "wrong": counts["wrong"],
        "not_answered": counts["broken"] + counts["empty_table"],
        "rate": round(counts["correct"] / ROWS, 4),
    }
    assert f"accuracy: {counts['correct']}/{ROWS}" in proc.stdout
    assert (summary["join"]["matched"], summary["join"]["left_only"], summary["join"]["right_only"]) == (198, 2, 3)
    assert summary["rows"]["failed"] == counts["broken"] + counts["empty_table"]

    # The simulator's limit (300 requests a minute per model, no headers): the planner's first burst
    # is refused, treadle learns the pace from the 429s and retries what was refused.
    planner = summary["rate_limits"]["planner"]
    assert planner["rate_limited"] > 0 and planner["source"] == "learned" and planner["paced_rpm"] > 0
    assert planner["changes"] and all(change[3].startswith("429") for change in planner["changes"])
    assert summary["metrics"]["errors"]["retries"] >= planner["rate_limited"]

    output = pd.read_parquet(run_dir / "output.parquet")
    assert output["id"].tolist() == first_rows
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
