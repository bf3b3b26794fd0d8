"""From a chat completion request body to the answer's content (book, schema, tool call or echo).

The content depends only on the request (never on the attempt or the clock), so a retried prompt
gets the same answer and its token cost is known before rate limits are checked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from dataclasses import dataclass
from typing import Any

from .book import Book
from .schema_json import synthesize

CHARS_PER_TOKEN = 4


class RequestError(ValueError):
    """The request body is not a usable chat completion request (-> 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# Not frozen, like Reply and faults.Fate: made for every request, and a frozen dataclass sets each field
# through object.__setattr__: ~7% of the simulator's instructions per request for the three.
@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    response_format: dict[str, Any] | None
    forced_tool: dict[str, Any] | None  # the function a tool_choice demands, if any
    max_tokens: int | None
    n: int

    @functools.cached_property
    def digest(self) -> str:
        """Identifies the conversation: same messages, same digest (made on first use: only a seed or a
        schema needs it, and its canonical JSON costs as much as parsing the request)."""
        canonical = json.dumps(self.messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()

    @property
    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""


@dataclass(slots=True)
class Reply:
    content: str | None
    reasoning: str | None
    tool_call: tuple[str, str] | None  # (function name, JSON arguments)
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


def parse_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except ValueError:
        raise RequestError("We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", "model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError("'messages' must be a non-empty array of objects", "messages")
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError("max_tokens must be a positive integer", "max_tokens")
    n = data.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise RequestError("n must be an integer between 1 and 128", "n")
    response_format = data.get("response_format")
    stream_options = data.get("stream_options") or {}
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(data.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
        response_format=response_format if isinstance(response_format, dict) else None,
        forced_tool=_forced_tool(data.get("tools"), data.get("tool_choice")),
        max_tokens=max_tokens,
        n=n,
    )


def make_reply(request: ChatRequest, book: Book | None, always_reason: bool) -> Reply:
    message = request.last_user_message
    found = book.answer(message, request.model) if book is not None else None
    reasoning = found.reasoning if found is not None else None
    if reasoning is None and always_reason:
        reasoning = f"Simulated reasoning about: {message[:80]}"
    tool_call = None
    if request.forced_tool is not None:
        params = request.forced_tool.get("parameters") or {"type": "object", "properties": {}}
        args = found.reply if found is not None else _synth_json(params, request, "tools")
        tool_call = (request.forced_tool["name"], args)
        content = None
    elif found is not None:
        content = found.reply  # for a json_schema request the book's author vouches for its validity
    else:
        content = _default_content(request, message)
    finish = "tool_calls" if tool_call else "stop"
    if content is not None and request.max_tokens is not None and count_tokens(content) > request.max_tokens:
        content = content[: request.max_tokens * CHARS_PER_TOKEN]
        finish = "length"
    reasoning_tokens = count_tokens(reasoning) if reasoning else 0
    answer_tokens = count_tokens(content or (tool_call[1] if tool_call else ""))
    return Reply(
        content=content,
        reasoning=reasoning,
        tool_call=tool_call,
        finish_reason=finish,
        prompt_tokens=_prompt_tokens(request.messages),
        completion_tokens=request.n * (answer_tokens + reasoning_tokens),
        reasoning_tokens=request.n * reasoning_tokens,
    )


def count_tokens(text: str) -> int:
    """About 4 characters a token, at least 1: close enough for budgets and rate limits."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    # Roughly OpenAI's accounting: a few tokens of framing per message plus the text.
    return 3 + sum(4 + math.ceil(len(content_text(m.get("content"))) / CHARS_PER_TOKEN) for m in messages)


def _default_content(request: ChatRequest, message: str) -> str:
    fmt = request.response_format or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return _synth_json(schema, request, "response_format")
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": f"Simulated answer to: {message[:80]}"})
    return f"Simulated answer to: {message[:80]}"


def _synth_json(schema: dict[str, Any], request: ChatRequest, param: str) -> str:
    # Seeded by the conversation: the same prompt always gets the same JSON.
    try:
        value = synthesize(schema, random.Random(request.digest))
    except RecursionError:  # e.g. an object that requires itself: no finite value exists
        raise RequestError(f"Invalid schema in {param}: it has no finite instance", param) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestError(f"Invalid schema in {param}: {exc!r}", param) from None
    return json.dumps(value, ensure_ascii=False)


def _forced_tool(tools: Any, choice: Any) -> dict[str, Any] | None:
    """The function the client insists on ("required" or a named function), else None."""
    declared = [t.get("function") for t in tools or [] if isinstance(t, dict) and t.get("type") == "function"]
    functions: list[dict[str, Any]] = [f for f in declared if isinstance(f, dict) and isinstance(f.get("name"), str)]
    if not functions:
        return None
    if choice == "required":
        return functions[0]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((f for f in functions if f["name"] == name), None)
    return None
