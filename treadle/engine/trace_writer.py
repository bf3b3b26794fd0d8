"""A helper process that formats trace records into trace.jsonl, off the engine's core.

Formatting a JSON line costs ~2 us in Python; on the engine's writer thread it holds the GIL the
engine loop needs, which made tracing cost 20-40% of a run of cheap cells. For large runs a thread of
the engine instead sends batches of plain record tuples (one `marshal.dumps` each, a C call) down a
pipe to this process, which holds them and formats them into trace.jsonl when the input ends, so the
work is done after the run's cells, not against them (and beyond HOLD_BYTES as it goes).

The pipe carries frames: a 4-byte little-endian length, then marshalled data. The first frame is
`(t0, columns, models)`; every other frame is `(seq of the first record, records)` (see
`tracing._Raw`). At end of input the process writes what it holds and exits 0; it stops with 1 and
one line on stderr if it cannot write. If the engine dies, the pipe ends and everything received is
written: traces are not lost with the engine.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

import treadle

_LENGTH = struct.Struct("<I")
HOLD_BYTES = 64 << 20
"""Records held before formatting (~1M attempts): bounds the helper's memory on very long runs."""


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

    def end_input(self) -> None:
        """No more batches: the helper formats what it holds (while the engine writes its other files)."""
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it stopped early: wait() tells why
                stdin.close()

    def wait(self) -> None:
        """Wait until every line is written; OSError if the helper could not write."""
        self.end_input()
        stderr = self._process.stderr
        assert stderr is not None
        if not stderr.closed:
            said = stderr.read()
            stderr.close()
            if self._process.wait() != 0:
                raise self._error(said)

    def _failure(self) -> OSError:
        _, said = self._process.communicate()
        return self._error(said)

    def _error(self, said: bytes) -> OSError:
        lines = said.decode("utf-8", "replace").strip().splitlines()
        return OSError(lines[-1] if lines else f"the trace writer stopped (exit {self._process.returncode})")


def _frames(stream: BinaryIO) -> Iterator[bytes]:
    """The frames' marshalled data, in order, until the input ends (or breaks off mid-frame)."""
    while True:
        head = stream.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        data = stream.read(length)
        if len(data) < length:  # the engine died mid-frame: keep what came whole
            return
        yield data


def main(path: str) -> int:
    from treadle.engine.tracing import format_lines

    frames = _frames(sys.stdin.buffer)
    header = next(frames, None)
    if header is None:
        return 0
    t0, columns, models = marshal.loads(header)
    held: list[bytes] = []
    held_bytes = 0

    def write_held(handle: TextIO) -> None:
        for data in held:
            first_seq, raws = marshal.loads(data)
            handle.write(format_lines(first_seq, raws, t0, columns, models))
        handle.flush()
        held.clear()

    try:
        with open(path, "a", encoding="utf-8") as handle:
            # Batches are held (as received: ~60 bytes a record) and formatted when the input ends: the
            # run's end, or the engine's death. Formatting as they come would take CPU from the run
            # while it goes (on 2 cores, 15-35% for cheap cells); past HOLD_BYTES they are written.
            for data in frames:
                held.append(data)
                held_bytes += len(data)
                if held_bytes > HOLD_BYTES:
                    write_held(handle)
                    held_bytes = 0
            write_held(handle)
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
