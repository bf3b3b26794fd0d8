"""Python columns of the table-QA demo: describe a table, run generated pandas code, check an answer.

Each function takes the row (a mapping of seed fields and earlier columns) and returns the cell's value;
an exception with a one-line message fails the cell.

* `describe_table(row) -> str`: JSON like `df.info()` (columns, dtypes, non-null counts, rows) plus three
  sample rows of `tables/<file_name>`.
* `run_code(row) -> value` (async): runs `row["code"]["code"]` against the table in another process
  (see tableqa_runner.py) with a timeout and a memory limit, and returns the value the code assigned to
  `result`.
* `check_answer(row) -> bool`: compares `row["result"]` with the label's `answer`, by the label's `type`.

Cost of one `run_code` call (measured on 2 cores): with the fork server (Linux and macOS) a fork, the CSV
read and the code, ~15-20 ms wall one at a time and ~11-14 ms per call when calls overlap, after a one-off
~0.35 s start of the server; with `EXECUTION = "spawn"` a fresh `python -I` per call, ~0.5 s of CPU,
nearly all of it importing pandas.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
TABLES_DIR = HERE / "tables"
"""Where `file_name` is looked up; tests point it elsewhere."""
RUNNER = HERE / "tableqa_runner.py"

TIMEOUT_S = 10.0
"""Wall-clock limit of one run of generated code; the child is killed after it."""
MEMORY_LIMIT_BYTES = 1 << 30
"""RLIMIT_AS of the child that runs generated code (address space, pandas included: ~330 MB of it)."""
MAX_CONCURRENT = max(2, os.cpu_count() or 2)
"""Most runs of generated code at once, per event loop; more only queue for the CPU."""
EXECUTION: Literal["forkserver", "spawn"] = (
    "forkserver" if hasattr(os, "fork") and hasattr(socket, "AF_UNIX") else "spawn"
)
"""How a child is made: forked from a server that has pandas imported, or a fresh interpreter."""


def _load_runner() -> Any:
    name = "_tableqa_runner"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RUNNER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


runner = _load_runner()
"""Imported for its table loading and JSON conversion only; it executes nothing here."""


# ---------------------------------------------------------------------------------------------- tables


def _table_path(row: Mapping[str, Any]) -> tuple[Path, str]:
    name = row.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("the row has no file_name")
    root = TABLES_DIR.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"file_name {name!r} points outside tables/")
    display = f"tables/{name}"
    if not path.is_file():
        raise ValueError(f"{display} does not exist")
    return path, display


def describe_table(row: Mapping[str, Any]) -> str:
    """JSON describing `tables/<file_name>`: rows, columns with dtype and non-null count, 3 sample rows."""
    path, display = _table_path(row)
    stat = path.stat()
    return _describe(str(path), display, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _describe(path: str, display: str, _mtime_ns: int, _size: int) -> str:
    try:
        df = runner.load_table(path, display)
    except runner.TableError as exc:
        raise ValueError(str(exc)) from None
    info = {
        "table": display,
        "rows": len(df),
        "columns": [
            {"name": str(column), "dtype": str(df[column].dtype), "non_null": int(df[column].notna().sum())}
            for column in df.columns
        ],
        "sample_rows": runner.to_jsonable(df.head(3)),
    }
    return json.dumps(info, ensure_ascii=False)


# ------------------------------------------------------------------------------------------- run_code


async def run_code(
    row: Mapping[str, Any],
    *,
    timeout_s: float | None = None,
    memory_limit: int | None = None,
    execution: Literal["forkserver", "spawn"] | None = None,
) -> Any:
    """Run the generated code of `row["code"]` on `tables/<file_name>` in another process; return the JSON
    value it assigned to `result`. Raises RuntimeError("generated code failed: KeyError: 'price'"),
    RuntimeError("generated code timed out after 10 s") or ValueError for a table that cannot be read."""
    code = _extract_code(row.get("code"))
    path, display = _table_path(row)
    timeout = TIMEOUT_S if timeout_s is None else timeout_s
    job = {
        "table": str(path),
        "display": display,
        "code": code,
        "memory_limit": MEMORY_LIMIT_BYTES if memory_limit is None else memory_limit,
        "timeout_s": timeout,
    }
    mode = execution or EXECUTION
    async with _limiter():
        if mode == "forkserver":
            outcome = await _run_forkserver(job, timeout)
        else:
            outcome = await _run_spawn(job, timeout)
    if outcome.get("ok"):
        return outcome.get("result")
    stage, error = outcome.get("stage"), outcome.get("error", "unknown error")
    if stage == "load":
        raise ValueError(error)
    if stage == "result":
        raise RuntimeError(f"generated code returned an unusable result: {error}")
    raise RuntimeError(f"generated code failed: {error}")


def _extract_code(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('the code column must be JSON {"code": "..."}, got plain text') from None
    if not isinstance(value, Mapping) or not isinstance(value.get("code"), str):
        raise ValueError(f'the code column must be {{"code": "..."}}, got {type(value).__name__}')
    code = value["code"].strip()
    if code.startswith("```"):  # a fenced block inside the field: keep what is between the fences
        lines = code.splitlines()[1:]
        if lines and lines[-1].strip().startswith("```"):
            lines = lines[:-1]
        code = "\n".join(lines)
    if not code.strip():
        raise ValueError("the code column holds no code")
    return code


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_limiters_lock = threading.Lock()


def _limiter() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    with _limiters_lock:
        semaphore = _limiters.get(loop)
        if semaphore is None:
            semaphore = _limiters[loop] = asyncio.Semaphore(MAX_CONCURRENT)
    return semaphore


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"  # one thread each: less address space, safe to fork
    return env


def _timed_out(timeout: float) -> RuntimeError:
    return RuntimeError(f"generated code timed out after {timeout:g} s")


def _parse_outcome(data: bytes, detail: str) -> dict[str, Any]:
    try:
        outcome = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        outcome = None
    if not isinstance(outcome, dict):
        raise RuntimeError(f"generated code crashed: the runner ended without a result{detail}")
    return outcome


async def _run_spawn(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        str(RUNNER),
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(job).encode()), timeout)
    except TimeoutError:
        raise _timed_out(timeout) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    last = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
    detail = f" (exit code {proc.returncode}{': ' + runner.one_line(last[0]) if last else ''})"
    return _parse_outcome(out, detail)


class _ForkServer:
    """The runner's fork server, one per process, started on first use and stopped at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._path: str | None = None

    def address(self) -> str | None:
        proc, path = self._proc, self._path
        return path if proc is not None and proc.poll() is None else None

    def ensure(self) -> str:
        """Start the server unless it runs; blocks until it listens (~0.5 s). Call it off the loop."""
        with self._lock:
            path = self.address()
            if path is not None:
                return path
            self._stop_locked()
            directory = tempfile.mkdtemp(prefix="tableqa-runner-")
            path = os.path.join(directory, "runner.sock")
            proc = subprocess.Popen(
                [sys.executable, "-I", str(RUNNER), "serve", path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_child_env(),
                start_new_session=True,  # a Ctrl-C is the engine's to handle; the server ends on stdin EOF
            )
            assert proc.stdout is not None and proc.stderr is not None
            if proc.stdout.readline().strip() != b"ready":
                proc.kill()
                _out, err = proc.communicate()
                shutil.rmtree(directory, ignore_errors=True)
                last = err.decode(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"the code runner did not start: {last[0] if last else 'no message'}")
            proc.stdout.close()
            proc.stderr.close()
            self._proc, self._dir, self._path = proc, directory, path
            return path

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, directory = self._proc, self._dir
        self._proc = self._dir = self._path = None
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()  # the server exits on EOF
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


_SERVER = _ForkServer()
atexit.register(_SERVER.stop)


async def _connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for attempt in range(2):
        path = _SERVER.address() or await asyncio.to_thread(_SERVER.ensure)
        try:
            return await asyncio.open_unix_connection(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt:
                raise
            await asyncio.to_thread(_SERVER.stop)  # a dead or broken server: start a new one
    raise AssertionError("unreachable")


async def _run_forkserver(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    reader, writer = await _connect()
    pid: int | None = None
    finished = False
    try:
        async with asyncio.timeout(timeout):
            writer.write(json.dumps(job).encode())
            writer.write_eof()
            await writer.drain()
            line = await reader.readline()
            if line.strip().isdigit():
                pid = int(line)
            data = await reader.read()
        finished = True
    except TimeoutError:
        raise _timed_out(timeout) from None
    finally:
        if not finished and pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        writer.close()
    return _parse_outcome(data, "" if pid is not None else " (the runner did not start the job)")


# ---------------------------------------------------------------------------------------- check_answer


def check_answer(row: Mapping[str, Any]) -> bool:
    """Whether `row["result"]` answers the label `row["answer"]`, compared by `row["type"]`: numbers
    within rel 1e-6 / abs 1e-9 or equal at 2 decimals; strings trimmed, casefolded, spaces collapsed;
    booleans from true/yes/1; lists as sets of normalised elements. Labels may be JSON-encoded strings."""
    kind = row.get("type")
    got, expected = row.get("result"), row.get("answer")
    if kind == "number":
        a, b = _as_number(_unwrap(got)), _as_number(_unwrap(expected))
        return a is not None and b is not None and _numbers_close(a, b)
    if kind == "string":
        a, b = _unwrap(got), _unwrap(expected)
        return a is not None and b is not None and _norm_text(a) == _norm_text(b)
    if kind == "boolean":
        a, b = _as_bool(_unwrap(got)), _as_bool(_unwrap(expected))
        return a is not None and a == b
    if kind == "list":
        got_items, expected_items = _as_list(got), _as_list(expected)
        if got_items is None or expected_items is None:
            return False
        return {_norm_item(x) for x in got_items} == {_norm_item(x) for x in expected_items}
    raise ValueError(f"unknown answer type {kind!r}: expected number, string, boolean or list")


def _unwrap(value: Any) -> Any:
    """A one-element list or mapping stands for its element."""
    while isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, Mapping) and len(value) == 1:
        value = next(iter(value.values()))
    return value


def _numbers_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) or round(a, 2) == round(b, 2)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(",", "").removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        try:
            number = float(value)  # numpy scalars and the like
        except (TypeError, ValueError):
            return None
    return None if math.isnan(number) else number


def _norm_text(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


_TRUE = {"true", "yes", "y", "t", "1", "1.0"}
_FALSE = {"false", "no", "n", "f", "0", "0.0"}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = _norm_text(value) if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    if hasattr(value, "tolist"):
        converted = value.tolist()
        return converted if isinstance(converted, list) else [converted]
    return [value]


def _norm_item(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return ("bool", value)
    number = _as_number(value)
    if number is not None:
        return ("number", round(number, 6))
    if isinstance(value, str) or value is None:
        return ("text", _norm_text(value))
    return ("json", json.dumps(value, sort_keys=True, default=str))
