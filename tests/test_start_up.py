"""A run's first moments: its directory is its own, and an interrupt during start-up ends it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import treadle

ROOT = Path(__file__).parents[1]


def test_runs_started_at_the_same_second_each_get_their_own_directory(tmp_path, monkeypatch):
    (tmp_path / "people.csv").write_text("name\nann\nbob\n")
    (tmp_path / "p.yaml").write_text(
        'seed: {path: people.csv}\ncolumns:\n  - {name: greeting, kind: template, template: "Hi {{ name }}"}\n'
    )
    monkeypatch.chdir(tmp_path)
    barrier = threading.Barrier(5)
    results: list[treadle.RunResult] = []

    def run() -> None:
        barrier.wait()
        results.append(treadle.run("p.yaml"))

    threads = [threading.Thread(target=run) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status for r in results] == ["done"] * 5
    run_dirs = {Path(r.run_dir).resolve() for r in results}
    assert len(run_dirs) == 5
    assert {d.parent for d in run_dirs} == {(tmp_path / "runs").resolve()}
    for run_dir in run_dirs:
        assert pd.read_parquet(run_dir / "output.parquet")["greeting"].tolist() == ["Hi ann", "Hi bob"]


def test_an_explicit_out_that_holds_a_run_is_still_refused(tmp_path):
    (tmp_path / "people.csv").write_text("name\nann\n")
    pipeline = {"seed": {"path": "people.csv"}, "columns": [{"name": "g", "kind": "template", "template": "x"}]}
    treadle.run(pipeline, base_dir=tmp_path, out=tmp_path / "r")
    with pytest.raises(treadle.ConfigError, match="already holds a run"):
        treadle.run(pipeline, base_dir=tmp_path, out=tmp_path / "r")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_while_a_large_seed_is_still_being_read_ends_the_run_within_a_second(sig, tmp_path):
    # The seed comes through a named pipe, so the test knows the run is still reading it when the
    # signal goes: the pipe holds 64 KiB, and each write returns only once the reader has taken most of it.
    seed = tmp_path / "seed.csv"
    os.mkfifo(seed)
    (tmp_path / "p.yaml").write_text(
        'seed: {path: seed.csv}\ncolumns:\n  - {name: greeting, kind: template, template: "Hi {{ name }}"}\n'
    )
    proc = subprocess.Popen(
        # SIGINT inherited as ignored, as a shell leaves it for a job it starts in the background
        ["sh", "-c", f'trap "" INT; exec {sys.executable} -m treadle.cli run p.yaml --no-ui --out run'],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows = "".join(f"person {i}\n" for i in range(100_000)).encode()
    with open(seed, "wb") as pipe:
        pipe.write(b"name\n" + rows)  # 1.3 MB read so far, and the seed goes on
        proc.send_signal(sig)
        signalled = time.monotonic()
        _, stderr = proc.communicate(timeout=10)
    assert time.monotonic() - signalled < 1.0
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "run").exists(), "nothing was started, so nothing was written"
