"""The project's code rules fail the suite (and so CI) when broken.

- the import contracts in pyproject.toml's [tool.importlinter] (the engine knows no UI, the simulator stands
  alone, the TUI reaches the engine only through the controller and its types), checked by `lint-imports`;
- `ruff check` and `ruff format --check` (the [tool.ruff] settings in pyproject.toml);
- sizes: no module in treadle/ over 500 lines, no function (or method) over 80, read with `ast`;
- `mypy` over treadle/ with zero errors (the [tool.mypy] settings in pyproject.toml);
- no merge conflict marker left in a tracked text file.

The tools come from the test extras, in the same venv as the interpreter running the tests, and run from the
repository root, where pyproject.toml holds their settings.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGE = ROOT / "treadle"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


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


def test_mypy_finds_no_type_errors() -> None:
    # the files and settings are pyproject.toml's [tool.mypy]; no cache written into the checkout
    _run_tool("mypy", "--cache-dir", "/dev/null")


# ---- sizes ---------------------------------------------------------------------------------------


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, lines) of every function and method under `node`, nested ones too;
    a function's lines run from its `def` to its last line (decorators not counted)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            assert child.end_lineno is not None
            yield name, child.lineno, child.end_lineno - child.lineno + 1
            yield from _functions(child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def _modules() -> Iterator[tuple[str, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_no_module_is_over_500_lines() -> None:
    too_long = [f"{name}: {n:,} lines" for name, text in _modules() if (n := len(text.splitlines())) > MAX_MODULE_LINES]
    listing = "\n".join(too_long)
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them along their concerns):\n{listing}"


def test_no_function_is_over_80_lines() -> None:
    too_long = [
        f"{name}:{line} {function}: {n} lines"
        for name, text in _modules()
        for function, line, n in _functions(ast.parse(text, filename=name))
        if n > MAX_FUNCTION_LINES
    ]
    listing = "\n".join(too_long)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (break them into named steps):\n{listing}"


def test_function_lengths_run_from_def_to_the_last_line() -> None:
    source = (
        "class C:\n"
        "    @staticmethod\n"
        "    def m():\n"
        + "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
        + "\n\nasync def f():\n    def inner():\n        return 1\n    return inner\n"
    )
    found = {name: (line, n) for name, line, n in _functions(ast.parse(source))}
    assert found == {"C.m": (3, MAX_FUNCTION_LINES + 1), "f": (86, 4), "f.inner": (87, 2)}


CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")  # "=======" alone is also a Markdown heading underline


def test_no_file_keeps_a_merge_conflict_marker() -> None:
    # A merge resolved by hand once left its markers in docs/TRACING.md: ruff sees only Python files.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    marked = []
    for name in tracked.splitlines():
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg"} or not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        marked += [f"{name}:{i}" for i, line in enumerate(lines, 1) if line.startswith(CONFLICT_MARKERS)]
    assert not marked, f"merge conflict markers left in: {', '.join(marked)}"
