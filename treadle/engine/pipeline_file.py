"""Writing a run's column edits back into its pipeline file, changing nothing else in it.

The file is not dumped again (that would lose its comments, its layout and its `${VAR}`s): each
changed field's value is replaced where it stands (a block scalar `|` stays one, any other value
becomes a double-quoted string), and a field the column did not have is added after its last one.
The result is parsed again and must equal the file's data with exactly those fields changed; if it
does not, nothing is written and the change is refused with one line.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def edit_pipeline_file(path: Path | None, history: Sequence[Mapping[str, Any]], save: bool) -> str:
    """The diff of writing `history`'s edits into the pipeline file at `path`; written too with `save`.
    ValueError (one line) for a pipeline without a file, or a file the edits cannot go into."""
    if path is None:
        raise ValueError("this run's pipeline was built in Python: there is no file to write")
    text = edited_text(path.read_text(encoding="utf-8"), history)
    diff = file_diff(path, text)
    if save and diff:
        write_text(path, text)
    return diff


def edited_text(text: str, history: Sequence[Mapping[str, Any]]) -> str:
    """`text` (a pipeline file) with the latest value of each field the `history`'s edits changed."""
    latest: dict[tuple[str, str], Any] = {}
    for entry in history:
        if entry.get("kind") == "edit":
            for field, change in entry["changes"].items():
                latest[(entry["column"], field)] = change["new"]
    expected = copy.deepcopy(yaml.safe_load(text))
    for (column, field), value in latest.items():
        text = _set_field(text, column, field, value)
        next(c for c in expected["columns"] if c.get("name") == column)[field] = value
    try:
        same = yaml.safe_load(text) == expected
    except yaml.YAMLError:
        same = False
    if not same:
        raise ValueError("the change cannot be written into the file without touching something else: edit it by hand")
    return text


def file_diff(path: Path, new_text: str) -> str:
    """A unified diff of the file as it is and as it would be."""
    old = path.read_text(encoding="utf-8")
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new_text.splitlines(keepends=True), str(path), f"{path} (edited)"
        )
    )


def write_text(path: Path, text: str) -> None:
    """Replace the file (a temp name beside it, then a rename: a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".treadle-tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _set_field(text: str, column: str, field: str, value: Any) -> str:
    root = yaml.compose(text)
    columns = _child(root, "columns")
    mapping = next((c for c in columns.value if _scalar(_child(c, "name")) == column), None) if columns else None
    if mapping is None:
        raise ValueError(f"the pipeline file has no column {column!r}")
    found = next(((key, node) for key, node in mapping.value if key.value == field), None)
    if found is not None:
        key, node = found
        # A block scalar runs to the start of the next line: what replaces it ends its line too.
        block = getattr(node, "style", None) in ("|", ">")
        rendered = _block(value, key.start_mark.column + 2) if block and isinstance(value, str) else None
        if rendered is None:
            rendered = _inline(value) + ("\n" if block else "")
        old = text[node.start_mark.index : node.end_mark.index]
        blank_lines = old[len(old.rstrip()) :].count("\n") - 1 if block else 0  # kept as they were
        return text[: node.start_mark.index] + rendered + "\n" * blank_lines + text[node.end_mark.index :]
    if mapping.flow_style:
        at = text.rindex("}", 0, mapping.end_mark.index)
        return text[:at] + f", {field}: {_inline(value)}" + text[at:]
    last = mapping.value[-1][1]
    at = last.end_mark.index
    if last.end_mark.column != 0:
        at = text.find("\n", at) + 1 or len(text)
    while text[at - 2 : at] == "\n\n":  # before the blank lines that end a block scalar
        at -= 1
    indent = " " * mapping.value[0][0].start_mark.column
    return text[:at] + f"{indent}{field}: {_inline(value)}\n" + text[at:]


def _child(node: Any, key: str) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for k, value in node.value if k.value == key), None)


def _scalar(node: Any) -> Any:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _inline(value: Any) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _block(value: str, indent: int) -> str | None:
    """`value` as a literal block scalar indented by `indent`; None where one cannot hold it exactly."""
    if not value or value[0] in " \t\n" or value.endswith("\n\n") or "\t" in value:
        return None
    chomp = "" if value.endswith("\n") else "-"
    lines = value.removesuffix("\n").split("\n")
    return f"|{chomp}\n" + "".join((" " * indent + line if line else "") + "\n" for line in lines)
