"""Keep the bot token and other secrets out of logs and stored error texts.

aiohttp puts the request URL into some of its errors (``TooManyRedirects``, ``InvalidURL``,
``ClientResponseError``), and the Bot API URL carries the token: ``/bot<token>/<method>``. Such an
error, logged or written to ``outbox.last_error`` or ``refunds.detail``, would hand the bot to
whoever reads the logs or the database. This module imports nothing of ours, so every layer
(payments included) may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "<redacted>"

# A Bot API token: the bot's numeric id, a colon, a secret of 30-odd URL-safe characters. The
# id is kept (it is public: it is the bot's user id), the secret is not.
_TOKEN = re.compile(r"(?:(?<=bot)|(?<![\w-]))(\d{3,20}):[A-Za-z0-9_-]{20,}(?![\w-])")

_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact these exact values too (webhook secret, provider tokens, API keys)."""
    for value in values:
        # Short values would redact ordinary words; real secrets are long.
        if value and len(value.strip()) >= 8:
            _secrets.add(value.strip())


def redact(text: str) -> str:
    """``text`` with every bot token and registered secret replaced by ``<redacted>``."""
    if not text:
        return text
    text = _TOKEN.sub(lambda match: f"{match.group(1)}:{REDACTED}", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_error(error: BaseException) -> str:
    """``"TypeName: message"`` of an error, safe to store or show."""
    return redact(f"{type(error).__name__}: {error}")
