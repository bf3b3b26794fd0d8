"""`treadle run --no-cache/--refresh-cache` and `treadle cache info | clear`, through the command line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd

from treadle.cli import build_parser, main
from treadle.engine.response_cache import ResponseCache, default_cache_path
from treadle.sim import SimulatorThread


def treadle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "treadle.cli", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def write_pipeline(tmp_path: Path, url: str) -> Path:
    pd.DataFrame({"q": ["a", "b", "c"]}).to_csv(tmp_path / "seed.csv", index=False)
    path = tmp_path / "p.yaml"
    path.write_text(
        json.dumps(
            {
                "seed": {"path": "seed.csv"},
                "models": {"m": {"model": "sim", "base_url": url}},
                "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"}],
            }
        )
    )
    return path


def requests_sent(url: str) -> list[dict]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/requests") as answer:
        return json.load(answer)["requests"]


def cache_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["cache"]


def test_run_flags_and_cache_info_and_clear(tmp_path):
    with SimulatorThread() as url:
        pipeline = write_pipeline(tmp_path, url)
        for name, flags in (("one", []), ("two", []), ("off", ["--no-cache"]), ("fresh", ["--refresh-cache"])):
            assert main(["run", str(pipeline), "--no-ui", "--out", str(tmp_path / name), *flags]) == 0
    assert cache_summary(tmp_path / "one")["misses"] == 3
    assert cache_summary(tmp_path / "two")["hits"] == 3
    assert cache_summary(tmp_path / "off") == {"enabled": False}
    assert (cache_summary(tmp_path / "fresh")["hits"], cache_summary(tmp_path / "fresh")["stored"]) == (0, 3)

    info = treadle("cache", "info")
    assert info.returncode == 0, info.stderr
    assert f"path: {default_cache_path()}" in info.stdout
    assert "entries: 3" in info.stdout
    assert "3 hits, 0 misses (hit rate 100%)" in info.stdout

    report = treadle("report", str(tmp_path / "two"))
    assert "response cache: 3 hits, 0 misses (100%)" in report.stdout, report.stderr

    kept = treadle("cache", "clear", "--older-than", "1")
    assert kept.returncode == 0 and "deleted 0 cached answers made more than 1 days ago" in kept.stdout
    cleared = treadle("cache", "clear")
    assert cleared.returncode == 0 and "deleted 3 cached answers" in cleared.stdout
    assert "entries: 0" in treadle("cache", "info").stdout


def test_clear_older_than_keeps_newer_answers(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put("old", {"content": "x", "usage": None, "reasoning": None})
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET created = ?", (time.time() - 10 * 86400,))
    cache = ResponseCache(path)
    cache.put("new", {"content": "y", "usage": None, "reasoning": None})
    cache.close()
    proc = treadle("cache", "clear", "--older-than", "5", "--path", str(path))
    assert "deleted 1 cached answers" in proc.stdout, proc.stderr
    assert "entries: 1" in treadle("cache", "info", "--path", str(path)).stdout


def test_no_cache_and_refresh_cache_exclude_each_other(tmp_path):
    proc = treadle("run", str(tmp_path / "p.yaml"), "--no-cache", "--refresh-cache")
    assert proc.returncode == 2
    assert "not allowed with argument" in proc.stderr


def test_a_file_that_is_not_a_cache_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 200)
    proc = treadle("cache", "info", "--path", str(bad))
    assert proc.returncode == 2
    assert "is not a usable response cache" in proc.stderr and "Traceback" not in proc.stderr


def test_a_corrupt_cache_is_one_warning_line_and_the_run_loses_nothing(tmp_path):
    cache = default_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"garbage" * 200)
    with SimulatorThread() as url:
        proc = treadle("run", str(write_pipeline(tmp_path, url)), "--no-ui", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "response cache" in line]
    assert lines == [
        f"warning: response cache {cache} is not usable (file is not a database); the run goes on without it"
    ]
    assert "Traceback" not in proc.stderr
    assert pd.read_parquet(tmp_path / "run" / "output.parquet")["a"].notna().sum() == 3
    assert cache_summary(tmp_path / "run")["enabled"] is False


def test_resume_takes_no_cache_and_refresh_cache(tmp_path):
    with SimulatorThread() as url:
        pipeline = write_pipeline(tmp_path, url)
        run_dir = str(tmp_path / "run")
        assert main(["run", str(pipeline), "--no-ui", "--out", run_dir]) == 0  # in this process: quicker
        sent = []
        for flags in ([], ["--no-cache"], ["--refresh-cache"], []):
            before = len(requests_sent(url))
            assert main(["resume", run_dir, "--recompute", "a", "--no-ui", *flags]) == 0
            sent.append(len(requests_sent(url)) - before)
            assert cache_summary(tmp_path / "run").get("mode", "off") == (
                "off" if "--no-cache" in flags else "refresh" if "--refresh-cache" in flags else "use"
            )
    assert sent == [0, 3, 3, 0]


def test_run_demo_and_resume_take_the_cache_flags():
    parser = build_parser()
    for command in (["run", "p.yaml"], ["demo"], ["resume", "runs/x"]):
        assert parser.parse_args([*command, "--no-cache"]).no_cache
        assert parser.parse_args([*command, "--refresh-cache"]).refresh_cache
