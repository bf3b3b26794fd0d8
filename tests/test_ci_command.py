"""CI runs exactly the README's test command, and that command installs the Ray extra, so the Ray tests
run in CI; a plain `pip install treadle` does not pull Ray in."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    [command] = [line for line in lines if line.startswith("python3 -m venv") and "pytest" in line]
    return command


def test_ci_runs_the_readmes_test_command():
    assert _readme_test_command() in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_test_command_installs_ray_and_a_plain_install_does_not():
    assert "-e '.[test,ray]'" in _readme_test_command()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert [re.split(r"[<>=\[ ]", d)[0] for d in extras["ray"]] == ["ray"]
    assert not [d for d in project["dependencies"] + extras["test"] if re.match(r"ray\b", d)]
