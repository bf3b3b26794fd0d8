"""Python columns: a user function `module:function`, sync (run in a thread) or async (on the loop)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from treadle.engine.errors import CellError
from treadle.engine.functions import accepts_context, is_async_function
from treadle.engine.generators.base import Generator, RunMode


class PythonGenerator(Generator):
    def __init__(self, name: str, outputs: tuple[str, ...], function: Callable[..., Any]) -> None:
        super().__init__(name, outputs)
        self.function = function
        self.mode = RunMode.ASYNC if is_async_function(function) else RunMode.THREAD
        self.wants_context = accepts_context(function)
        self._single = outputs[0] if len(outputs) == 1 and outputs[0] == name else None

    def _values(self, result: Any) -> dict[str, Any]:
        if self._single is not None:
            return {self._single: result}
        if not isinstance(result, Mapping):
            raise CellError(f"returned {type(result).__name__}, expected a dict with keys {', '.join(self.outputs)}")
        missing = [c for c in self.outputs if c not in result]
        if missing:
            raise CellError(f"returned a dict without {', '.join(missing)}")
        outputs = set(self.outputs)
        unknown = [k for k in result if k not in outputs and k.split("__", 1)[0] not in outputs]
        if unknown:
            raise CellError(
                f"returned unknown keys {', '.join(map(str, unknown))}; "
                f"expected {', '.join(self.outputs)} or <column>__<name> side-effect keys"
            )
        return dict(result)

    def generate(self, row: Mapping[str, Any], ctx: Any = None) -> dict[str, Any]:
        return self._values(self.function(row) if ctx is None else self.function(row, ctx))

    async def agenerate(self, row: Mapping[str, Any], ctx: Any = None) -> dict[str, Any]:
        return self._values(await (self.function(row) if ctx is None else self.function(row, ctx)))
