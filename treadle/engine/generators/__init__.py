"""Generators by column kind, and the factory that builds one per graph node."""

from __future__ import annotations

from collections.abc import Callable

from treadle.engine.functions import resolve_function
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.generators.batch import BatchGenerator
from treadle.engine.generators.filter import ExpressionFilter, FunctionFilter
from treadle.engine.generators.python import PythonGenerator
from treadle.engine.generators.template import TemplateGenerator
from treadle.engine.pipeline import FilterColumn, PythonColumn, TemplateColumn
from treadle.engine.pipeline_validation import LoadedPipeline

__all__ = ["BatchGenerator", "Generator", "PythonGenerator", "RunMode", "TemplateGenerator", "build_generators"]


def build_generators(loaded: LoadedPipeline, import_clients: bool = False) -> list[Generator]:
    """One generator per node, in the graph's topological order. `import_clients`: import the model
    client library now, on the thread that builds the run: it takes ~1.5 s, which on the engine loop
    (at the first call) would stall the first cells and count against their timeouts."""
    if import_clients and loaded.config.models:
        import langchain_openai  # noqa: F401

    generators: list[Generator] = []
    for name in loaded.graph.order:
        node = loaded.graph.nodes[name]
        config = node.config
        if isinstance(config, FilterColumn):
            generators.append(_filter_generator(loaded, name, config))
        elif isinstance(config, PythonColumn) and config.batch:
            function = resolve_function(config.function, loaded.base_dir)
            wanted = _frame_keys(loaded, name)
            generators.append(BatchGenerator(name, node.outputs, function, config.function, config.batch_size, wanted))
        elif isinstance(config, PythonColumn):
            function = resolve_function(config.function, loaded.base_dir)
            generators.append(PythonGenerator(name, node.outputs, function))
        elif isinstance(config, TemplateColumn):
            generators.append(TemplateGenerator(name, config.template))
        else:
            from treadle.engine.generators.llm import build_llm_generator

            generators.append(build_llm_generator(name, config, loaded))
    return generators


def _filter_generator(loaded: LoadedPipeline, name: str, config: FilterColumn) -> Generator:
    body = config.expression_body()
    if body is not None:
        return ExpressionFilter(name, body)
    assert config.function is not None  # validation requires one of the two
    function = resolve_function(config.function, loaded.base_dir)
    if config.batch:
        return BatchGenerator(name, (), function, config.function, config.batch_size, _frame_keys(loaded, name))
    return FunctionFilter(name, function)


def _frame_keys(loaded: LoadedPipeline, name: str) -> Callable[[str], bool]:
    """Whether a row's key goes into the DataFrame of batch column `name`: a seed field, or a column
    (or side-effect column) of a node it depends on, directly or not."""
    graph = loaded.graph
    ancestors: set[str] = set()
    frontier = list(graph.nodes[name].upstream)
    while frontier:
        upstream = frontier.pop()
        if upstream not in ancestors:
            ancestors.add(upstream)
            frontier.extend(graph.nodes[upstream].upstream)
    seed_fields = set(loaded.seed.fields)
    return lambda key: key in seed_fields or graph.producer(key) in ancestors
