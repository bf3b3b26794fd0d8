"""The project's code rules fail the suite (and so CI) when broken.

- the import contracts in pyproject.toml's [tool.importlinter] (the engine knows no UI, the simulator stands
  alone, the TUI reaches the engine only through the controller and its types), checked by `lint-imports`;
- `ruff check` and `ruff format --check` (the [tool.ruff] settings in pyproject.toml).

The tools come from the test extras, in the same venv as the interpreter running the tests, and run from the
repository root, where pyproject.toml holds their settings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run_tool(name: str, *args: str) -> None:
    tool = BIN / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing: install the test extras (pip install -e '.[test]')")
    proc = subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    command = " ".join([name, *args])
    assert proc.returncode == 0, f"`{command}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"


def test_import_contracts_hold() -> None:
    # --no-cache: nothing written into the checkout, no cache shared between concurrent runs of the suite
    _run_tool("lint-imports", "--no-cache")


def test_ruff_check_is_clean() -> None:
    _run_tool("ruff", "check", "--no-cache", ".")


def test_ruff_format_is_clean() -> None:
    _run_tool("ruff", "format", "--check", "--no-cache", ".")
