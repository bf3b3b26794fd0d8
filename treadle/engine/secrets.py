"""Keeping API keys out of every message, log, trace and file treadle writes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from dotenv import dotenv_values

KEY_SHAPED = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-]{6,}")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization|api[-_]?key|x-api-key)(\"?\s*[:=]\s*\"?)(bearer\s+)?[^\s\"',}]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secrets, Authorization/api-key values, or anything shaped like a key."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}***", text)
    return KEY_SHAPED.sub(lambda m: m.group(1) + "-***", text)


class Redactor:
    """Redacts a fixed set of secrets (the pipeline's API keys) plus key-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return redact(text, self.secrets)


def read_api_key(variable: str, base_dir: Path) -> str | None:
    """The key from the environment, else from `.env` beside the pipeline (os.environ is not changed)."""
    value = os.environ.get(variable)
    if value:
        return value
    dotenv = base_dir / ".env"
    if dotenv.is_file():
        value = dotenv_values(dotenv, interpolate=False).get(variable)
        if value:
            return value
    return None
