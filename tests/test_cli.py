"""The `treadle` command end to end, as a subprocess on real files: outputs, exit codes, events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from treadle.cli import main

ROOT = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"
HELLO = ROOT / "examples" / "hello" / "pipeline.yaml"
BAD_CASES = sorted(
    p.name for p in (DATA / "pipelines").iterdir() if (p / "pipeline.yaml").is_file() and p.name != "good"
)


def treadle(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TERM", "COLUMNS")}
    return subprocess.run(
        [sys.executable, "-m", "treadle.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
        **kwargs,
    )


def assert_clean_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("treadle: error: ") for line in lines), proc.stderr


def test_hello_runs_to_a_correct_output(tmp_path):
    proc = treadle("run", str(HELLO), "--no-ui", "--rows", "300", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout and "output.parquet" in proc.stdout
    output = pd.read_parquet(tmp_path / "run" / "output.parquet")
    assert len(output) == 300
    assert list(output.columns) == [
        "id", "name", "city", "age", "greeting", "initials", "age_group", "shout", "card",
    ]  # fmt: skip
    first = output.iloc[0]
    assert first["greeting"] == f"Hello {first['name']} from {first['city']}!"
    assert first["card"] == f"{first['initials']} ({first['age_group']}, {first['age']}): {first['shout']}"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "done"
    assert summary["rows"] == {"total": 300, "done": 300, "failed": 0, "dropped": 0, "unfinished": 0}
    assert summary["cells"]["done"] == 1200
    assert set(summary["columns"]) == {"greeting", "profile", "shout", "card"}


def test_failed_rows_exit_1_with_failures_written(tmp_path):
    proc = treadle("run", str(DATA / "cli" / "failing" / "pipeline.yaml"), "--no-ui", "--out", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stderr
    failures = [json.loads(line) for line in (tmp_path / "r" / "failures.jsonl").read_text().splitlines()]
    assert failures == [
        {
            "row": 2,
            "column": "length",
            "error_class": "ValueError",
            "message": "no words starting with g, got 'gamma'",
            "attempts": 1,
            "action": "fail",
        }
    ]
    output = pd.read_parquet(tmp_path / "r" / "output.parquet")
    assert output["label"].tolist()[:2] == ["alpha has 5 letters", "beta has 4 letters"]
    assert output["label"].isna().tolist() == [False, False, True, False, False]


@pytest.mark.parametrize("case", BAD_CASES)
def test_every_bad_pipeline_gets_clear_lines_and_exit_2(case, tmp_path, capsys):
    # In-process through the same entry point, to keep ~30 cases fast; the subprocess test below
    # covers the real process boundary.
    pipeline = str(DATA / "pipelines" / case / "pipeline.yaml")
    for args in (["validate", pipeline], ["run", pipeline, "--no-ui", "--out", str(tmp_path / "r")]):
        code = main(args)
        captured = capsys.readouterr()
        assert_clean_error(subprocess.CompletedProcess(args, code, captured.out, captured.err))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("case", ["cycle", "ragged_csv"])
def test_bad_pipeline_in_a_real_process(case, tmp_path):
    assert_clean_error(treadle("validate", str(DATA / "pipelines" / case / "pipeline.yaml")))
    run = treadle("run", str(DATA / "pipelines" / case / "pipeline.yaml"), "--no-ui", "--out", str(tmp_path / "r"))
    assert_clean_error(run)


def test_validate_prints_the_column_order():
    proc = treadle("validate", str(HELLO))
    assert proc.returncode == 0, proc.stderr
    order = [name for name in ("greeting", "profile", "shout", "card") if name in proc.stdout]
    assert order == ["greeting", "profile", "shout", "card"]
    positions = [proc.stdout.index(name) for name in order]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    "args",
    [
        ["run", str(HELLO), "--rows", "0"],
        ["run", str(HELLO), "--max-parallel", "many"],
        ["run", str(HELLO), "--bogus"],
        ["frobnicate"],
    ],
)
def test_bad_flags_get_one_line_and_exit_2(args):
    proc = treadle(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_non_empty_output_directory_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("mine")
    assert_clean_error(treadle("run", str(HELLO), "--no-ui", "--rows", "5", "--out", str(tmp_path / "r")))
    assert (tmp_path / "r" / "keep.txt").read_text() == "mine"


def test_events_file_has_the_documented_lifecycle(tmp_path):
    events_path = tmp_path / "events.jsonl"
    pipeline = DATA / "cli" / "failing" / "pipeline.yaml"
    proc = treadle("run", str(pipeline), "--no-ui", "--out", str(tmp_path / "r"), "--events", str(events_path))
    assert proc.returncode == 1
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert events[0]["rows"] == 5 and events[0]["columns"] == ["length", "label"]
    [failed] = [e for e in events if e["type"] == "cell_failed"]
    assert (failed["row"], failed["column"], failed["error_class"]) == (2, "length", "ValueError")
    assert events[-1]["status"] == "failed"
    assert all(isinstance(e["t"], float | int) for e in events)


def test_events_to_stdout_keep_stdout_pure_json(tmp_path):
    proc = treadle("run", str(HELLO), "--no-ui", "--rows", "20", "--out", str(tmp_path / "r"), "--events", "-")
    assert proc.returncode == 0, proc.stderr
    types = [json.loads(line)["type"] for line in proc.stdout.splitlines()]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert "output.parquet" in proc.stderr


def test_interrupt_stops_new_starts_writes_what_is_done_and_exits_130(tmp_path):
    pipeline = DATA / "cli" / "slow" / "pipeline.yaml"
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "treadle.cli",
            "run",
            str(pipeline),
            "--no-ui",
            "--out",
            str(run_dir),
            "--events",
            "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "progress":
            break
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert json.loads(rest.splitlines()[-1])["status"] == "interrupted"
    assert f"resume:   treadle resume {run_dir}" in stderr  # how to go on, after where its files are
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 0 < summary["cells"]["done"] < 3000
    output = pd.read_parquet(run_dir / "output.parquet")
    assert output["waited"].notna().sum() == summary["cells"]["done"]


def test_headless_path_never_imports_textual_and_engine_never_imports_rich(tmp_path):
    code = (
        "import sys\n"
        "import treadle.engine.controller, treadle.engine.run, treadle.api\n"
        "assert 'rich' not in sys.modules, 'the engine imported rich'\n"
        "from treadle.cli import main\n"
        f"code = main(['run', {str(HELLO)!r}, '--no-ui', '--rows', '20', '--out', {str(tmp_path / 'r')!r}])\n"
        "assert code == 0, code\n"
        "assert 'textual' not in sys.modules, 'the headless path imported textual'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_trace_and_report_commands_read_a_finished_run(tmp_path):
    run_dir = tmp_path / "r"
    assert treadle("run", str(HELLO), "--no-ui", "--rows", "50", "--out", str(run_dir)).returncode == 0
    exported = treadle("trace", str(run_dir), "--chrome", str(tmp_path / "trace.json"))
    assert exported.returncode == 0, exported.stderr
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert len([e for e in events if e.get("cat") == "attempt"]) == 200
    report = treadle("report", str(run_dir), "--html", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    assert "Where did the time go" in report.stdout and "<svg" in (tmp_path / "report.html").read_text()
    missing = treadle("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_an_interrupt_right_after_the_serve_address_stops_the_run(tmp_path):
    """A watcher may stop the run as soon as it has the address, even in a process that started with
    SIGINT ignored (what a shell does to jobs it starts in the background)."""
    pipeline = DATA / "cli" / "slow" / "pipeline.yaml"
    command = [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(tmp_path / "r"),
               "--serve", "0"]  # fmt: skip
    proc = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    next(line for line in proc.stderr if line.startswith("live progress:"))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rows"]["done"] < 3000


def test_serve_shows_live_progress_over_http(tmp_path):
    import urllib.request

    pipeline = DATA / "cli" / "slow" / "pipeline.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(tmp_path / "r"),
         "--serve", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    url = next(line.split()[-1] for line in proc.stderr if line.startswith("live progress:"))
    with urllib.request.urlopen(f"{url}snapshot", timeout=10) as response:
        snapshot = json.loads(response.read())
    assert snapshot["rows"] == 3000 and snapshot["status"] in ("running", "starting")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    refused = treadle("run", str(pipeline), "--no-ui", "--out", str(tmp_path / "x"), "--serve", "0",
                      "--serve-host", "0.0.0.0")  # fmt: skip
    assert refused.returncode == 2 and "needs --serve-token-env" in refused.stderr
    assert not (tmp_path / "x").exists()
