"""Writing trace.jsonl: the record a finished attempt leaves, its JSON line, and a helper process that
formats the lines of large runs off the engine's core.

Formatting a JSON line costs ~1.5 us in Python; on the engine's writer thread it holds the GIL the
engine loop needs, which made tracing cost 20-40% of a run of cheap cells. For large runs a thread of
the engine instead sends each `Batch` of records (packed numbers, one `marshal.dumps`) down a pipe to
this process, which formats it as it comes (so trace.jsonl stays as current as a small run's) and keeps
the numbers. When the input ends it sends them all back (what the run's summary metrics are computed
from, so the engine need not parse the lines again).

The pipes carry frames: a 4-byte little-endian length, then marshalled data. In: first
`(t0, columns, models)`, then `Batch.message()` per batch. Out: one frame, the `RecordNumbers.message()`
of every record received. At end of input the process writes what is left and exits 0; it stops with 1
and one line on stderr if it cannot write. If the engine dies, the pipe ends and everything received is
written: traces are not lost with the engine."""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import treadle

Rest = tuple
"""(status, error_class, message, tokens_in, tokens_out, child_model, retry_after) of an attempt that is
not a plain success. `child_model` is None for a cell's own attempt, or the model of a call made from
inside the cell (ctx.llm); `retry_after` the endpoint's Retry-After honoured before the next attempt."""
DONE_REST: Rest = ("done", None, None, None, None, None, None)
"""The rest of a plain success: most attempts (cells that succeed without token counts)."""

Record = tuple
"""An attempt as one tuple, (row, node, attempt, slot, t_ready, t_start, t_end, *rest): 14 plain values."""

HEAD = struct.Struct("@4q3d")
"""The first 7 values of every record, packed: row, node, attempt, slot, t_ready, t_start, t_end (perf_counter
seconds). Native byte order: records never leave this machine. Packing one costs the engine about half
what a tuple did, counting the tuple's later marshalling, collection and freeing; a batch of them is
one bytes object."""


_LINE = (
    '{"seq":%d,"row":%d,%s,"attempt":%d,"slot":%d,"t_ready":%.6f,"t_start":%.6f,"t_end":%.6f,'
    '"status":"%s","error_class":%s,"message":%s,"tokens_in":%s,"tokens_out":%s,"parent":%s,"retry_after_s":%s}'
)
_DONE_LINE = (
    '{"seq":%d,"row":%d,%s,"attempt":%d,"slot":%d,"t_ready":%.6f,"t_start":%.6f,"t_end":%.6f,'
    '"status":"done","error_class":null,"message":null,"tokens_in":null,"tokens_out":null,"parent":null,'
    '"retry_after_s":null}'
)
_LENGTH = struct.Struct("<I")
_LINES_PER_WRITE = 2_000
_BATCHES_AHEAD = 8


@dataclass(frozen=True, slots=True)
class Batch:
    """Records numbered from `first_seq` (a record's seq is its position: the n-th record made has seq
    n): their heads one after another and, for the few that are not plain successes, their rest by
    index in the batch."""

    first_seq: int
    heads: bytes
    more: list[tuple[int, Rest]]

    @property
    def count(self) -> int:
        return len(self.heads) // HEAD.size

    def message(self) -> tuple[int, bytes, list[tuple[int, Rest]]]:
        """What marshal carries to the helper (one C call: bytes and a short list)."""
        return self.first_seq, self.heads, self.more

    def slice(self, start: int, stop: int | None = None) -> Batch:
        """The records from index `start` to `stop`, as a batch of their own."""
        stop = self.count if stop is None else min(stop, self.count)
        if start <= 0 and stop == self.count:
            return self
        more = [(index - start, rest) for index, rest in self.more if start <= index < stop]
        return Batch(self.first_seq + start, self.heads[start * HEAD.size : stop * HEAD.size], more)

    def tail(self, n: int) -> Batch:
        """The last `n` records."""
        return self.slice(max(self.count - n, 0))

    def records(self) -> list[tuple[int, Record]]:
        """(seq, record) of each."""
        rest_of = dict(self.more)
        return [
            (self.first_seq + index, head + rest_of.get(index, DONE_REST))
            for index, head in enumerate(HEAD.iter_unpack(self.heads))
        ]


def format_lines(batch: Batch, t0: float, columns: Sequence[str], models: Sequence[str | None]) -> str:
    """trace.jsonl lines of the batch's records (each line ends with a newline), formatted without
    building dicts."""
    node_json = [f'"column":{json.dumps(c)},"model":{json.dumps(m)}' for c, m in zip(columns, models, strict=True)]
    dumps = json.dumps
    rest_of = dict(batch.more)
    lines = []
    for index, (row, node, attempt, slot, t_ready, t_start, t_end) in enumerate(HEAD.iter_unpack(batch.heads)):
        rest = rest_of.get(index)
        seq = batch.first_seq + index
        if rest is None:
            lines.append(
                _DONE_LINE % (seq, row, node_json[node], attempt, slot, t_ready - t0, t_start - t0, t_end - t0)
            )
            continue
        status, error_class, message, t_in, t_out, child, retry_after = rest
        if child is None:
            node_part, parent = node_json[node], "null"
        else:
            node_part = f'"column":{dumps(columns[node] + ":llm")},"model":{dumps(child)}'
            parent = dumps(columns[node])
        lines.append(
            _LINE
            % (
                seq,
                row,
                node_part,
                attempt,
                slot,
                t_ready - t0,
                t_start - t0,
                t_end - t0,
                status,
                "null" if error_class is None else dumps(error_class),
                "null" if message is None else dumps(message),
                "null" if t_in is None else t_in,
                "null" if t_out is None else t_out,
                parent,
                "null" if retry_after is None else f"{retry_after:.6f}",
            )
        )
    lines.append("")
    return "\n".join(lines)


def write_lines(handle: IO[str], batch: Batch, t0: float, columns: Sequence[str], models: Sequence[str | None]) -> None:
    """Append the batch's lines, formatted a few thousand at a time: one string per batch (tens of MB)
    costs as much again in the kernel, mapping fresh memory for it."""
    for start in range(0, batch.count, _LINES_PER_WRITE):
        handle.write(format_lines(batch.slice(start, start + _LINES_PER_WRITE), t0, columns, models))


class RecordNumbers:
    """Every record received, as the engine packed them (`heads`) plus the rest of the few that have
    more (`more`: index among all received, rest). `TraceColumns.from_records` makes columns of them;
    this process needs no numpy (importing it costs 0.2 s of CPU, against the run's cells)."""

    def __init__(self) -> None:
        self.heads = bytearray()
        self.more: list[tuple[int, Rest]] = []
        self.count = 0

    def add(self, batch: Batch) -> None:
        self.heads += batch.heads
        self.more.extend((self.count + index, rest) for index, rest in batch.more)
        self.count += batch.count

    def message(self) -> dict[str, Any]:
        return {"heads": bytes(self.heads), "more": self.more}


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's data; None at the end of input (or where it breaks off mid-frame)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    data = stream.read(length)
    return data if len(data) == length else None


class TraceWriterProcess:
    """The engine's side: starts the helper, sends it batches, takes their numbers back, waits for it at the end."""

    def __init__(self, path: Path, t0: float, columns: Sequence[str], models: Sequence[str | None]) -> None:
        # The helper imports this package from wherever this process did (a source checkout, a venv);
        # -P: not from the working directory, which may hold another treadle.
        package_root = str(Path(treadle.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-m", "treadle.engine.trace_writer", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._numbers_reader: threading.Thread | None = None
        self._numbers_frame: bytes | None = None
        self._send(marshal.dumps((t0, list(columns), list(models))))

    def send(self, batch: Batch) -> None:
        self._send(marshal.dumps(batch.message()))

    def _send(self, data: bytes) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            _write_frame(stdin, data)
        except BrokenPipeError:
            raise self._failure() from None

    def end_input(self) -> None:
        """No more batches: the helper sends back their numbers and writes the last lines. A thread
        reads the numbers meanwhile, while the engine writes its outputs: through a 64 KB pipe those of
        200,000 records (11 MB) take ~20 ms of back and forth."""
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it stopped early: wait() tells why
                stdin.close()
        if self._numbers_reader is None:
            self._numbers_reader = threading.Thread(target=self._read_numbers, name="trace-numbers", daemon=True)
            self._numbers_reader.start()

    def _read_numbers(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        self._numbers_frame = _read_frame(stdout)

    def record_numbers(self) -> dict[str, Any]:
        """The numbers of every record sent (`RecordNumbers.message()`), once the input has ended, while
        the helper writes the last of them. OSError if it stopped first."""
        self.end_input()
        assert self._numbers_reader is not None
        self._numbers_reader.join()
        data = self._numbers_frame
        if data is None:
            self.wait()
            raise OSError("the trace writer stopped before it sent the trace's records back")
        return marshal.loads(data)

    def wait(self) -> None:
        """Wait until every line is written; OSError if the helper could not write."""
        self.end_input()
        assert self._numbers_reader is not None
        self._numbers_reader.join()
        stdout, stderr = self._process.stdout, self._process.stderr
        assert stdout is not None and stderr is not None
        if not stderr.closed:
            stdout.read()  # records nobody asked for: the helper cannot finish while they fill the pipe
            stdout.close()
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


def _frames(stream: IO[bytes]) -> Iterator[bytes]:
    while (data := _read_frame(stream)) is not None:
        yield data


def _send_records(numbers: RecordNumbers) -> None:
    """To the engine, if it is still there to take them (the lines are written either way)."""
    with contextlib.suppress(OSError):
        _write_frame(sys.stdout.buffer, marshal.dumps(numbers.message()))
        sys.stdout.close()


def main(path: str) -> int:
    frames = _frames(sys.stdin.buffer)
    header = next(frames, None)
    if header is None:
        return 0
    t0, columns, models = marshal.loads(header)
    # Bounded: if lines cannot be written as fast as batches come, the pipe holds the engine back.
    batches: queue.Queue[Batch | None] = queue.Queue(maxsize=_BATCHES_AHEAD)

    def take_input() -> None:
        # A thread of its own, so the numbers go back the moment the input ends (the engine waits for
        # them to write summary.json) even while lines are being written.
        numbers = RecordNumbers()
        for data in frames:
            batch = Batch(*marshal.loads(data))
            numbers.add(batch)
            batches.put(batch)
        _send_records(numbers)
        batches.put(None)

    threading.Thread(target=take_input, name="trace-input", daemon=True).start()
    try:
        with open(path, "a", encoding="utf-8") as handle:
            while (batch := batches.get()) is not None:
                write_lines(handle, batch, t0, columns, models)
                handle.flush()
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
