"""The static column graph: references, order, critical paths and the problems it reports."""

from __future__ import annotations

import pytest

from treadle.engine.errors import ConfigError
from treadle.engine.graph import ColumnGraph, column_templates, side_effect_owner
from treadle.engine.pipeline import LLMColumn, PythonColumn, TemplateColumn
from treadle.engine.templates import compile_template, syntax_error_message, template_references


def tpl(name: str, template: str, **kw) -> TemplateColumn:
    return TemplateColumn(name=name, kind="template", template=template, **kw)


def llm(name: str, prompt: str, **kw) -> LLMColumn:
    return LLMColumn(name=name, kind="llm", model="m", prompt=prompt, **kw)


def py(name: str, **kw) -> PythonColumn:
    return PythonColumn(name=name, kind="python", function="mod:f", **kw)


def build(columns, fields=("question", "table")) -> ColumnGraph:
    return ColumnGraph.build(columns, fields, "p.yaml")


def errors(columns, fields=("question", "table")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(columns, fields)
    return [str(p) for p in info.value.problems]


# --- order and shape


def test_topological_order_is_stable_and_keeps_file_order_on_ties():
    graph = build(
        [
            tpl("report", "{{ plan }} {{ check }}"),
            tpl("check", "{{ plan }}"),
            llm("plan", "{{ question }} {{ schema }}"),
            py("schema"),
            tpl("other", "{{ table }}"),
        ]
    )
    # among the columns ready to go, the earliest in the file goes first
    assert graph.order == ("schema", "plan", "check", "report", "other")
    assert [graph.nodes[n].index for n in graph.order] == [0, 1, 2, 3, 4]
    assert [node.name for node in graph] == list(graph.order)


def test_critical_path_counts_nodes_to_the_furthest_sink():
    graph = build(
        [
            py("schema"),
            llm("plan", "{{ question }} {{ schema }}"),
            llm("code", "{{ plan }}"),
            tpl("report", "{{ code }} {{ plan }}"),
            tpl("side", "{{ schema }}"),
            tpl("alone", "{{ question }}"),
        ]
    )
    lengths = {name: node.critical_path for name, node in graph.nodes.items()}
    assert lengths == {"schema": 4, "plan": 3, "code": 2, "report": 1, "side": 1, "alone": 1}


def test_inputs_upstream_and_downstream():
    graph = build(
        [
            py("schema", depends_on=["table"]),
            llm("plan", "{{ question }} {{ schema }}", system="About {{ table }}"),
            tpl("report", "{{ plan }}{{ schema }}", depends_on=["plan"]),
        ]
    )
    plan, schema, report = graph.nodes["plan"], graph.nodes["schema"], graph.nodes["report"]
    assert schema.inputs == ("table",) and schema.upstream == ()
    assert plan.inputs == ("question", "schema", "table")
    assert plan.upstream == ("schema",) and plan.downstream == ("report",)
    assert schema.downstream == ("plan", "report")
    assert report.upstream == ("plan", "schema")
    assert plan.outputs == ("plan",)
    assert isinstance(plan.config, LLMColumn)


def test_python_columns_depend_only_on_depends_on():
    graph = build([tpl("a", "{{ question }}"), py("b"), py("c", depends_on=["a"])])
    assert graph.nodes["b"].upstream == () and graph.nodes["b"].inputs == ()
    assert graph.nodes["c"].upstream == ("a",)


def test_multi_output_python_column_and_side_effect_references():
    graph = build(
        [
            tpl("summary", "{{ n_words }} {{ n_chars__debug }} {{ plan__usage }} {{ plan__reasoning }}"),
            py("stats", columns=["n_words", "n_chars"]),
            llm("plan", "{{ question }}"),
            py("after", depends_on=["stats"]),  # depends_on may name the multi-output column itself
        ]
    )
    assert graph.nodes["stats"].outputs == ("n_words", "n_chars")
    assert graph.nodes["summary"].upstream == ("plan", "stats")
    assert graph.nodes["summary"].inputs == ("n_chars__debug", "n_words", "plan__reasoning", "plan__usage")
    assert graph.nodes["after"].upstream == ("stats",)
    assert graph.producer("n_words") == "stats"
    assert graph.producer("n_chars__debug") == "stats"
    assert graph.producer("plan__usage") == "plan"
    assert graph.producer("question") is None and graph.producer("stats") is None
    assert graph.output_columns == ("n_words", "n_chars", "plan", "summary", "after")


def test_side_effect_prefers_the_longest_output_prefix():
    assert side_effect_owner("a__b__usage", {"a", "a__b"}) == "a__b"
    assert side_effect_owner("a__usage", {"a"}) == "a"
    assert side_effect_owner("__x", {""}) is None
    assert side_effect_owner("plain", {"plain"}) is None


def test_jinja_names_are_not_references():
    graph = build(
        [
            tpl(
                "t",
                "{% for x in range(3) %}{{ loop.index }}{{ x }}{% endfor %}{{ dict(a=1) }}{% set y = 2 %}{{ y }}",
            )
        ]
    )
    assert graph.nodes["t"].inputs == ()


def test_a_seed_field_named_like_a_jinja_global_is_still_an_input():
    graph = build([tpl("t", "{{ range }}")], fields=("range",))
    assert graph.nodes["t"].inputs == ("range",)


def test_unknown_seed_fields_are_tolerated_when_the_seed_could_not_be_read():
    graph = ColumnGraph.build([tpl("a", "{{ anything }}"), tpl("b", "{{ a }}")], None, "p.yaml")
    assert graph.nodes["b"].upstream == ("a",) and graph.nodes["a"].inputs == ("anything",)


def test_column_templates():
    assert column_templates(llm("p", "P", system="S")) == {"prompt": "P", "system": "S"}
    assert column_templates(llm("p", "P")) == {"prompt": "P"}
    assert column_templates(tpl("t", "T")) == {"template": "T"}
    assert column_templates(py("f")) == {}


# --- problems


def test_unknown_reference_suggests_the_closest_name():
    assert errors([tpl("a", "{{ questoin }}"), tpl("b", "{{ plan_usage }}"), llm("plan", "{{ question }}")]) == [
        "p.yaml: columns[0] 'a'.template: unknown column or seed field 'questoin' (did you mean 'question'?)",
        "p.yaml: columns[1] 'b'.template: unknown column or seed field 'plan_usage' (did you mean 'plan__usage'?)",
    ]


def test_unknown_reference_without_a_close_name_lists_the_known_ones():
    assert errors([tpl("a", "{{ zzz }}")]) == [
        "p.yaml: columns[0] 'a'.template: unknown column or seed field 'zzz' (known: question, table)"
    ]


def test_template_referring_to_a_multi_output_column_name():
    assert errors([py("stats", columns=["x", "y"]), tpl("t", "{{ stats }}")]) == [
        "p.yaml: columns[1] 't'.template: 'stats' is a python column writing x, y; refer to those columns"
    ]


def test_cycle_is_named_in_needs_order():
    assert errors([tpl("a", "{{ b }}"), tpl("b", "{{ a }}"), tpl("c", "{{ a }}")]) == [
        "p.yaml: columns[0] 'a': dependency cycle: a -> b -> a (each column needs the next)"
    ]


def test_separate_cycles_are_each_named_once():
    lines = errors(
        [
            tpl("a", "{{ b }}"),
            py("b", depends_on=["a"]),
            tpl("c", "{{ d }}"),
            tpl("d", "{{ e }}"),
            tpl("e", "{{ c }}"),
            tpl("f", "{{ e }}"),
        ]
    )
    assert lines == [
        "p.yaml: columns[0] 'a': dependency cycle: a -> b -> a (each column needs the next)",
        "p.yaml: columns[2] 'c': dependency cycle: c -> d -> e -> c (each column needs the next)",
    ]


def test_self_reference():
    assert errors([llm("plan", "{{ plan__usage }}"), py("f", depends_on=["f"])]) == [
        "p.yaml: columns[0] 'plan'.prompt: 'plan__usage' is this column's own output: a column cannot depend on itself",
        "p.yaml: columns[1] 'f'.depends_on[0]: 'f' is this column's own output: a column cannot depend on itself",
    ]


def test_duplicate_names_and_colliding_outputs():
    assert errors(
        [
            tpl("a", "x"),
            tpl("a", "y"),
            tpl("table", "z"),
            py("multi", columns=["a", "b"]),
            tpl("range", "r"),
            llm("plan", "p"),
            tpl("plan__usage", "u"),
        ]
    ) == [
        "p.yaml: columns[1] 'a'.name: duplicate column name 'a' (columns[0] has it too)",
        "p.yaml: columns[2] 'table': output column 'table' is also a seed field; choose another name",
        "p.yaml: columns[3] 'multi': output column 'a' is also written by columns[0] 'a'",
        "p.yaml: columns[4] 'range': output column 'range' shadows the template name 'range'; choose another name",
        "p.yaml: columns[6] 'plan__usage': output column 'plan__usage' is taken by the side-effect "
        "columns of columns[5] 'plan' (plan__*)",
    ]


def test_seed_field_in_a_columns_side_effect_namespace():
    assert errors([llm("plan", "{{ question }}")], fields=("question", "plan__usage")) == [
        "p.yaml: columns[0] 'plan': seed field 'plan__usage' collides with this column's side-effect columns "
        "(plan__*); rename the column"
    ]


def test_template_syntax_error_is_reported_by_the_graph():
    assert errors([llm("p", "ok", system="{% if %}")]) == [
        "p.yaml: columns[0] 'p'.system: template syntax error at line 1: Expected an expression, "
        "got 'end of statement block'"
    ]


def test_all_problems_at_once():
    lines = errors(
        [
            tpl("a", "{{ nope }}"),
            tpl("a", "dup"),
            tpl("b", "{{ c }}"),
            tpl("c", "{{ b }}"),
            tpl("d", "{{ "),
            tpl("", "empty name"),
        ]
    )
    assert [line.split(": ")[1] for line in lines] == [  # in column order
        "columns[0] 'a'.template",
        "columns[1] 'a'.name",
        "columns[2] 'b'",
        "columns[4] 'd'.template",
        "columns[5] ''.name",
    ]
    assert "unknown column or seed field 'nope'" in lines[0]
    assert "duplicate column name 'a'" in lines[1]
    assert "dependency cycle: b -> c -> b" in lines[2]
    assert "template syntax error at line 1" in lines[3]
    assert lines[4].endswith("column name is empty")


# --- templates


def test_template_helpers():
    assert template_references("{{ a }}{% for x in xs %}{{ x }}{{ loop.index }}{% endfor %}{{ range(2) }}") == {
        "a",
        "xs",
    }
    assert "range" in template_references("{{ range }}", include_implicit=True)
    assert compile_template("{{ a }}") is compile_template("{{ a }}")
    assert compile_template("Hi {{ name }}\n").render(name="Ann") == "Hi Ann\n"
    assert compile_template("{{ html }}").render(html="<b>") == "<b>"
    with pytest.raises(Exception, match="is undefined"):
        compile_template("{{ missing }}").render()
    from jinja2 import TemplateSyntaxError

    with pytest.raises(TemplateSyntaxError) as info:
        compile_template("ok\n\n{{ a }")
    assert syntax_error_message(info.value) == "template syntax error at line 3: unexpected '}'"
