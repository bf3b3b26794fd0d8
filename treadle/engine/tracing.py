"""TaskTrace: one record per attempt of a cell, kept in a ring buffer for UIs and in trace.jsonl.

The hot path stores a plain tuple per attempt; TaskTrace records and JSON lines are made only when
read or flushed (on the writer thread). `NullTracer` keeps the hot path free of `if tracing:` checks.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

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

    @property
    def queue_wait_s(self) -> float:
        return self.t_start - self.t_ready

    @property
    def run_s(self) -> float:
        return self.t_end - self.t_start


_LINE = (
    '{"seq":%d,"row":%d,%s,"attempt":%d,"slot":%d,"t_ready":%.6f,"t_start":%.6f,"t_end":%.6f,'
    '"status":"%s","error_class":%s,"message":%s,"tokens_in":%s,"tokens_out":%s,"parent":%s}'
)
_Raw = tuple  # (seq, row, node, attempt, slot, t_ready, t_start, t_end, status, error, message, values, child)
# `child` is None for a cell's own attempt, or (model, usage) for a call made from inside the cell.


class Tracer:
    """Records attempts as plain tuples (the hot path); TaskTraces and JSON are made when read."""

    def __init__(self, columns: Sequence[str], models: Sequence[str | None], t0: float) -> None:
        self.columns = list(columns)
        self.models = list(models)
        self._usage_keys = [f"{c}__usage" for c in columns]
        self._json_node = [
            f'"column":{json.dumps(c)},"model":{json.dumps(m)}' for c, m in zip(columns, models, strict=True)
        ]
        self.t0 = t0
        self.seq = 0
        self.ring: deque[_Raw] = deque(maxlen=RING_SIZE)
        self._unwritten: list[_Raw] = []

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
    ) -> None:
        self.seq += 1
        raw = (self.seq, row, node, attempt, slot, t_ready, t_start, t_end, status, error, message, values, child)
        self.ring.append(raw)
        self._unwritten.append(raw)

    def _tokens(self, node: int, values: dict | None, child: tuple | None = None) -> tuple[int | None, int | None]:
        usage = child[1] if child is not None else values.get(self._usage_keys[node]) if values else None
        if not usage:
            return None, None
        return usage.get("prompt_tokens"), usage.get("completion_tokens")

    def trace(self, raw: _Raw) -> TaskTrace:
        seq, row, node, attempt, slot, t_ready, t_start, t_end, status, error, message, values, child = raw
        t0 = self.t0
        column = self.columns[node]
        return TaskTrace(
            seq,
            row,
            column if child is None else f"{column}:llm",
            attempt,
            slot,
            self.models[node] if child is None else child[0],
            t_ready - t0,
            t_start - t0,
            t_end - t0,
            status,
            None if error is None else type(error).__name__,
            message,
            *self._tokens(node, values, child),
            None if child is None else column,
        )

    def json_line(self, raw: _Raw) -> str:
        """One trace.jsonl line, formatted without building a dict (this runs for every attempt)."""
        seq, row, node, attempt, slot, t_ready, t_start, t_end, status, error, message, values, child = raw
        t0 = self.t0
        tokens_in, tokens_out = self._tokens(node, values, child)
        if child is None:
            node_json, parent = self._json_node[node], "null"
        else:
            column = self.columns[node]
            node_json = f'"column":{json.dumps(column + ":llm")},"model":{json.dumps(child[0])}'
            parent = json.dumps(column)
        return _LINE % (
            seq,
            row,
            node_json,
            attempt,
            slot,
            t_ready - t0,
            t_start - t0,
            t_end - t0,
            status,
            "null" if error is None else json.dumps(type(error).__name__),
            "null" if message is None else json.dumps(message),
            "null" if tokens_in is None else int(tokens_in),
            "null" if tokens_out is None else int(tokens_out),
            parent,
        )

    def since(self, seq: int) -> list[TaskTrace]:
        """Traces in the ring newer than `seq`, oldest first."""
        newer: list[_Raw] = []
        for raw in reversed(self.ring):
            if raw[0] <= seq:
                break
            newer.append(raw)
        return [self.trace(raw) for raw in reversed(newer)]

    def recent_for(self, row: int, node: int) -> list[TaskTrace]:
        """The attempts of one cell still in the ring, oldest first."""
        return [self.trace(raw) for raw in self.ring if raw[1] == row and raw[2] == node]

    def take_unwritten(self) -> list[_Raw]:
        unwritten, self._unwritten = self._unwritten, []
        return unwritten

    def write(self, path: Path, raws: Sequence[_Raw]) -> None:
        """Append records to trace.jsonl (blocking: call from the writer thread)."""
        if raws:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n".join(map(self.json_line, raws)) + "\n")


class NullTracer(Tracer):
    """Tracing off: records nothing."""

    def record(self, *args, **kwargs) -> None:  # type: ignore[override]
        return None
