"""OpenAI wire shapes: completion bodies, stream chunks, model lists and error bodies (as bytes)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .replies import CHARS_PER_TOKEN, ChatRequest, Reply

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_PIECE = re.compile(r"\s*\S+\s*|\s+")  # a word with its surrounding spaces: one stream delta each


def dumps(value: Any) -> bytes:
    return _DUMPS(value).encode()


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def models_body(names: tuple[str, ...]) -> bytes:
    models = [{"id": name, "object": "model", "created": 0, "owned_by": "treadle-sim"} for name in names]
    return dumps({"object": "list", "data": models})


def completion_body(request: ChatRequest, reply: Reply, ident: str, created: int) -> bytes:
    if request.n == 1 and reply.reasoning is None and reply.tool_call is None:
        return _plain_completion_body(request, reply, ident, created)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_call is not None:
        message["tool_calls"] = [_tool_call(ident, reply.tool_call)]
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        for i in range(request.n)
    ]
    return dumps(
        {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": choices,
            "usage": usage(reply),
            "system_fingerprint": "treadle-sim",
        }
    )


def _plain_completion_body(request: ChatRequest, reply: Reply, ident: str, created: int) -> bytes:
    """completion_body's bytes for one plain answer, made without its dicts: the simulator's commonest
    answer, whose encoding was a tenth of its CPU per request under load."""
    prompt, completion = reply.prompt_tokens, reply.completion_tokens
    return (
        f'{{"id":{_DUMPS(ident)},"object":"chat.completion","created":{created},"model":{_DUMPS(request.model)},'
        f'"choices":[{{"index":0,"message":{{"role":"assistant","content":{_DUMPS(reply.content)},"refusal":null}},'
        f'"logprobs":null,"finish_reason":{_DUMPS(reply.finish_reason)}}}],"usage":{{"prompt_tokens":{prompt},'
        f'"completion_tokens":{completion},"total_tokens":{prompt + completion},'
        f'"completion_tokens_details":{{"reasoning_tokens":{reply.reasoning_tokens}}}}},"system_fingerprint":"treadle-sim"}}'
    ).encode()


def stream_events(request: ChatRequest, reply: Reply, ident: str, created: int) -> Iterator[tuple[bytes, float]]:
    """SSE events for a streamed answer, each with the tokens it carries (for pacing)."""
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": request.model}
    extra = {"usage": None} if request.include_usage else {}

    def event(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + dumps({**head, "choices": [choice], **extra}) + b"\n\n"

    for index in range(request.n):
        yield event({"role": "assistant", "content": "", "refusal": None}, index=index), 0
        if reply.reasoning:
            for piece in _PIECE.findall(reply.reasoning):
                yield event({"reasoning_content": piece}, index=index), _tokens(piece)
        if reply.tool_call is not None:
            call = {"index": 0, **_tool_call(ident, reply.tool_call)}
            yield event({"tool_calls": [call]}, index=index), _tokens(reply.tool_call[1])
        for piece in _PIECE.findall(reply.content or ""):
            yield event({"content": piece}, index=index), _tokens(piece)
        yield event({}, reply.finish_reason, index=index), 0
    if request.include_usage:
        yield b"data: " + dumps({**head, "choices": [], "usage": usage(reply)}) + b"\n\n", 0
    yield b"data: [DONE]\n\n", 0


def usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
    }


def _tool_call(ident: str, call: tuple[str, str]) -> dict[str, Any]:
    return {
        "id": f"call_{ident.removeprefix('chatcmpl-')}",
        "type": "function",
        "function": {"name": call[0], "arguments": call[1]},
    }


def _tokens(piece: str) -> float:
    return len(piece) / CHARS_PER_TOKEN  # fractional: pacing sums many small pieces
