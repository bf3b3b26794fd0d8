"""Template columns: a Jinja2 template rendered over the row in the sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError

from treadle.engine.errors import CellError
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.templates import compile_template, row_renderer


class TemplateGenerator(Generator):
    mode = RunMode.INLINE

    def __init__(self, name: str, source: str) -> None:
        super().__init__(name, (name,))
        self.template = compile_template(source)
        self._render = row_renderer(self.template)

    def generate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return {self.name: self._render(row)}
        except TemplateError as exc:
            raise CellError(f"template: {exc}") from exc
