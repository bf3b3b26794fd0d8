"""treadle installed from its wheel, not editable: what the README says works after an install works there.

The wheel is built from a copy of the files the build reads (pyproject.toml, README.md, treadle/) in a temporary
folder: setuptools writes build/ and treadle.egg-info beside the sources it builds, so building in the checkout
would leave them in the tree (and race other runs of the suite). It is installed with --no-deps into a fresh venv
outside the checkout; the dependencies come from this venv's site-packages through a .pth file, so nothing is
downloaded, and treadle itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from treadle.demo import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ["pyproject.toml", "README.md"]


def _run(args: list[str | Path], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra_env)
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with treadle installed from a wheel of this checkout; returns the venv's folder."""
    tmp = tmp_path_factory.mktemp("install")
    src, dist, venv = tmp / "src", tmp / "dist", tmp / "venv"
    src.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "treadle", src / "treadle", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src], cwd=tmp)
    (wheel,) = dist.glob("treadle-*.whl")

    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    _run([*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
    ours = sysconfig.get_paths()
    # a path line only: this venv's own .pth files (the editable install's finder) are not processed there
    deps = dict.fromkeys([ours["purelib"], ours["platlib"]])
    (Path(purelib.stdout.strip()) / "_treadle_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return venv


def test_treadle_and_the_demo_files_come_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    code = "import treadle, treadle.demo as d; print(treadle.__file__); print(d.DEMO_DIR)"
    treadle_file, demo_dir = _run([venv / "bin" / "python", "-c", code], cwd=tmp_path).stdout.split()
    assert Path(treadle_file).is_relative_to(venv)
    installed = Path(demo_dir)
    assert installed.is_relative_to(venv)

    def files(folder: Path) -> set[str]:
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".pyc"}

    assert files(installed) == files(DEMO_DIR)


def test_demo_runs_from_an_install_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    proc = _run([venv / "bin" / "treadle", "demo", "--no-ui", "--rows", "20"], cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert re.search(r"^accuracy: \d+/20 = ", proc.stdout, re.MULTILINE), proc.stdout
    (summary_path,) = tmp_path.glob("runs/tableqa-*/summary.json")
    assert json.loads(summary_path.read_text())["accuracy"]["rows"] == 20


def test_the_demo_pipeline_validates_from_the_install_for_a_real_endpoint(venv: Path, tmp_path: Path) -> None:
    """The README's `treadle run` on the installed demo's pipeline.yaml: config, seed, join and functions load."""
    code = "import treadle.demo as d; print(d.DEMO_DIR / 'pipeline.yaml')"
    pipeline = _run([venv / "bin" / "python", "-c", code], cwd=tmp_path).stdout.strip()
    endpoint = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "unused"}
    proc = _run([venv / "bin" / "treadle", "validate", pipeline], cwd=tmp_path, **endpoint)
    assert "python (tableqa:run_code)" in proc.stdout


ORDER = """
import sys, sysconfig


def stdlib_first(row):
    paths = [p.rstrip("/") for p in sys.path]
    return paths.index(sysconfig.get_paths()["stdlib"]) < paths.index(sysconfig.get_paths()["purelib"])
"""


def test_workers_of_an_installed_treadle_find_the_standard_library_before_site_packages(
    venv: Path, tmp_path: Path
) -> None:
    """A worker's interpreter gets no PYTHONPATH for an installed treadle: site-packages put there would come
    before the standard library, where a package in it could hide a standard module."""
    (tmp_path / "order.py").write_text(ORDER)
    (tmp_path / "s.csv").write_text("q\n" + "".join(f"{i}\n" for i in range(40)))
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "first", "kind": "python", "function": "order:stdlib_first"}],
        "run": {"workers": 2, "row_group_size": 10},
    }
    (tmp_path / "pipeline.yaml").write_text(json.dumps(config))
    _run([venv / "bin" / "treadle", "run", "pipeline.yaml", "--no-ui", "--out", "run"], cwd=tmp_path)
    code = "import pandas as pd; print(pd.read_parquet('run/output.parquet')['first'].tolist())"
    assert _run([venv / "bin" / "python", "-c", code], cwd=tmp_path).stdout.strip() == str([True] * 40)
