"""`treadle report` (console and HTML) on what summary.json holds: the response-cache line in both, a
summary.json from before some keys existed (or made by hand), and one whose values have the wrong types."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from treadle.engine.analysis.metrics import measure_run
from treadle.engine.analysis.run_dir import load_summary
from treadle.engine.errors import ConfigError
from treadle.engine.trace_schema import SCHEMA
from treadle.report import print_report, write_html_report

FIXED_RUN = Path(__file__).parent / "data" / "fixed_run"
CACHE = {
    "enabled": True,
    "path": "/tmp/cache.sqlite",
    "mode": "use",
    "hits": 1234,
    "misses": 56,
    "stored": 56,
    "hit_rate": 0.9566,
    "tokens_saved": {"m": {"prompt": 1000, "completion": 250}},
    "cost_saved": 0.0012,
}
CACHE_LINE = "response cache: 1,234 hits, 56 misses (96%), 1,250 tokens saved, cost saved 0.0012"


def run_dir_with(tmp_path: Path, summary: dict) -> Path:
    """The fixed run (tests/data/fixed_run) with `summary` as its summary.json."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records = [json.loads(line) for line in (FIXED_RUN / "trace.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(records, SCHEMA), run_dir / "trace.parquet")
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run_dir


def reports(run_dir: Path, tmp_path: Path) -> tuple[str, str]:
    """The console report's text and the HTML report of a run directory."""
    console = Console(record=True, width=160, color_system=None, file=io.StringIO())
    print_report(run_dir, console)
    write_html_report(run_dir, tmp_path / "r.html")
    return console.export_text(), (tmp_path / "r.html").read_text()


def fixed_summary() -> dict:
    return json.loads((FIXED_RUN / "summary.json").read_text())


def test_both_reports_show_the_response_cache_line(tmp_path):
    text, page = reports(run_dir_with(tmp_path, {**fixed_summary(), "cache": CACHE}), tmp_path)
    assert CACHE_LINE in text
    assert f"<p>{CACHE_LINE}</p>" in page


def test_no_cache_line_for_a_run_without_the_cache_or_with_it_off(tmp_path):
    for cache in (None, {"enabled": False}):
        summary = fixed_summary() if cache is None else {**fixed_summary(), "cache": cache}
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        text, page = reports(run_dir_with(tmp_path, summary), tmp_path)
        assert "response cache" not in text and "response cache" not in page


def test_a_summary_json_missing_keys_reads_as_unknown_and_keeps_keys_it_does_not_know(tmp_path):
    run_dir = run_dir_with(tmp_path, {"wall_s": 1.5, "accuracy": {"rate": 0.5}})
    summary = load_summary(run_dir)
    assert summary is not None
    assert (summary.name, summary.status, summary.rows, summary.limits, summary.rate_limits) == (
        None, "unknown", None, {}, {}
    )  # fmt: skip
    assert summary.to_json()["accuracy"] == {"rate": 0.5}  # the demo's addition survives a round trip
    m = measure_run(run_dir)
    assert (m.status, m.rows, m.concurrency.slot_limit) == ("unknown", None, None)
    text, page = reports(run_dir, tmp_path)
    assert "run: unknown in " in text and "rows not recorded" in text
    assert "Rate limits per model" not in text and "Rate limits per model" not in page


def test_a_summary_json_with_values_of_the_wrong_type_names_each_key(tmp_path):
    run_dir = run_dir_with(tmp_path, {**fixed_summary(), "wall_s": "soon", "rows": {"total": "many"}})
    with pytest.raises(ConfigError) as raised:
        load_summary(run_dir)
    keys = {problem.key for problem in raised.value.problems}
    assert {"wall_s", "rows.total"} <= keys
    (run_dir / "summary.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        measure_run(run_dir)
