"""API keys never reach the run directory, events, traces, logs or the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from treadle.sim import SimConfig, SimulatorThread

KEY = "sk-treadle-test-9f8e7d6c5b4a39281706"
FRAGILE = Path(__file__).parent / "data" / "reliability"


def run_cli(pipeline: Path, run_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(run_dir),
         "--events", str(run_dir.parent / f"{run_dir.name}-events.jsonl")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def decoded(path: Path) -> str:
    """A file's content as text: a Parquet file's values (compressed, its bytes would hide a key), others as written."""
    if path.suffix == ".parquet":
        return str(pq.read_table(path).to_pylist())
    return path.read_bytes().decode("utf-8", "replace")


def test_the_key_appears_in_no_file_event_or_output(tmp_path):
    pd.DataFrame({"id": range(30), "q": [f"q{i}" for i in range(30)]}).to_csv(tmp_path / "seed.csv", index=False)
    (tmp_path / "leaky.py").write_text((FRAGILE / "leaky.py").read_text())
    env = {**os.environ, "TREADLE_TEST_KEY": KEY, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # grepped below
    outputs = []
    faulty = SimConfig(api_key=KEY, fail_rate=0.2, malformed_rate=0.1, seed=4)
    with SimulatorThread(faulty) as url, SimulatorThread(SimConfig(api_key="another-key-entirely")) as refusing:
        for name, base_url in (("faulty", url), ("refusing", refusing)):
            pipeline = tmp_path / f"{name}.yaml"
            pipeline.write_text(
                json.dumps(
                    {
                        "seed": {"path": "seed.csv"},
                        "models": {"m": {"model": "sim", "base_url": base_url, "api_key_env": "TREADLE_TEST_KEY"}},
                        "columns": [
                            {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
                            {"name": "b", "kind": "python", "function": "leaky:leak", "depends_on": ["a"]},
                        ],
                        "run": {"retries": 1, "backoff_s": 0},
                    }
                )
            )
            proc = run_cli(pipeline, tmp_path / name, env)
            assert proc.returncode == 1, proc.stderr
            outputs += [proc.stdout, proc.stderr]
    refused = json.loads((tmp_path / "refusing" / "summary.json").read_text())
    assert "refused the API key" in refused["message"]
    leaked = json.loads((tmp_path / "faulty" / "failures.jsonl").read_text().splitlines()[0])
    assert leaked["message"].startswith("could not call with key ***")
    exported = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "trace", str(tmp_path / "faulty"), "--jsonl", str(tmp_path / "t.jsonl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".py" and p.name != "seed.csv"]
    names = {p.name for p in written}
    assert {"trace.parquet", "journal.jsonl", "output.parquet", "t.jsonl"} <= names
    assert "responses.sqlite" in names
    for path in written:
        assert KEY not in decoded(path), path
    for text in outputs:
        assert KEY not in text
