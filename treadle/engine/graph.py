"""The static column graph: which column needs which, in what order they can run, and how far each is
from the end. Built and checked once per pipeline; runtime state lives in the tracker, not here.

A column reads a seed field, another column's output, or a side-effect column `<col>__<anything>` of
an output `<col>` (llm columns write `<col>__usage` and `<col>__reasoning`; a python column may return
extra `<col>__<x>` keys). References come from a column's templates and its `depends_on`; a python
column receives the whole row, so only `depends_on` orders it after other columns.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from treadle.engine.errors import ConfigError, Problem, in_file_order
from treadle.engine.pipeline import ColumnConfig, FilterColumn, LLMColumn, PythonColumn, TemplateColumn, output_columns
from treadle.engine.templates import (
    TemplateSyntaxError,
    compile_template,
    implicit_names,
    syntax_error_message,
    template_references,
)

__all__ = ["ColumnGraph", "Node", "column_templates", "side_effect_owner"]

LLM_SIDE_EFFECTS = ("usage", "reasoning")
"""Suffixes of the side-effect columns every llm column writes (`<col>__usage`, `<col>__reasoning`)."""


@dataclass(frozen=True)
class Node:
    """One column config in the graph."""

    name: str
    """The column config's name."""
    index: int
    """Position in `ColumnGraph.order` (topological)."""
    outputs: tuple[str, ...]
    """Columns it writes."""
    inputs: tuple[str, ...]
    """Seed fields and columns it references (templates and depends_on), sorted."""
    upstream: tuple[str, ...]
    """Node names it directly depends on, sorted."""
    downstream: tuple[str, ...]
    """Node names directly depending on it, sorted."""
    critical_path: int
    """Nodes on the longest path from this node to a sink, itself included (>= 1)."""
    config: ColumnConfig


def column_templates(column: ColumnConfig) -> dict[str, str]:
    """The column's Jinja2 templates by field name (`prompt`, `system`, `template`); none for python."""
    if isinstance(column, LLMColumn):
        found = {"prompt": column.prompt}
        if column.system is not None:
            found["system"] = column.system
        return found
    if isinstance(column, TemplateColumn):
        return {"template": column.template}
    if isinstance(column, FilterColumn) and (body := column.expression_body()) is not None:
        return {"expression": f"{{{{ {body} }}}}"}
    return {}


def _prefixes(name: str) -> Iterator[str]:
    """`a__b__c` -> `a__b`, `a`: the output columns `name` could be a side effect of, longest first."""
    end = name.rfind("__")
    while end > 0:
        yield name[:end]
        end = name.rfind("__", 0, end)


def side_effect_owner(name: str, outputs: Collection[str]) -> str | None:
    """The output column `name` is a side effect of (`plan__usage` -> `plan`), if any."""
    return next((p for p in _prefixes(name) if p in outputs), None)


@dataclass(frozen=True, eq=False)
class ColumnGraph:
    """Columns as a DAG: `nodes` by name and `order`, a stable topological order (ties keep file order)."""

    nodes: dict[str, Node]
    order: tuple[str, ...]
    seed_fields: tuple[str, ...] = ()
    _producers: dict[str, str] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[Node]:
        return (self.nodes[name] for name in self.order)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Every column the pipeline writes (not side effects), in topological order."""
        return tuple(out for node in self for out in node.outputs)

    def producer(self, column: str) -> str | None:
        """The node writing `column` or the side-effect column `column`; None for seed fields and unknowns."""
        if column in self._producers:
            return self._producers[column]
        owner = side_effect_owner(column, self._producers)
        return None if owner is None else self._producers[owner]

    @classmethod
    def build(cls, columns: list[ColumnConfig], seed_fields: Collection[str] | None, file: str) -> ColumnGraph:
        """Check the columns and order them; raises `ConfigError` with every problem found.

        `file` names where the problems are (the pipeline file's name). `seed_fields=None` means the
        seed could not be read: names no column writes are then taken to be seed fields, so that one
        bad data file does not bury the pipeline's other problems under unknown references.
        """
        return _Builder(list(columns), seed_fields, file).build()


class _Builder:
    def __init__(self, columns: list[ColumnConfig], seed_fields: Collection[str] | None, file: str) -> None:
        self.columns = columns
        self.fields_known = seed_fields is not None
        self.fields: list[str] = list(seed_fields or ())
        self.field_set = set(self.fields)
        self.file = file
        self.problems: list[Problem] = []
        self.first: dict[str, int] = {}  # column name -> index of its first definition
        self.outputs: dict[int, list[str]] = {}
        self.producers: dict[str, int] = {}  # output column -> column index
        self.upstream: dict[int, set[int]] = {}
        self.inputs: dict[int, set[str]] = {}

    def problem(self, i: int, attr: str, message: str) -> None:
        """A problem with column `i`, at its key `attr` (`.name`, `.depends_on[0]`; "" for the column)."""
        key = f"columns[{i}] '{self.columns[i].name}'{attr}"
        self.problems.append(Problem(self.file, message, key=key, column_index=i))

    def build(self) -> ColumnGraph:
        self.register()
        self.check_names()
        for i in self.outputs:
            self.link(i)
        self.link_filters()
        order = self.sort()
        if self.problems:
            raise ConfigError(in_file_order(self.problems))
        return self.assemble(order)

    def register(self) -> None:
        """Record each column's outputs and who writes what; a duplicate name is reported, not registered."""
        for i, column in enumerate(self.columns):
            if not column.name.strip():
                self.problem(i, ".name", "column name is empty")
            if column.name in self.first:
                j = self.first[column.name]
                self.problem(i, ".name", f"duplicate column name '{column.name}' (columns[{j}] has it too)")
                continue
            self.first[column.name] = i
            if isinstance(column, PythonColumn) and column.columns is not None:
                self.check_columns_list(i, column.columns)
            self.outputs[i] = list(dict.fromkeys(output_columns(column)))
            for out in self.outputs[i]:
                self.claim(i, out)

    def check_columns_list(self, i: int, columns: list[str]) -> None:
        """A python column's `columns:` must list some names, each once."""
        if not columns:
            self.problem(
                i,
                ".columns",
                f"is empty; list the output columns, or leave it out to write one column '{self.columns[i].name}'",
            )
        for twice in sorted({c for c in columns if columns.count(c) > 1}):
            self.problem(i, ".columns", f"lists '{twice}' more than once")

    def claim(self, i: int, out: str) -> None:
        """Column `i` writes `out`, unless an earlier column does."""
        j = self.producers.get(out)
        if j is None:
            self.producers[out] = i
        elif out != self.columns[i].name:  # a clash of names is reported once, as a duplicate name
            self.problem(i, "", f"output column '{out}' is also written by columns[{j}] '{self.columns[j].name}'")
        else:
            self.problem(i, ".name", f"column '{out}' is also written by columns[{j}] '{self.columns[j].name}'")

    def check_names(self) -> None:
        jinja = implicit_names()
        for i, outs in self.outputs.items():
            name = self.columns[i].name
            attr = ".columns" if outs != [name] else ""
            for out in outs:
                if out in self.field_set:
                    self.problem(i, attr, f"output column '{out}' is also a seed field; choose another name")
                if out in jinja:
                    self.problem(
                        i, attr, f"output column '{out}' shadows the template name '{out}'; choose another name"
                    )
                owner = side_effect_owner(out, self.producers)
                if owner is not None and self.producers[owner] != i:
                    j = self.producers[owner]
                    self.problem(
                        i,
                        attr,
                        f"output column '{out}' is taken by the side-effect columns of columns[{j}] "
                        f"'{self.columns[j].name}' ({owner}__*)",
                    )
            if name not in outs and (name in self.field_set or self.producers.get(name, i) != i):
                self.problem(i, ".name", f"column name '{name}' is also a seed field or another column")
        for seed_field in self.fields:
            owner = side_effect_owner(seed_field, self.producers)
            if owner is not None:
                self.problem(
                    self.producers[owner],
                    "",
                    f"seed field '{seed_field}' collides with this column's side-effect columns "
                    f"({owner}__*); rename the column",
                )

    def link(self, i: int) -> None:
        """Resolve column `i`'s references to seed fields (its inputs) and columns (its upstream)."""
        upstream = self.upstream.setdefault(i, set())
        inputs = self.inputs.setdefault(i, set())
        jinja = implicit_names()
        for ref, attr, in_template in self.references(i):
            j = self.writer(ref, in_template)
            if j is None:
                if ref in self.field_set or (not self.fields_known and ref not in jinja):
                    inputs.add(ref)
                elif not (in_template and ref in jinja):
                    self.problem(i, attr, self.unknown(ref, in_template, i))
                continue
            if j == i:
                self.problem(i, attr, f"'{ref}' is this column's own output: a column cannot depend on itself")
                continue
            inputs.add(ref)
            upstream.add(j)

    def link_filters(self) -> None:
        """The columns after a filter in the file run only for the rows it keeps: they depend on it,
        unless it depends on them."""
        for f in self.outputs:
            if not isinstance(self.columns[f], FilterColumn):
                continue
            ancestors: set[int] = set()
            frontier = list(self.upstream[f])
            while frontier:
                j = frontier.pop()
                if j not in ancestors:
                    ancestors.add(j)
                    frontier.extend(self.upstream.get(j, ()))
            for i in self.outputs:
                if i > f and i not in ancestors:
                    self.upstream[i].add(f)

    def references(self, i: int) -> list[tuple[str, str, bool]]:
        """(name, key, from a template) for every name column `i`'s templates and depends_on mention;
        a template that does not compile is reported instead."""
        column = self.columns[i]
        refs: list[tuple[str, str, bool]] = []
        for attr, source in column_templates(column).items():
            try:
                compile_template(source)
                names = template_references(source, include_implicit=True)
            except TemplateSyntaxError as exc:
                self.problem(i, f".{attr}", syntax_error_message(exc))
                continue
            refs.extend((name, f".{attr}", True) for name in sorted(names))
        refs.extend((dep, f".depends_on[{k}]", False) for k, dep in enumerate(column.depends_on))
        return refs

    def writer(self, ref: str, in_template: bool) -> int | None:
        """The column writing `ref` (an output or one of its side effects), or None for anything else."""
        j = self.producers.get(ref)
        if j is None:
            owner = side_effect_owner(ref, self.producers)
            j = None if owner is None else self.producers[owner]
        if j is None and not in_template and ref in self.first and ref not in self.field_set:
            j = self.first[ref]  # depends_on may name a multi-output python column itself
        return j

    def unknown(self, ref: str, in_template: bool, i: int) -> str:
        if in_template and ref in self.first and ref not in self.producers:
            outs = ", ".join(self.outputs.get(self.first[ref], []))
            return f"'{ref}' is a python column writing {outs}; refer to those columns"
        candidates = list(self.fields) + list(self.producers)
        candidates += [
            f"{out}__{s}"
            for out, j in self.producers.items()
            if isinstance(self.columns[j], LLMColumn)
            for s in LLM_SIDE_EFFECTS
        ]
        if not in_template:
            candidates += list(self.first)
        close = difflib.get_close_matches(ref, candidates, n=1)
        if close:
            return f"unknown column or seed field '{ref}' (did you mean '{close[0]}'?)"
        known = [*self.fields, *(out for out, j in self.producers.items() if j != i)]
        listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        return f"unknown column or seed field '{ref}' (known: {listed or 'none'})"

    def sort(self) -> list[int]:
        """Kahn's algorithm, always taking the earliest column in the file among the ready ones."""
        waiting = {i: len(self.upstream.get(i, ())) for i in self.outputs}
        downstream: dict[int, list[int]] = {i: [] for i in self.outputs}
        for i, ups in self.upstream.items():
            for j in ups:
                downstream[j].append(i)
        ready = [i for i, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for k in downstream[i]:
                waiting[k] -= 1
                if waiting[k] == 0:
                    heapq.heappush(ready, k)
        if len(order) < len(waiting):
            self.report_cycles(set(waiting) - set(order))
        return order

    def report_cycles(self, stuck: set[int]) -> None:
        """Name one cycle per tangle of mutually dependent columns (columns merely downstream are skipped)."""
        seen: set[int] = set()
        for start in sorted(stuck):
            if start in seen:
                continue
            path = self.cycle_from(start, stuck)
            if path is None:
                continue
            seen.update(self.reachable(start, stuck) & self.reaching(start, stuck))
            names = " -> ".join(self.columns[k].name for k in [*path, path[0]])
            self.problem(path[0], "", f"dependency cycle: {names} (each column needs the next)")

    def cycle_from(self, start: int, stuck: set[int]) -> list[int] | None:
        """The shortest path start -> ... -> start along 'needs' edges, or None if start is on no cycle."""
        parents: dict[int, int] = {}
        frontier = [start]
        while frontier:
            nxt: list[int] = []
            for node in frontier:
                for up in sorted(self.upstream.get(node, set()) & stuck):
                    if up == start:
                        path = [node]
                        while path[-1] != start:
                            path.append(parents[path[-1]])
                        return path[::-1]
                    if up not in parents:
                        parents[up] = node
                        nxt.append(up)
            frontier = nxt
        return None

    def reachable(self, start: int, within: set[int]) -> set[int]:
        found, todo = {start}, [start]
        while todo:
            for up in self.upstream.get(todo.pop(), ()):
                if up in within and up not in found:
                    found.add(up)
                    todo.append(up)
        return found

    def reaching(self, start: int, within: set[int]) -> set[int]:
        found, todo = {start}, [start]
        while todo:
            node = todo.pop()
            for k in within:
                if node in self.upstream.get(k, ()) and k not in found:
                    found.add(k)
                    todo.append(k)
        return found

    def assemble(self, order: list[int]) -> ColumnGraph:
        names = [self.columns[i].name for i in order]
        downstream: dict[int, set[int]] = {i: set() for i in order}
        for i in order:
            for j in self.upstream[i]:
                downstream[j].add(i)
        critical: dict[int, int] = {}
        for i in reversed(order):
            critical[i] = 1 + max((critical[k] for k in downstream[i]), default=0)

        def named(indices: set[int]) -> tuple[str, ...]:
            return tuple(sorted(self.columns[k].name for k in indices))

        nodes = {
            self.columns[i].name: Node(
                name=self.columns[i].name,
                index=position,
                outputs=tuple(self.outputs[i]),
                inputs=tuple(sorted(self.inputs[i])),
                upstream=named(self.upstream[i]),
                downstream=named(downstream[i]),
                critical_path=critical[i],
                config=self.columns[i],
            )
            for position, i in enumerate(order)
        }
        producers = {out: self.columns[i].name for out, i in self.producers.items()}
        return ColumnGraph(nodes=nodes, order=tuple(names), seed_fields=tuple(self.fields), _producers=producers)
