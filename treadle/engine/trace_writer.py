"""A helper process that formats trace records into trace.jsonl, off the engine's core.

Formatting a JSON line costs ~2 us in Python; on the engine's writer thread it holds the GIL the
engine loop needs, which made tracing cost 20-40% of a run of cheap cells. For large runs the writer
thread instead sends batches of plain record tuples (one `marshal.dumps` each, a C call) down a pipe
to this process, which formats them on another core and appends them to trace.jsonl.

The pipe carries frames: a 4-byte little-endian length, then marshalled data. The first frame is
`(t0, columns, models)`; every other frame is `(seq of the first record, records)` (see `tracing._Raw`). At end of input
the process flushes and exits 0; it stops with 1 and one line on stderr if it cannot write. If the
engine dies, the pipe ends and everything received is written: traces are not lost with the engine.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import treadle

_LENGTH = struct.Struct("<I")


class TraceWriterProcess:
    """The engine's side: starts the helper, sends it batches, waits for it at the end."""

    def __init__(self, path: Path, t0: float, columns: Sequence[str], models: Sequence[str | None]) -> None:
        # The helper imports this package from wherever this process did (a source checkout, a venv).
        package_root = str(Path(treadle.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "treadle.engine.trace_writer", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._send(marshal.dumps((t0, list(columns), list(models))))

    def send(self, first_seq: int, raws: Sequence[tuple]) -> None:
        self._send(marshal.dumps((first_seq, list(raws))))

    def _send(self, data: bytes) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(_LENGTH.pack(len(data)))
            stdin.write(data)
            stdin.flush()
        except BrokenPipeError:
            raise self._failure() from None

    def close(self) -> None:
        """End the input and wait until every line is written; OSError if the helper could not write."""
        if self._process.returncode is None:
            _, said = self._process.communicate()  # closes its stdin, reads its stderr, waits
            if self._process.returncode != 0:
                raise self._error(said)

    def _failure(self) -> OSError:
        _, said = self._process.communicate()
        return self._error(said)

    def _error(self, said: bytes) -> OSError:
        lines = said.decode("utf-8", "replace").strip().splitlines()
        return OSError(lines[-1] if lines else f"the trace writer stopped (exit {self._process.returncode})")


def _frames(stream: BinaryIO):
    while True:
        head = stream.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        data = stream.read(length)
        if len(data) < length:  # the engine died mid-frame: keep what came whole
            return
        yield marshal.loads(data)


def main(path: str) -> int:
    from treadle.engine.tracing import format_lines

    with contextlib.suppress(OSError, AttributeError):  # background work: the engine comes first
        os.nice(10)

    frames = _frames(sys.stdin.buffer)
    header = next(frames, None)
    if header is None:
        return 0
    t0, columns, models = header
    try:
        with open(path, "a", encoding="utf-8") as handle:
            for first_seq, raws in frames:
                handle.write(format_lines(first_seq, raws, t0, columns, models))
                handle.flush()
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
