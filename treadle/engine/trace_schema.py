"""The trace record, defined once: one per attempt of a cell (or of a model call made from inside one).
`TaskTrace` names each field, its Python type and its meaning; `SCHEMA`, the Arrow schema of the trace
files, is derived from it (a field's meaning in its metadata, `doc`). A test checks docs/TRACING.md."""

from __future__ import annotations

import types
from typing import Annotated, Literal, NamedTuple, get_args, get_origin, get_type_hints

import pyarrow as pa

TraceStatus = Literal["done", "retry", "failed", "timeout", "cancelled", "cached"]


class TaskTrace(NamedTuple):
    """One attempt; times are seconds since the run (the session of a resumed run) started."""

    seq: Annotated[int, "1, 2, 3, ... in the order attempts ended; from 1 again in each session of a resumed run"]
    row: Annotated[int, "0-based seed row"]
    column: Annotated[str, "the column; `<column>:llm` for a model call made from inside a python column (ctx.llm)"]
    attempt: Annotated[int, "1 for the first attempt of the cell (or of the ctx call), then 2, 3, ..."]
    slot: Annotated[int, "the execution slot lane that ran it, 0 .. slots-1 (a ctx call: its cell's)"]
    model: Annotated[str | None, "model name (the key under `models:`) of an llm column or ctx call; else null"]
    t_ready: Annotated[float, "when it became ready (inputs done, retry delay over; ctx call: asked for a model)"]
    t_start: Annotated[float, "when it started (it held an execution slot, and a model slot for llm columns)"]
    t_end: Annotated[float, "when it ended"]
    status: Annotated[
        TraceStatus,
        "`done`; `retry` (will be retried); `failed` (for good); `timeout` (retried if attempts remain); "
        "`cancelled` (cut off: its row was dropped, or an abort or a cancel's grace ended it); "
        "`cached` (answered by the response cache, no request made)",
    ]
    error_class: Annotated[str | None, "the exception's class name (`ValueError`, ...); null if done"] = None
    message: Annotated[str | None, "one line, keys redacted, at most 500 characters; null if done"] = None
    tokens_in: Annotated[
        int | None, "prompt tokens of a done llm attempt or ctx call (a python column: its calls'); else null"
    ] = None
    tokens_out: Annotated[int | None, "completion tokens, as `tokens_in`"] = None
    parent: Annotated[str | None, "for a ctx call, the column of the cell that made it; null otherwise"] = None
    retry_after_s: Annotated[
        float | None,
        "before a retry, the wait its endpoint asked for (a 429's `Retry-After`, `RetryableCellError(retry_after=)`)"
        " and the engine honoured: the next attempt's `t_ready` is at least this after `t_end`; else null",
    ] = None
    rows: Annotated[
        int | None,
        "for a batch column's call (`batch: true`), the rows it ran for: one attempt for them all, recorded on"
        " the first row; null for a cell's own attempt",
    ] = None
    worker: Annotated[
        int | None, "the engine process that ran it, 0 .. N-1 (`--workers N`); 0 in one process; null in older traces"
    ] = None


_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string()}


def _field(name: str, hint: object) -> pa.Field:
    kind, doc = get_args(hint)
    base = next(k for k in get_args(kind) if k is not type(None)) if isinstance(kind, types.UnionType) else kind
    arrow_type = pa.string() if get_origin(base) is Literal else _ARROW_TYPES[base]
    return pa.field(name, arrow_type, nullable=base is not kind, metadata={"doc": doc})


SCHEMA = pa.schema([_field(name, hint) for name, hint in get_type_hints(TaskTrace, include_extras=True).items()])
FIELDS: tuple[str, ...] = TaskTrace._fields
