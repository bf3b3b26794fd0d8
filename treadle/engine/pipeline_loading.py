"""Reading a pipeline file: YAML with its quirks handled, `${VAR}` expansion, `.env` beside the file.

`load_pipeline` reads and expands the file, then hands its data to `pipeline_validation`, which checks
it and builds the seed and column graph. The YAML is read as YAML 1.2 reads booleans (`on:`, `yes`,
`no` stay strings) and a key written twice is an error rather than the last one silently winning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from treadle.engine.errors import ConfigError, Problem, describe_value
from treadle.engine.pipeline_validation import LoadedPipeline, load_pipeline_config, problem_at, validate_config

__all__ = ["load_pipeline"]


def load_pipeline(path: str | Path, *, env: Mapping[str, str] | None = None) -> LoadedPipeline:
    """Read, expand, validate and check a pipeline file; raises `ConfigError` with every problem.

    `${VAR}` and `${VAR:-default}` expand in every string value from `env` (default: `os.environ`) and
    a `.env` file beside the pipeline (the environment wins; `.env` values are taken literally).
    `$${` writes a literal `${`. A directory holding a `pipeline.yaml` may be given instead of the file.
    """
    file = Path(path)
    if file.is_dir() and (file / "pipeline.yaml").is_file():
        file = file / "pipeline.yaml"
    shown = str(file) if not file.is_absolute() else file.name
    base_dir = file.resolve().parent
    raw = _read_yaml(file, shown)
    expander = _Expander(_variables(base_dir, env), raw, shown)
    data = expander.expand(raw, ())
    config = validate_config(data, base_dir, shown, earlier=expander.problems)  # unset variables first
    return load_pipeline_config(config, base_dir, file=shown, path=file.resolve())


# --- reading the file


class _Loader(yaml.SafeLoader):
    """A safe loader that records duplicate mapping keys (PyYAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:  # keys as written: a `<<` merge may be overridden, that is no duplicate
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            if key in seen:
                loader.duplicates.append((str(key), key_node.start_mark.line + 1))
            seen.add(key)
        except TypeError:  # an unhashable key; construct_mapping reports it
            pass
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 booleans only: in YAML 1.1 `on`, `off`, `yes`, `no` are booleans, so `join: {on: id}`
# would have the key True. Here they stay strings; only true/false (any case) are booleans.
_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _read_yaml(file: Path, shown: str) -> dict[str, Any]:
    """The file's top-level mapping; raises `ConfigError` for a file that is missing, not UTF-8, not
    YAML, has a key twice, or is not a mapping."""
    raw = _parse_yaml(_read_text(file, shown), shown)
    if raw is None:
        raise _error(shown, "file is empty; a pipeline needs seed: and columns:")
    if not isinstance(raw, dict):
        raise _error(shown, f"expected a mapping with seed:, columns: (and models:, run:), got {describe_value(raw)}")
    return raw


def _error(shown: str, message: str, line: int | None = None) -> ConfigError:
    return ConfigError([Problem(shown, message, line=line)])


def _read_text(file: Path, shown: str) -> str:
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise _error(shown, "file not found") from None
    except IsADirectoryError:
        raise _error(shown, "is a directory without a pipeline.yaml") from None
    except OSError as exc:
        raise _error(shown, f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(shown, "not UTF-8 text", line=data[: exc.start].count(b"\n") + 1) from None


def _parse_yaml(text: str, shown: str) -> Any:
    loader = _Loader(text)
    try:
        raw = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise _error(shown, _syntax_message(exc), line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise _error(shown, f"YAML error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError([Problem(shown, f"duplicate key '{key}'", line=line) for key, line in loader.duplicates])
    return raw


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    """`YAML syntax error: <problem> (<context> started at line N)`, on one line."""
    message = f"YAML syntax error: {exc.problem or exc}"
    if exc.context:
        started = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f" ({exc.context}{started})"
    return " ".join(message.split())


# --- ${VAR} expansion

_VAR = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _variables(base_dir: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    """`.env` beside the pipeline (taken literally), overridden by `env` (default: the environment)."""
    variables: dict[str, str] = {}
    dotenv = base_dir / ".env"
    if dotenv.is_file():
        values = dotenv_values(dotenv, interpolate=False)
        variables.update({k: v for k, v in values.items() if v is not None})
    variables.update(os.environ if env is None else env)
    return variables


@dataclass
class _Expander:
    """Expands `${VAR}` in every string of a file's data, collecting a problem per unset variable."""

    variables: Mapping[str, str]
    raw: Any
    """The file's data as read, to name columns in the problems' key paths."""
    shown: str
    problems: list[Problem] = field(default_factory=list)

    def expand(self, value: Any, loc: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            return {k: self.expand(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*loc, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        return _VAR.sub(lambda m: self.substitute(m, loc), value)

    def substitute(self, m: re.Match[str], loc: tuple[Any, ...]) -> str:
        if m.group(0) == "$${":
            return "${"
        body = m.group(1)
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            self.problem(loc, f"'${{{body}}}' is not a variable reference (${{NAME}} or ${{NAME:-default}})")
            return m.group(0)
        found = self.variables.get(name)
        if found is not None and not (sep and found == ""):
            return found
        if sep:
            return default
        self.problem(
            loc,
            f"environment variable {name} is not set (set it, put it in .env beside the pipeline, "
            f"or write ${{{name}:-default}})",
        )
        return m.group(0)

    def problem(self, loc: tuple[Any, ...], message: str) -> None:
        self.problems.append(problem_at(self.shown, loc, self.raw, message))
