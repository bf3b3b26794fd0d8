"""The response book: regex rules with templated replies and reasoning, checked at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from treadle.sim import BookError, SimConfig, Simulator, load_book

BOOK = r"""
rules:
  - match: 'capital of (?P<country>[A-Z]\w+)'  # single quotes: YAML leaves backslashes alone
    reply: "The capital of {{ country }} is {{ {'France': 'Paris'}.get(country, 'unknown') }}."
    reasoning: "Recalling {{ country }} for {{ model }}."
  - match: '(?i)^shout (?P<word>\w+)'
    reply: "{{ word | upper }}!"
  - match: "json please"
    reply: '{"fixed": true}'
  - match: ".*"
    reply: "fallback for: {{ message }}"
"""


@pytest.fixture
def book_path(tmp_path: Path) -> Path:
    path = tmp_path / "book.yaml"
    path.write_text(BOOK)
    return path


async def ask(session: aiohttp.ClientSession, url: str, content: str, **extra: Any) -> dict[str, Any]:
    request = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    async with session.post(f"{url}/chat/completions", json=request) as response:
        assert response.status == 200
        return (await response.json())["choices"][0]["message"]


async def test_rules_render_groups_and_reasoning(session: aiohttp.ClientSession, book_path: Path) -> None:
    async with Simulator(SimConfig(book=str(book_path))) as url:
        capital = await ask(session, url, "What is the capital of France?")
        shout = await ask(session, url, "SHOUT hello")
        other = await ask(session, url, "anything else")
    assert capital["content"] == "The capital of France is Paris."
    assert capital["reasoning_content"] == "Recalling France for m."
    assert shout == {"role": "assistant", "content": "HELLO!", "refusal": None}  # no reasoning key
    assert other["content"] == "fallback for: anything else"


async def test_rule_matches_the_last_user_message_only(session: aiohttp.ClientSession, book_path: Path) -> None:
    messages = [
        {"role": "system", "content": "shout nothing"},
        {"role": "user", "content": "capital of France"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": [{"type": "text", "text": "shout again"}]},
    ]
    request = {"model": "m", "messages": messages}
    async with (
        Simulator(SimConfig(book=str(book_path))) as url,
        session.post(f"{url}/chat/completions", json=request) as response,
    ):
        assert (await response.json())["choices"][0]["message"]["content"] == "AGAIN!"


async def test_book_reply_is_returned_as_is_for_json_schema(session: aiohttp.ClientSession, book_path: Path) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    async with Simulator(SimConfig(book=str(book_path))) as url:
        message = await ask(session, url, "json please", response_format=fmt)
    assert message["content"] == '{"fixed": true}'


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("rules: [", "not valid YAML"),
        ("rulez: []", "expected a mapping with a 'rules' list"),
        ("rules: [{match: 'a'}]", "rules[0]: 'reply' must be a string"),
        ("rules: [{match: '(', reply: 'x'}]", "bad regex"),
        ("rules: [{match: 'a', reply: '{{ oops'}]", "bad template"),
        ("rules: [{match: '(?P<who>a)', reply: '{{ whom }}'}]", "unknown variable(s) whom"),
        ("rules: [{match: 'a', reply: 'x', extra: 1}]", "unknown key(s) extra"),
    ],
)
def test_bad_books_fail_at_load_with_a_clear_message(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BookError) as caught:
        load_book(path)
    assert complaint in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_book_file(tmp_path: Path) -> None:
    with pytest.raises(BookError, match="cannot read response book"):
        load_book(tmp_path / "absent.yaml")


async def test_sandbox_refusal_is_a_500_not_a_crash(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("rules: [{match: '.', reply: '{{ message.__class__.__mro__ }}'}]")
    async with Simulator(SimConfig(book=str(path))) as url:
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{url}/chat/completions", json=request) as response:
            assert response.status == 500
            assert (await response.json())["error"]["type"] == "server_error"
