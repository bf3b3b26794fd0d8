"""Generators by column kind, and the factory that builds one per graph node."""

from __future__ import annotations

from treadle.engine.functions import resolve_function
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.generators.python import PythonGenerator
from treadle.engine.generators.template import TemplateGenerator
from treadle.engine.pipeline import PythonColumn, TemplateColumn
from treadle.engine.pipeline_validation import LoadedPipeline

__all__ = ["Generator", "PythonGenerator", "RunMode", "TemplateGenerator", "build_generators"]


def build_generators(loaded: LoadedPipeline) -> list[Generator]:
    """One generator per node, in the graph's topological order."""
    generators: list[Generator] = []
    for name in loaded.graph.order:
        node = loaded.graph.nodes[name]
        config = node.config
        if isinstance(config, PythonColumn):
            function = resolve_function(config.function, loaded.base_dir)
            generators.append(PythonGenerator(name, node.outputs, function))
        elif isinstance(config, TemplateColumn):
            generators.append(TemplateGenerator(name, config.template))
        else:
            from treadle.engine.generators.llm import build_llm_generator

            generators.append(build_llm_generator(name, config, loaded))
    return generators
