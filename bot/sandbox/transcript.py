"""A human-readable log of everything that happens on the sandbox server.

Lines are formatted when the event happens (they are short) and indexed by
chat, so a failing test can print the tail of one user's conversation cheaply.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Transcript",
    "TranscriptLine",
    "describe_message",
    "format_amount",
    "format_keyboard",
]

# Currencies whose amounts Telegram expresses without a fractional part.
_ZERO_DECIMAL = frozenset(
    {"XTR", "JPY", "KRW", "VND", "CLP", "ISK", "PYG", "UGX", "HUF", "TWD", "IDR", "UZS"}
)


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One rendered event; ``chat_id`` is ``None`` for server-wide events."""

    timestamp: float
    chat_id: int | None
    text: str


class Transcript:
    """An append-only, chat-indexed list of :class:`TranscriptLine`."""

    __slots__ = ("_by_chat", "_lines")

    def __init__(self) -> None:
        self._lines: list[TranscriptLine] = []
        self._by_chat: dict[int, list[TranscriptLine]] = {}

    def add(self, text: str, chat_id: int | None = None) -> None:
        """Record one event."""
        line = TranscriptLine(time.time(), chat_id, text)
        self._lines.append(line)
        if chat_id is not None:
            bucket = self._by_chat.get(chat_id)
            if bucket is None:
                self._by_chat[chat_id] = [line]
            else:
                bucket.append(line)

    def lines(self, chat_id: int | None = None) -> list[TranscriptLine]:
        """All lines, or only those of one chat."""
        if chat_id is None:
            return list(self._lines)
        return list(self._by_chat.get(chat_id, ()))

    def render(self, chat_id: int | None = None, last: int | None = None) -> str:
        """The conversation as text, optionally for one chat and only the last lines."""
        lines = self._lines if chat_id is None else self._by_chat.get(chat_id, [])
        if last is not None:
            lines = lines[-last:] if last > 0 else []
        return "\n".join(line.text for line in lines)

    def __len__(self) -> int:
        return len(self._lines)


def format_amount(amount: int, currency: str) -> str:
    """``10000, "RUB"`` → ``"100.00 RUB"``; Stars and zero-decimal currencies stay whole."""
    if currency in _ZERO_DECIMAL:
        return f"{amount} {currency}"
    return f"{amount / 100:.2f} {currency}"


def format_keyboard(markup: Mapping[str, Any] | None) -> str:
    """Render a reply markup as ``[button] [button]`` (rows separated by ``|``)."""
    if not markup:
        return ""
    if "inline_keyboard" in markup:
        return _rows(markup["inline_keyboard"])
    if "keyboard" in markup:
        return "⌨ " + _rows(markup["keyboard"])
    if markup.get("remove_keyboard"):
        return "⌨ ✗"
    if markup.get("force_reply"):
        return "↩ force reply"
    return ""


def _rows(rows: Iterable[Iterable[Any]]) -> str:
    rendered = []
    for row in rows:
        buttons = (
            f"[{button['text'] if isinstance(button, Mapping) else button}]" for button in row
        )
        rendered.append(" ".join(buttons))
    return " | ".join(rendered)


def describe_message(message: Mapping[str, Any], markup: Mapping[str, Any] | None = None) -> str:
    """A one-line summary of a Telegram message object's content.

    ``markup`` overrides ``message["reply_markup"]``: Telegram only echoes
    inline keyboards in messages, but reply keyboards are worth showing too.
    """
    if "text" in message:
        body = _indent(message["text"])
    elif "document" in message:
        document = message["document"]
        body = f"📄 {document.get('file_name', 'file')} (document)"
    elif "photo" in message:
        size = message["photo"][-1]
        body = f"🖼 photo {size['width']}×{size['height']}"
    elif "invoice" in message:
        invoice = message["invoice"]
        amount = format_amount(invoice["total_amount"], invoice["currency"])
        body = f'🧾 invoice "{invoice["title"]}" {amount}'
    elif "successful_payment" in message:
        payment = message["successful_payment"]
        amount = format_amount(payment["total_amount"], payment["currency"])
        body = f"💳 paid {amount}"
    else:
        body = "(message)"
    caption = message.get("caption")
    if caption:
        body += f" — {_indent(caption)}"
    keyboard = format_keyboard(markup if markup is not None else message.get("reply_markup"))
    if keyboard:
        body += f"   {keyboard}"
    return body


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")
