"""LLM columns: a prompt (and optional system message) rendered over the row, sent to a model.

The output is the answer's text, or with `output_schema` the answer's JSON, parsed and validated.
Side-effect columns: `<column>__usage` (prompt, completion and total tokens) and, when the endpoint
returns reasoning text, `<column>__reasoning`.

The model's `ChatOpenAI` (see llm_client.py) is its configuration: endpoint, key, model name,
temperature, max_tokens, extra_body, timeout, and the aiohttp transport. The hot path goes neither
through `ChatOpenAI.ainvoke` nor through the openai client's request methods: `ModelClient.complete`
sends the body ChatOpenAI would send (`llm._default_params` and the messages) as a prebuilt request,
with the URL, headers and timeout the openai client ChatOpenAI built would use (worked out once per
client), through the httpx client given to ChatOpenAI (openai's aiohttp transport), and reads the
answer's JSON as is. Client CPU per call, engine included, measured by bench/llm_throughput.py (256 in
flight, simulator in its own process, 200 ms latency): this send ~0.5 ms; the openai client's `post`
~0.9 ms (most of the difference is openai's `_build_request`, per call: header merging, URL parsing,
building the request); `chat.completions.create` ~1.3 ms (it also walks the request's TypedDict
annotations); `ChatOpenAI.ainvoke` ~1.5-2 ms (message conversion, callbacks and a thread-pool hop per
answer). The raw message also keeps its `reasoning_content`, which ChatOpenAI drops. The other call
paths live in bench/llm_call_paths.py, as generators overriding `LLMGenerator.call`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from jinja2 import TemplateError

from treadle.engine.errors import CellError, RetryableCellError
from treadle.engine.generators.base import Generator, RunMode
from treadle.engine.generators.llm_client import ModelClient, model_client
from treadle.engine.limits import model_limit
from treadle.engine.pipeline import LLMColumn
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.response_cache import ResponseCache, request_key
from treadle.engine.schemas import instance_problem
from treadle.engine.templates import compile_template

_STRICT_UNSUPPORTED = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
    }
)


class Answer(NamedTuple):
    """What one chat completion answered, as a cell's values are made from it."""

    content: Any
    usage: dict[str, Any] | None
    """prompt, completion and total tokens; None when the endpoint sent no usage."""
    reasoning: str | None
    refusal: Any
    finish: Any
    """The choice's finish_reason ("length": cut off at max_tokens)."""


def build_llm_generator(name: str, config: LLMColumn, loaded: LoadedPipeline) -> Generator:
    return LLMGenerator(name, config, model_client(config.model, loaded))


class LLMGenerator(Generator):
    mode = RunMode.ASYNC
    limit_key: str

    def __init__(self, name: str, config: LLMColumn, client: ModelClient) -> None:
        super().__init__(name, (name,))
        self.client = client
        self.limit_key = model_limit(config.model)
        self.prompt = compile_template(config.prompt)
        self.system = compile_template(config.system) if config.system is not None else None
        self.schema = config.output_schema
        self._usage_key = f"{name}__usage"
        self._reasoning_key = f"{name}__reasoning"
        self._response_format: dict[str, Any] | None = None
        self._validator: Any = None
        if self.schema is not None:
            import jsonschema

            self._response_format = {
                "type": "json_schema",
                "json_schema": {"name": schema_name(name), "schema": self.schema, "strict": strict_ok(self.schema)},
            }
            self._validator = jsonschema.validators.validator_for(self.schema)(self.schema)
        self._params: dict[str, Any] | None = None
        self._params_llm: Any = None
        self._body: dict[str, Any] = {}
        self.cache: ResponseCache | None = None
        """The response cache, when this column's answers are reused (set by the run before it starts)."""
        self._model = config.model
        self._overrides = {
            key: value
            for key, value in (("temperature", config.temperature), ("max_completion_tokens", config.max_tokens))
            if value is not None
        }
        """The column's own temperature and max tokens, over its model's (the key ChatOpenAI sends)."""

    async def astart(self) -> None:
        self._request_params(self.client.state().llm)

    # ---- one cell --------------------------------------------------------------------------------

    async def agenerate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        messages = self._messages(row)
        client = self.client
        state = client.state()
        try:
            answer = await self.call(state, messages)
        except Exception as exc:
            error = client.failure(state, exc)
            if error is None:
                raise
            raise error from None
        client.succeeded(state)
        value = self._value(answer.content, answer.refusal, answer.finish)
        values = self._values(value, answer.usage, answer.reasoning)
        if self.cache is not None:  # only an accepted answer (complete, valid JSON for a schema) is kept
            stored = {"content": answer.content, "usage": answer.usage, "reasoning": answer.reasoning}
            self.cache.put(request_key(self.client.base_url, {**self._body, "messages": messages}), stored)
        return values

    def cached(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cell's values from the response cache, or None (not cached, or no cache for this column).
        Called on the engine loop when the cell becomes ready: a hit takes no model slot or budget."""
        cache = self.cache
        if cache is None:
            return None
        try:
            messages = self._messages(row)
        except CellError:  # the cell fails when it runs, as it would without a cache
            return None
        self._request_params(self.client.state().llm)  # a ctx.llm caller's body is made on its first call
        answer = cache.get(request_key(self.client.base_url, {**self._body, "messages": messages}))
        if answer is None:
            return None
        usage = answer["usage"]
        cache.stats.saved(self._model, usage)
        content = answer["content"]
        # Validated when it was stored, against the schema that is part of its key.
        return self._values(content if self.schema is None else json.loads(content), usage, answer["reasoning"])

    def _values(self, value: Any, usage: dict[str, Any] | None, reasoning: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {self.name: value}
        if usage is not None:
            values[self._usage_key] = usage
        if reasoning:
            values[self._reasoning_key] = reasoning
        return values

    def _messages(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        try:
            prompt = self.prompt.render(row)
            system = self.system.render(row) if self.system is not None else None
        except TemplateError as exc:
            raise CellError(f"prompt template: {exc}") from None
        if system is None:
            return [{"role": "user", "content": prompt}]
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    def _request_params(self, llm: Any) -> dict[str, Any]:
        """What ChatOpenAI would send besides the messages (model, temperature, max tokens, extra_body,
        and response_format for a JSON column); worked out once per client."""
        if self._params is None or self._params_llm is not llm:
            try:
                params = dict(llm._default_params)
            except AttributeError:  # pragma: no cover - a langchain-openai without it
                params = {"model": llm.model_name, "temperature": llm.temperature, "max_tokens": llm.max_tokens}
                params.update({"extra_body": llm.extra_body} if llm.extra_body else {})
                params = {k: v for k, v in params.items() if v is not None}
            params.pop("stream", None)
            if "max_completion_tokens" in self._overrides:
                params.pop("max_tokens", None)
            params.update(self._overrides)
            if self._response_format is not None:
                params["response_format"] = self._response_format
            self._params, self._params_llm = params, llm
            # The body as it goes on the wire: extra_body merged at the top level, as the SDK does.
            body = {k: v for k, v in params.items() if k != "extra_body"}
            body.update(params.get("extra_body") or {})
            self._body = body
        return self._params

    async def call(self, state: Any, messages: list[dict[str, str]]) -> Answer:
        """One chat completion, sent as a prebuilt request (see the module docstring) with the client's
        `state`; a failure raises whatever the transport raised, for `ModelClient.failure` to read."""
        self._request_params(state.llm)
        data = await self.client.complete(state, {**self._body, "messages": messages})
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            shape = "an empty choice list" if isinstance(data, dict) else "not a chat completion"
            raise RetryableCellError(f"the endpoint sent a malformed response ({shape})") from None
        u = data.get("usage")
        usage = (
            {
                "prompt_tokens": u.get("prompt_tokens"),
                "completion_tokens": u.get("completion_tokens"),
                "total_tokens": u.get("total_tokens"),
            }
            if isinstance(u, dict)
            else None
        )
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        return Answer(
            message.get("content"),
            usage,
            reasoning if isinstance(reasoning, str) else None,
            message.get("refusal"),
            choice.get("finish_reason"),
        )

    def _value(self, content: Any, refusal: Any, finish: Any) -> Any:
        if refusal:
            raise CellError(f"the model refused: {' '.join(str(refusal).split())}")
        if not isinstance(content, str):
            raise RetryableCellError("the endpoint answered without text content")
        if self.schema is None:
            return content
        cut = " (the answer was cut off at max_tokens)" if finish == "length" else ""
        try:
            value = json.loads(content)
        except json.JSONDecodeError as exc:
            raise RetryableCellError(f"output is not valid JSON: {exc}{cut}") from None
        if not self._validator.is_valid(value):
            raise RetryableCellError(f"output does not match output_schema: {instance_problem(self.schema, value)}")
        return value

    async def aclose(self) -> None:
        await self.client.aclose()


def schema_name(column: str) -> str:
    """The column's name as a response_format name (letters, digits, _ and -; at most 64)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", column)[:64] or "output"


def strict_ok(schema: Any) -> bool:
    """Whether OpenAI's strict structured outputs accept `schema` as it is: an object at the top, every
    object closed (`additionalProperties: false`) with every property required, no unsupported keyword.
    Otherwise the request goes non-strict and treadle's own validation holds the line."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return False
    return _strict_node(schema)


def _strict_node(node: Any) -> bool:
    if isinstance(node, bool):
        return False
    if not isinstance(node, dict):
        return True
    if _STRICT_UNSUPPORTED & node.keys():
        return False
    types = node.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types) or "properties" in node:
        properties = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return False
        if set(node.get("required") or ()) != set(properties):
            return False
        if not all(_strict_node(sub) for sub in properties.values()):
            return False
    for key in ("items", "additionalProperties"):
        sub = node.get(key)
        if isinstance(sub, dict) and not _strict_node(sub):
            return False
    for key in ("anyOf", "prefixItems"):
        if not all(_strict_node(sub) for sub in node.get(key) or ()):
            return False
    definitions = [*(node.get("$defs") or {}).values(), *(node.get("definitions") or {}).values()]
    return all(_strict_node(sub) for sub in definitions)
