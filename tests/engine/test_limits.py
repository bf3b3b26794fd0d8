"""Limits a person types, drags or scripts: checked before use, and costing only the work that exists."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import treadle
from treadle.cli import main
from treadle.engine.limits import LIMIT_MAX

DATA = Path(__file__).parents[1] / "data"
HELLO = Path(__file__).parents[2] / "examples" / "hello" / "pipeline.yaml"


def test_nonsense_limits_and_base_urls_in_the_file_are_one_line_each_naming_the_key(capsys):
    code = main(["validate", str(DATA / "pipelines" / "bad_limits" / "pipeline.yaml")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    expected = {
        "models.ftp.base_url: must be an http:// or https:// URL, got 'ftp://x'",
        "models.ftp.max_parallel: should be greater than or equal to 1 (got a number 0)",
        "models.hostless.base_url: must name a host, got 'http://'",
        "models.hostless.max_parallel: should be a whole number (got a number 64.5)",
        f"run.max_parallel: should be less than or equal to {LIMIT_MAX} (got a number 10000000000)",
        "run.row_groups_in_flight: should be greater than or equal to 1 (got a number -1)",
        "run.row_group_size: should be a whole number (got a boolean True)",
        "run.python_threads: should be less than or equal to 4096 (got a number 5000)",
    }
    assert {line.removeprefix("treadle: error: pipeline.yaml: ") for line in lines} == expected


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("0", "at least 1"),
        ("-3", "at least 1"),
        ("2.5", "whole number"),
        ("true", "whole number"),
        (str(LIMIT_MAX + 1), "at most"),
    ],
)
def test_nonsense_max_parallel_on_the_command_line_is_refused(value, said, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(HELLO), "--no-ui", "--max-parallel", value, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--max-parallel" in err and said in err
    assert not (tmp_path / "r").exists()


def test_set_limit_refuses_nonsense_and_the_run_keeps_its_limit(tmp_path, probe):
    probe.close_gate()
    controller = treadle.start(_gated_pipeline(tmp_path), base_dir=DATA / "probe", out=tmp_path / "run", max_parallel=4)
    try:
        probe.wait_for(lambda p: p.running == 4)
        for bad in (0, -1, LIMIT_MAX + 1, 2.5, True, "8"):
            with pytest.raises(ValueError, match="'slots' must be"):
                controller.set_limit("slots", bad)  # type: ignore[arg-type]
        assert controller.limits()["slots"] == 4
        controller.set_limit("slots", LIMIT_MAX)
        assert controller.limits()["slots"] == LIMIT_MAX
    finally:
        probe.open_gate()
    result = controller.wait()
    assert result is not None and result.status == "done"


def _gated_pipeline(tmp_path: Path) -> dict:
    seed = tmp_path / "seed.csv"
    seed.write_text("id\n" + "".join(f"{i}\n" for i in range(40)))
    return {
        "seed": {"path": str(seed)},
        "columns": [{"name": "a", "kind": "python", "function": "probe_cols:gated"}],
    }


_PEAK_RSS = textwrap.dedent(
    """
    import json, resource, sys
    import treadle
    result = treadle.run(sys.argv[1], out=sys.argv[2], max_parallel=int(sys.argv[3]))
    print(json.dumps({"status": result.status, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


def _at_most_2_gib_of_data() -> None:
    # A regression fails fast with MemoryError instead of filling the machine.
    resource.setrlimit(resource.RLIMIT_DATA, (2 * 1024**3, 2 * 1024**3))


def _peak_rss_kb(pipeline: Path, out: Path, max_parallel: int) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(pipeline), str(out), str(max_parallel)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pipeline.parent,
        preexec_fn=_at_most_2_gib_of_data,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["status"] == "done"
    return answer["rss_kb"]


def test_a_huge_max_parallel_costs_no_more_memory_than_a_small_one(tmp_path):
    # Workers exist for work that exists: 100,000,000 slots over 1,000 rows used to build 100M workers
    # (the kernel killed the process at 24 GB).
    seed = tmp_path / "people.csv"
    seed.write_text("name\n" + "".join(f"person {i}\n" for i in range(1000)))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "seed: {path: people.csv}\n"
        "columns:\n"
        '  - {name: greeting, kind: template, template: "Hello {{ name }}"}\n'
        '  - {name: shout, kind: template, template: "{{ greeting | upper }}"}\n'
    )
    small = _peak_rss_kb(pipeline, tmp_path / "small", 64)
    huge = _peak_rss_kb(pipeline, tmp_path / "huge", 100_000_000)
    assert huge - small < 50 * 1024, (small, huge)
