"""The response book: YAML rules mapping a regex over the last user message to a templated reply.

```yaml
rules:
  - match: "capital of (?P<country>\\w+)"   # re.search over the last user message, flags re.S
    reply: "The capital of {{ country }} is ..."   # Jinja2 (sandboxed): named groups, message, model
    reasoning: "optional, same templating"      # returned as reasoning_content
```
The first matching rule wins. Everything is checked when the book is loaded (regex syntax,
template syntax, template variables), so a typo fails at start-up rather than mid-run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_ALWAYS_DEFINED = frozenset({"message", "model"})


class BookError(ValueError):
    """The book file cannot be read or is not a valid book; the message says where."""


@dataclass(frozen=True)
class BookAnswer:
    reply: str
    reasoning: str | None


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    reply: jinja2.Template
    reasoning: jinja2.Template | None

    def answer(self, message: str, model: str) -> BookAnswer | None:
        found = self.pattern.search(message)
        if found is None:
            return None
        # A group that did not take part in the match renders as "" rather than "None".
        variables = {k: ("" if v is None else v) for k, v in found.groupdict().items()}
        variables.update(message=message, model=model)
        try:
            reasoning = self.reasoning.render(variables) if self.reasoning is not None else None
            return BookAnswer(self.reply.render(variables), reasoning)
        except jinja2.TemplateError as exc:  # e.g. a sandbox refusal: a bug in the book, not the client
            raise BookError(f"rule {self.pattern.pattern!r} failed to render: {exc}") from None


@dataclass(frozen=True)
class Book:
    rules: tuple[Rule, ...]

    def answer(self, message: str, model: str) -> BookAnswer | None:
        for rule in self.rules:
            found = rule.answer(message, model)
            if found is not None:
                return found
        return None


def load_book(path: str | Path) -> Book:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BookError(f"cannot read response book {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BookError(f"response book {path} is not valid YAML: {_one_line(exc)}") from None
    return parse_book(data, where=str(path))


def parse_book(data: object, where: str = "response book") -> Book:
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise BookError(f"{where}: expected a mapping with a 'rules' list")
    return Book(tuple(_parse_rule(raw, f"{where}: rules[{i}]") for i, raw in enumerate(data["rules"])))


def _parse_rule(raw: object, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise BookError(f"{where}: expected a mapping with 'match' and 'reply'")
    unknown = set(raw) - {"match", "reply", "reasoning"}
    if unknown:
        raise BookError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("match", "reply"):
        if not isinstance(raw.get(key), str):
            raise BookError(f"{where}: '{key}' must be a string")
    if "reasoning" in raw and not isinstance(raw["reasoning"], str):
        raise BookError(f"{where}: 'reasoning' must be a string")
    try:
        pattern = re.compile(raw["match"], re.S)
    except re.error as exc:
        raise BookError(f"{where}: bad regex {raw['match']!r}: {exc}") from None
    known = _ALWAYS_DEFINED | set(pattern.groupindex)
    reasoning = raw.get("reasoning")
    return Rule(
        pattern=pattern,
        reply=_template(raw["reply"], known, f"{where}.reply"),
        reasoning=_template(reasoning, known, f"{where}.reasoning") if reasoning is not None else None,
    )


def _template(source: str, known: frozenset[str], where: str) -> jinja2.Template:
    try:
        unknown = meta.find_undeclared_variables(_ENV.parse(source)) - known
        template = _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise BookError(f"{where}: bad template: {exc.message} (line {exc.lineno})") from None
    if unknown:
        raise BookError(
            f"{where}: unknown variable(s) {', '.join(sorted(unknown))}; available: {', '.join(sorted(known))}"
        )
    return template


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
