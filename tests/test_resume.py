"""Durability: a killed run resumes without requesting a finished cell again; resume's refusals.

Only the killed run needs a process of its own; the other commands go through the same entry point
in this process (`treadle.cli.main`), which saves a start-up of ~1 s each."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.cli import main
from treadle.engine.journal import replay

DATA = Path(__file__).parent / "data"
COUNTED = DATA / "cli" / "counted"


def treadle_main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """`treadle <args>` in this process: its exit code and what it printed."""
    code = main(list(args))
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, printed.out, printed.err)


def calls(path: Path) -> Counter:
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


@pytest.fixture
def counted(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A copy of the counted pipeline, and its calls log (in tmp_path, named in the environment of
    this process and of the processes it starts)."""
    folder = tmp_path / "pipeline"
    shutil.copytree(COUNTED, folder)
    monkeypatch.setenv("TREADLE_TEST_CALLS", str(tmp_path / "calls.log"))
    return folder / "pipeline.yaml", tmp_path / "calls.log"


def journal_cells(run_dir: Path) -> set[str]:
    done = replay(run_dir / "journal.jsonl").done
    return {f"{column},{row}" for row, columns in done.items() for column in columns}


def kill_mid_run(pipeline: Path, run_dir: Path) -> None:
    """Run the pipeline in a process of its own and kill it (SIGKILL) at its first progress event."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(run_dir), "--events", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    progress = 0
    for line in proc.stdout:
        if json.loads(line)["type"] == "progress":
            progress += 1
            if progress == 1:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def test_sigkill_then_resume_finishes_without_requesting_finished_cells_again(tmp_path, counted, capsys):
    pipeline, calls_log = counted
    run_dir = tmp_path / "run"
    kill_mid_run(pipeline, run_dir)
    before = calls(calls_log)
    journaled = journal_cells(run_dir)
    assert 0 < len(journaled) < 1800, "the kill should land mid-run (600 rows x 3 columns)"

    resumed = treadle_main(capsys, "resume", str(run_dir), "--no-ui")
    assert resumed.returncode == 0, resumed.stderr

    after = calls(calls_log)
    # A cell the journal recorded as finished was never requested again.
    for cell in journaled:
        if not cell.startswith("label,"):  # the template column logs no calls
            assert after[cell] == 1, cell
    # Only cells in flight at the kill ran twice: at most the 8 execution slots.
    assert sum(after.values()) <= 1200 + 8
    assert sum(after.values()) - sum(before.values()) == 1200 - sum(1 for c in before if c in journaled)
    assert max(after.values()) <= 2

    output = pd.read_parquet(run_dir / "output.parquet")
    expected = pd.DataFrame({"id": range(600)})
    expected["double"] = expected["id"] * 2
    expected["square"] = expected["double"] ** 2
    expected["label"] = expected["id"].astype(str) + ":" + expected["square"].astype(str)
    pd.testing.assert_frame_equal(output, expected, check_dtype=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["rows"]["done"] == 600


def test_sigkill_mid_batch_run_then_resume_calls_no_finished_or_filtered_row_again(tmp_path, counted, capsys):
    """A batch column's calls and a batch filter's dropped rows are journaled as one line per call."""
    pipeline, calls_log = counted
    run_dir = tmp_path / "run"
    kill_mid_run(pipeline.with_name("batch.yaml"), run_dir)
    journaled = journal_cells(run_dir)
    filtered = replay(run_dir / "journal.jsonl").dropped
    assert 0 < sum(cell.startswith("double,") for cell in journaled) < 600, "the kill should land mid-run"
    assert filtered, "the filter dropped rows before the kill"

    resumed = treadle_main(capsys, "resume", str(run_dir), "--no-ui")
    assert resumed.returncode == 0, resumed.stderr

    after = calls(calls_log)
    for cell in journaled:
        assert after[cell] == 1, cell
    for row in filtered:
        assert after[f"even,{row}"] == 1, row
    assert max(after.values()) <= 2, "only the calls in flight at the kill ran twice"
    output = pd.read_parquet(run_dir / "output.parquet")
    assert output["id"].tolist() == list(range(0, 600, 2))
    assert output["double"].tolist() == [i * 2 for i in range(0, 600, 2)]


def test_resume_reruns_only_failed_cells(tmp_path, probe):
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(20)}).to_csv(seed, index=False)
    config = {
        "seed": {"path": str(seed)},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky"},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
        "run": {"row_group_size": 5},
    }
    probe_dir = DATA / "probe"
    probe.failing_rows = {4, 11}
    first = treadle.run(config, base_dir=probe_dir, out=tmp_path / "run")
    assert first.status == "failed" and len(first.failures) == 2
    probe.failing_rows = set()
    probe.starts.clear()
    second = treadle.resume(tmp_path / "run", pipeline=config, base_dir=probe_dir)
    assert second.status == "done"
    assert set(probe.starts) == {("flaky", 4), ("flaky", 11)}
    assert second.output["b"].tolist() == [f"{i + 1}!" for i in range(20)]
    assert second.failures == []
    reread = treadle.RunResult.load(tmp_path / "run")
    assert reread.status == "done" and reread.output.equals(second.output)


def test_resume_refuses_a_changed_pipeline_unless_told_what_to_recompute(tmp_path, counted, capsys):
    pipeline, calls_log = counted
    run_dir = tmp_path / "run"
    assert treadle_main(capsys, "run", str(pipeline), "--no-ui", "--rows", "40", "--out", str(run_dir)).returncode == 0
    pipeline.write_text(pipeline.read_text().replace('"{{ id }}:{{ square }}"', '"{{ id }}={{ square }}"'))
    refused = treadle_main(capsys, "resume", str(run_dir), "--no-ui")
    assert refused.returncode == 2
    assert "changed since this run started" in refused.stderr and "Traceback" not in refused.stderr
    unknown = treadle_main(capsys, "resume", str(run_dir), "--no-ui", "--recompute", "nope")
    assert unknown.returncode == 2 and "no column named nope" in unknown.stderr

    before = calls(calls_log)
    redone = treadle_main(capsys, "resume", str(run_dir), "--no-ui", "--recompute", "label")
    assert redone.returncode == 0, redone.stderr
    assert calls(calls_log) == before, "only the template column was redone"
    output = pd.read_parquet(run_dir / "output.parquet")
    assert output["label"].tolist() == [f"{i}={(2 * i) ** 2}" for i in range(40)]


def test_a_run_directory_is_never_overwritten_and_resume_needs_one(tmp_path, counted, capsys):
    pipeline, _ = counted
    run_dir = tmp_path / "run"
    assert treadle_main(capsys, "run", str(pipeline), "--no-ui", "--rows", "10", "--out", str(run_dir)).returncode == 0
    again = treadle_main(capsys, "run", str(pipeline), "--no-ui", "--rows", "10", "--out", str(run_dir))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    missing = treadle_main(capsys, "resume", str(tmp_path / "nowhere"), "--no-ui")
    assert missing.returncode == 2 and "no such run directory" in missing.stderr
    (tmp_path / "plain").mkdir()
    plain = treadle_main(capsys, "resume", str(tmp_path / "plain"), "--no-ui")
    assert plain.returncode == 2 and "not a treadle run directory" in plain.stderr


def test_a_finished_run_stopped_while_deleting_its_group_files_resumes_without_requesting_a_cell(
    tmp_path, counted, capsys
):
    """Once output.parquet and cells.parquet are written, groups/ and the journal are deleted; a
    directory in groups/ makes that deletion stop before groups/ is gone, as a kill at that point would."""
    pipeline, calls_log = counted
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(run_dir), "--events", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # run started: groups/ exists
    (run_dir / "groups" / "rg-000000.a-directory").mkdir()  # unlink() refuses a directory
    proc.stdout.read()
    assert proc.wait(60) == 0
    assert (run_dir / "cells.parquet").exists() and not (run_dir / "journal.jsonl").exists()
    assert (run_dir / "groups").is_dir(), "the deletion stopped before groups/ was gone"
    before = calls(calls_log)
    assert sum(before.values()) == 1200

    recomputed = treadle_main(capsys, "resume", str(run_dir), "--no-ui", "--recompute", "label")
    assert recomputed.returncode == 0, recomputed.stderr
    again = treadle_main(capsys, "resume", str(run_dir), "--no-ui")
    assert again.returncode == 0, again.stderr

    assert calls(calls_log) == before, "no finished cell was requested again"
    output = pd.read_parquet(run_dir / "output.parquet")
    assert output["label"].tolist() == [f"{i}:{(2 * i) ** 2}" for i in range(600)]
    assert (run_dir / "cells.parquet").exists() and not (run_dir / "journal.jsonl").exists()
