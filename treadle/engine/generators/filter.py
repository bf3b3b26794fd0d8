"""Filter columns (`kind: filter`): a test per row; a row for which it is false is dropped.

A filter writes no value. It keeps a row by returning no values, and drops one by raising
`RowFiltered`, which the scheduler settles as "filtered by <name>" (treadle.engine.filters). The test
is a sandboxed Jinja2 expression (run inline: cheap and CPU-only) or a python function (sync in a
thread, async on the loop; given `ctx` if it takes a second argument, as a python column's). A batch
filter is a BatchGenerator whose values are one bool per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import TemplateError

from treadle.engine.errors import CellError
from treadle.engine.functions import accepts_context, is_async_function
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.templates import row_expression


class RowFiltered(Exception):
    """The row failed a filter's test: it is dropped, which is not a failure."""


class ExpressionFilter(Generator):
    mode = RunMode.INLINE

    def __init__(self, name: str, body: str) -> None:
        super().__init__(name, ())
        self.test = row_expression(body)

    def generate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            keep = self.test(row)
        except (TemplateError, TypeError, ValueError) as exc:
            raise CellError(f"filter expression: {exc}") from exc
        if not keep:
            raise RowFiltered
        return {}


class FunctionFilter(Generator):
    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        super().__init__(name, ())
        self.function = function
        self.mode = RunMode.ASYNC if is_async_function(function) else RunMode.THREAD
        self.wants_context = accepts_context(function)

    def generate(self, row: Mapping[str, Any], ctx: Any = None) -> dict[str, Any]:
        if not (self.function(row) if ctx is None else self.function(row, ctx)):
            raise RowFiltered
        return {}

    async def agenerate(self, row: Mapping[str, Any], ctx: Any = None) -> dict[str, Any]:
        if not await (self.function(row) if ctx is None else self.function(row, ctx)):
            raise RowFiltered
        return {}
