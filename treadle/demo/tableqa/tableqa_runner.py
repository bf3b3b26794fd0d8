"""Runs generated pandas code for the table-QA demo, always in a process of its own.

`tableqa.run_code` never executes generated code in the engine's process. It uses this file in one of two
ways:

* ``python -I tableqa_runner.py serve SOCKET``: a fork server. It imports pandas once (~0.35 s), listens
  on a Unix socket and forks one child per connection. The child reports its pid, reads one job, sets
  its memory limit, runs the code and writes one JSON result line. A job costs a fork plus the CSV read
  and the code (~15-20 ms measured) instead of a fresh interpreter. The server exits when its stdin
  (held by the parent) closes.
* ``python -I tableqa_runner.py run``: one job from stdin, one JSON result on stdout. A fresh
  interpreter per job (~0.5 s of start-up, almost all of it importing pandas); the fallback where fork
  or Unix sockets are missing.

A job is ``{"table": ABS_PATH, "display": "tables/x.csv", "code": "...", "memory_limit": BYTES,
"timeout_s": SECONDS}``. A result is ``{"ok": true, "result": VALUE}`` or ``{"ok": false, "stage":
"load"|"code"|"result", "error": "one line"}``. The code sees ``df`` (the table), ``pd`` and ``np`` and must
assign ``result``; the value is converted to plain JSON (numpy scalars to python, Series, Index and arrays
to lists, DataFrames to lists of records).

The separate process isolates the engine from crashes, runaway memory and endless loops of generated code;
it is not a security sandbox: the code runs with the user's permissions (files, network).

This module is also imported, without running anything, by tableqa.py (`load_table`, `to_jsonable`) and by
make_data.py (`execute` on its own reference code).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

MAX_RESULT_BYTES = 4 * 1024 * 1024
"""A result whose JSON is longer than this is refused (stage "result")."""

_MAX_ERROR_CHARS = 300


class TableError(Exception):
    """The table could not be loaded; the message is one line meant for a user."""


def one_line(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    """Collapse whitespace to single spaces and cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """`ClassName: message` on one line; any MemoryError subclass (numpy's too) is named MemoryError."""
    name = "MemoryError" if isinstance(exc, MemoryError) else type(exc).__name__
    message = one_line(str(exc))
    return f"{name}: {message}" if message else name


def load_table(path: str, display: str) -> pd.DataFrame:
    """Read a CSV table the way every part of the demo reads it; raise TableError with a one-line reason."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise TableError(f"{display} is empty: no columns to read") from None
    except FileNotFoundError:
        raise TableError(f"{display} does not exist") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise TableError(f"{display} could not be read: {describe_exception(exc)}") from None


def to_jsonable(value: Any) -> Any:
    """Turn a result into plain JSON values: NaN and NA become None, sets are sorted for determinism."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, pd.DataFrame):
        return [to_jsonable(record) for record in value.to_dict(orient="records")]
    if isinstance(value, pd.Series | pd.Index | np.ndarray | list | tuple):
        return [to_jsonable(item) for item in (value.tolist() if hasattr(value, "tolist") else value)]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(item) for item in value]
        return sorted(items, key=lambda item: (type(item).__name__, json.dumps(item, sort_keys=True)))
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return str(value)
    return str(value)


def execute(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one job in this process and return its result dict. Only ever called inside a runner process
    (and by make_data.py on its own reference code)."""
    try:
        df = load_table(job["table"], job.get("display", job["table"]))
    except TableError as exc:
        return {"ok": False, "stage": "load", "error": str(exc)}
    limit = job.get("memory_limit")
    if limit:
        _limit_memory(int(limit))
    namespace: dict[str, Any] = {"df": df, "pd": pd, "np": np, "__name__": "__generated__"}
    try:
        compiled = compile(job["code"], "<generated>", "exec")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compiled, namespace)
    except BaseException as exc:  # the code is untrusted: report anything, SystemExit included
        error = describe_exception(exc)
        if isinstance(exc, MemoryError) and limit:
            error += f" (memory limit {int(limit) // 2**20} MiB)"
        return {"ok": False, "stage": "code", "error": error}
    if "result" not in namespace:
        return {"ok": False, "stage": "code", "error": "the code did not assign `result`"}
    try:
        value = to_jsonable(namespace["result"])
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return {"ok": False, "stage": "result", "error": f"result is not JSON: {describe_exception(exc)}"}
    if len(text) > MAX_RESULT_BYTES:
        return {"ok": False, "stage": "result", "error": f"result too large ({len(text)} bytes of JSON)"}
    return {"ok": True, "result": value}


def _limit_memory(limit: int) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _encode(result: Mapping[str, Any]) -> bytes:
    return json.dumps(result, allow_nan=False).encode() + b"\n"


def _run_once() -> int:
    """`tableqa_runner.py run`: one job on stdin, one result line on stdout; the code's prints are dropped."""
    job = json.loads(sys.stdin.buffer.read())
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    result = execute(job)
    out.write(_encode(result))
    out.flush()
    return 0


def _warm_up() -> None:
    """Do once in the server what most jobs do, so pandas' lazy imports and caches are inherited by every
    child instead of repeated in each (halves the cost of a job: ~25 ms to ~13 ms measured)."""
    df = pd.read_csv(io.StringIO("a,b,c,d\n1,x,2024-01-01,True\n2,y,2024-02-01,False\n3,x,2024-03-01,True\n"))
    grouped = df.groupby("b")["a"]
    grouped.agg(["sum", "mean", "median", "count", "min", "max", "nunique"])
    grouped.mean().idxmax()
    df.nlargest(2, "a")
    df.sort_values("a", ascending=False).iloc[0]
    pd.to_datetime(df["c"]).dt.month.sum()
    df["b"].str.lower()
    df.loc[df["a"] > 1, "b"].unique().tolist()
    df[df["d"]]["a"].mean()
    df.describe()
    json.dumps(to_jsonable(df))


def _serve(socket_path: str) -> int:
    """`tableqa_runner.py serve SOCKET`: accept connections, fork a child per job, exit when stdin closes."""
    import gc
    import selectors
    import socket

    _warm_up()
    gc.freeze()  # children leave the server's objects alone: fewer pages copied on write
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))  # clean up on the way out
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(256)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin.buffer, selectors.EVENT_READ)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # nothing reads the server's stderr after start-up
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        while True:
            for key, _events in selector.select():
                if key.fileobj is listener:
                    conn, _addr = listener.accept()
                    try:
                        pid = os.fork()
                    except OSError:
                        conn.close()
                        continue
                    if pid == 0:
                        listener.close()
                        _child(conn)  # never returns
                    conn.close()
                elif not os.read(0, 4096):
                    return 0
    finally:
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(socket_path))
        if os.getpgrp() == os.getpid():  # started as a group leader (tableqa does): end jobs still running
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.killpg(os.getpid(), signal.SIGTERM)


def _child(conn: Any) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        conn.sendall(f"{os.getpid()}\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        job = json.loads(b"".join(chunks))
        # a backstop for an orphaned child; the parent kills it at its own deadline
        signal.alarm(int(job.get("timeout_s") or 10) + 5)
        conn.sendall(_encode(execute(job)))
        conn.close()
        code = 0
    finally:
        os._exit(code)


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        return _run_once()
    if argv[:1] == ["serve"] and len(argv) == 2:
        return _serve(argv[1])
    sys.stderr.write("usage: tableqa_runner.py run | tableqa_runner.py serve SOCKET\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
