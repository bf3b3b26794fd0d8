"""The completion body's bytes: the plain answer's quick encoding gives exactly what encoding its dicts does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from treadle.sim.replies import make_reply, parse_request
from treadle.sim.wire import completion_body, dumps


def _encoded_dicts(body: bytes, ident: str, created: int) -> bytes:
    """The OpenAI chat.completion for the request in `body`, encoded from its dicts (the general way)."""
    request = parse_request(body)
    reply = make_reply(request, None, False)
    message = {"role": "assistant", "content": reply.content, "refusal": None}
    choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}]
    usage = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    completion = {"id": ident, "object": "chat.completion", "created": created, "model": request.model}
    return dumps({**completion, "choices": choices, "usage": usage, "system_fingerprint": "treadle-sim"})


@pytest.mark.parametrize(
    "request_body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "What is 2 + 2?"}]},
        {"model": 'modèle "x"', "messages": [{"role": "user", "content": 'Ünïcode, "quotes", \\ and\nlines 😀'}]},
        {"model": "m", "messages": [{"role": "user", "content": "a long question " * 20}], "max_tokens": 3},
    ],
    ids=["ascii", "escapes", "truncated"],
)
def test_plain_completion_body_is_the_dicts_encoding(request_body: dict[str, Any]) -> None:
    body = json.dumps(request_body).encode()
    reply = make_reply(parse_request(body), None, False)
    sent = completion_body(parse_request(body), reply, "chatcmpl-sim7", 1_700_000_000)
    assert sent == _encoded_dicts(body, "chatcmpl-sim7", 1_700_000_000)
    assert json.loads(sent)["choices"][0]["message"]["content"] == reply.content


def test_digest_depends_on_the_messages_only() -> None:
    first = parse_request(b'{"model": "a", "messages": [{"role": "user", "content": "hi"}]}')
    same = parse_request(b'{"messages": [{"content": "hi", "role": "user"}], "model": "b", "n": 2}')
    other = parse_request(b'{"model": "a", "messages": [{"role": "user", "content": "hello"}]}')
    assert first.digest == same.digest != other.digest
