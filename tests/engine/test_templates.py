"""The row renderer template columns use: the same text and errors as Jinja's own `render`."""

import numpy as np
import pytest
from jinja2 import UndefinedError

from treadle.engine.templates import compile_template, environment, row_expression, row_renderer

ROW = {"x": 5, "name": "ada", "tags": ["a", "b"], "scores": np.array([1, 2]), "nested": {"k": 1.5}, "none": None}


@pytest.mark.parametrize(
    "source",
    [
        "{{ x }}!",
        "{{ name | upper }} has {{ tags | length }} tags: {{ tags }}",
        "{{ scores }} {{ nested }} {{ none }} {{ x > 3 }}",
        "{% for i in range(x) %}{{ i }}{% endfor %}{{ dict(a=1) }}",
        "{% set y = x * 2 %}{{ y }}\n",
    ],
)
def test_renders_what_jinja_renders(source):
    template = compile_template(source)
    assert row_renderer(template)(ROW) == template.render(ROW)


def test_a_missing_name_is_an_error_as_with_jinja():
    with pytest.raises(UndefinedError, match="'missing' is undefined"):
        row_renderer(compile_template("{{ missing }}"))(ROW)


def test_a_row_field_named_like_a_global_wins():
    assert row_renderer(compile_template("{{ range }}"))({"range": "mine"}) == "mine"


@pytest.mark.parametrize("source", ["x % 2 == 0", "name | upper", "tags | length > 1 and none is none", "missing"])
def test_a_row_expression_evaluates_as_jinjas_compiled_expression(source):
    compiled = environment().compile_expression(source, undefined_to_none=False)
    assert repr(row_expression(source)(ROW)) == repr(compiled(ROW))
