"""TaskTrace: one record per attempt of a cell, kept in a ring buffer for UIs and in trace.jsonl.

The hot path stores a plain tuple per attempt; TaskTrace records and JSON lines are made only when
read or flushed (on a thread of the run, or for large runs in a helper process: `OFFLOAD_AFTER`).
`NullTracer` records nothing, so the rare paths need no `if tracing:`; on the path of every finished
cell the scheduler checks once (cheaper than calling a no-op) and appends a plain success's record
itself (`record_plain`, cheaper than calling `done`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from treadle.engine.trace_reader import TraceColumns, joined, read_trace
from treadle.engine.trace_writer import Record, TraceWriterProcess, full_record, write_lines

TraceStatus = Literal["done", "retry", "failed", "timeout", "cancelled"]
RING_SIZE = 20_000


class TaskTrace(NamedTuple):
    seq: int
    row: int
    column: str
    attempt: int
    slot: int
    """The worker lane (0 .. slots-1) that ran it."""
    model: str | None
    t_ready: float
    """Seconds since the run started: when the cell became ready (queued)."""
    t_start: float
    t_end: float
    status: TraceStatus
    error_class: str | None = None
    message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    parent: str | None = None
    """For a call made from inside a cell (ctx.llm), the column of that cell; `column` is `<parent>:llm`."""
    retry_after_s: float | None = None
    """On an attempt that will be retried: the wait the endpoint asked for (Retry-After), honoured."""

    @property
    def queue_wait_s(self) -> float:
        return self.t_start - self.t_ready

    @property
    def run_s(self) -> float:
        return self.t_end - self.t_start


OFFLOAD_AFTER = 20_000
"""Past this many attempts in a run (or from the start, in a run that has more cells to run),
trace.jsonl lines are formatted by a helper process (see trace_writer.py) instead of on a thread of
the engine, where formatting (~1.5 us a line) would hold the GIL the engine loop needs: small runs
never start a process."""


def _tokens(usage: object) -> tuple[int | None, int | None]:
    if not usage or not isinstance(usage, dict):
        return None, None
    tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        None if tokens_in is None else int(tokens_in),
        None if tokens_out is None else int(tokens_out),
    )


class Tracer:
    """Records attempts as plain tuples (the hot path); TaskTraces and JSON are made when read.

    Records wait in `_unwritten` until the writer takes them (every quarter second), then stay in the
    ring (the newest RING_SIZE) for UIs."""

    def __init__(
        self, columns: Sequence[str], models: Sequence[str | None], t0: float, expected_attempts: int = 0
    ) -> None:
        self.columns = list(columns)
        self._helper_from_start = expected_attempts > OFFLOAD_AFTER
        """A run that will make more attempts than OFFLOAD_AFTER hands its first batch to the helper:
        its lines need not be read back at the end (only an earlier session's are)."""
        self.models = list(models)
        self.usage_keys = [f"{c}__usage" for c in columns]
        """Per node, the key of the token usage an LLM cell's values carry."""
        self.t0 = t0
        self._taken = 0
        """Records handed to the writer so far: the ring's newest has this seq."""
        self.ring: deque[Record] = deque(maxlen=RING_SIZE)
        self._unwritten: list[Record] = []
        self.record_plain = self._unwritten.append
        """`done`'s common case for callers on the hot path: append the 7-value record
        (row, node, attempt, slot, t_ready, t_start, t_end) of an attempt whose values carry no usage."""
        self._written = 0
        self._offload: TraceWriterProcess | None = None
        self._offload_from = 0
        """trace.jsonl's size when the helper took over: the lines before it are this process's."""
        self._wrote_before_offload = False
        """Whether this run's first lines are among them (else they are earlier runs', if any)."""

    @property
    def seq(self) -> int:
        """The seq of the newest record (how many there are)."""
        return self._taken + len(self._unwritten)

    def done(
        self, row: int, node: int, attempt: int, slot: int, t_ready: float, t_start: float, t_end: float, values: dict
    ) -> None:
        """A cell's attempt that succeeded: the hot path, one tuple appended."""
        if self.usage_keys[node] in values:
            self.record(row, node, attempt, slot, t_ready, t_start, t_end, "done", values=values)
        else:
            self.record_plain((row, node, attempt, slot, t_ready, t_start, t_end))

    def record(
        self,
        row: int,
        node: int,
        attempt: int,
        slot: int,
        t_ready: float,
        t_start: float,
        t_end: float,
        status: TraceStatus,
        error: BaseException | None = None,
        message: str | None = None,
        values: dict | None = None,
        child: tuple[str, dict | None] | None = None,
        retry_after: float | None = None,
    ) -> None:
        if child is not None:
            model, usage = child
        else:
            model, usage = None, None if values is None else values.get(self.usage_keys[node])
        error_class = None if error is None else type(error).__name__
        tokens_in, tokens_out = _tokens(usage)
        times = (t_ready, t_start, t_end)
        outcome = (status, error_class, message, tokens_in, tokens_out, model, retry_after)
        self._unwritten.append((row, node, attempt, slot, *times, *outcome))

    def trace(self, seq: int, raw: Record) -> TaskTrace:
        row, node, attempt, slot, t_ready, t_start, t_end = raw[:7]
        status, error_class, message, t_in, t_out, child, retry_after = full_record(raw)[7:]
        t0 = self.t0
        column = self.columns[node]
        return TaskTrace(
            seq,
            row,
            column if child is None else f"{column}:llm",
            attempt,
            slot,
            self.models[node] if child is None else child,
            t_ready - t0,
            t_start - t0,
            t_end - t0,
            status,
            error_class,
            message,
            t_in,
            t_out,
            None if child is None else column,
            retry_after,
        )

    def recent(self) -> list[tuple[int, Record]]:
        """The records still held (the ring, then those not written yet) with their seqs, oldest first."""
        first = self._taken - len(self.ring) + 1
        return list(enumerate([*self.ring, *self._unwritten], first))

    def since(self, seq: int) -> list[TaskTrace]:
        """Traces still held that are newer than `seq`, oldest first (walks only those: UIs poll this)."""
        wanted = self.seq - seq
        newest_first: list[Record] = []
        for raw in itertools.chain(reversed(self._unwritten), reversed(self.ring)):
            if len(newest_first) >= wanted:
                break
            newest_first.append(raw)
        first = self.seq - len(newest_first) + 1
        return [self.trace(s, raw) for s, raw in enumerate(reversed(newest_first), first)]

    def recent_for(self, row: int, node: int) -> list[TaskTrace]:
        """The attempts of one cell still held, oldest first."""
        return [self.trace(s, raw) for s, raw in self.recent() if raw[0] == row and raw[1] == node]

    def take_unwritten(self) -> tuple[int, list[Record]]:
        """The records not handed to the writer yet, and the seq of the first of them."""
        unwritten = self._unwritten[:]
        self._unwritten.clear()  # the same list: record_plain is its bound append
        first = self._taken + 1
        self._taken += len(unwritten)
        self.ring.extend(unwritten)
        return first, unwritten

    def write(self, path: Path, batch: tuple[int, Sequence[Record]]) -> None:
        """Append a batch from take_unwritten to trace.jsonl (blocking: call from the writer thread)."""
        first_seq, raws = batch
        if not raws:
            return
        self._written += len(raws)
        if self._offload is None and (self._written > OFFLOAD_AFTER or self._helper_from_start):
            self._offload_from = path.stat().st_size if path.exists() else 0
            self._wrote_before_offload = self._written > len(raws)
            self._offload = TraceWriterProcess(path, self.t0, self.columns, self.models)
        if self._offload is not None:
            self._offload.send(first_seq, raws)
            return
        with open(path, "a", encoding="utf-8") as handle:
            write_lines(handle, first_seq, raws, self.t0, self.columns, self.models)

    def finish(self, path: Path) -> None:
        """Hand over what is left (writer thread, end of a run); `wait_written` then waits for the file."""
        self.write(path, self.take_unwritten())
        if self._offload is not None:
            self._offload.end_input()

    def final_columns(self, path: Path) -> TraceColumns:
        """trace.jsonl as columns, all of this run's records included (call after `finish`). For a large
        run, the lines from before the helper took over are read back and the rest comes from the helper
        (while it writes them: no need to parse them back); a small run's file is read whole."""
        if self._offload is None:
            return read_trace(path)
        columns = read_trace(path, end=self._offload_from)
        held = TraceColumns.from_records(self._offload.record_numbers(), self.t0, self.columns, self.models)
        return joined(columns, held, same_session=self._wrote_before_offload)

    def wait_written(self) -> None:
        """Wait until trace.jsonl is complete (OSError if the helper process could not write it)."""
        offload, self._offload = self._offload, None
        if offload is not None:
            offload.wait()


class NullTracer(Tracer):
    """Tracing off: records nothing."""

    def done(self, *args) -> None:  # type: ignore[override]
        return None

    def record(self, *args, **kwargs) -> None:  # type: ignore[override]
        return None
