"""Locale-aware formatting of money, dates and times (Babel), plus HTML escaping for replies."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_datetime as babel_format_datetime
from babel.numbers import format_currency, get_currency_precision

STARS = "XTR"


def babel_locale(locale: str) -> str:
    return locale.replace("-", "_")


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    if currency == STARS:
        return Decimal(amount_minor)
    return Decimal(amount_minor).scaleb(-get_currency_precision(currency))


# Babel takes a few hundred microseconds per call and every card, invoice, access message and
# reminder formats the same few prices and start times again: both are pure, so they are cached.
@lru_cache(maxsize=4096)
def money(amount_minor: int, currency: str, locale: str) -> str:
    """``1999, "USD", "en"`` -> ``$19.99``; Stars -> ``150 ⭐``."""
    if currency == STARS:
        return f"{amount_minor} ⭐"
    return format_currency(
        minor_to_decimal(amount_minor, currency), currency, locale=babel_locale(locale)
    )


@lru_cache(maxsize=4096)
def local_datetime(moment: datetime, timezone: str, locale: str) -> str:
    """A moment in a time zone, with its offset: ``Dec 5, 2026, 6:30 PM (UTC+01:00)``."""
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    text = babel_format_datetime(local, format="medium", tzinfo=zone, locale=babel_locale(locale))
    # Babel's medium format has seconds, which a webinar time never needs.
    text = _drop_seconds(text, local)
    return f"{text} ({utc_offset(local)})"


def utc_offset(local: datetime) -> str:
    """``UTC+01:00``, ``UTC-03:00``, ``UTC+05:30``; plain ``UTC`` for zero."""
    delta = local.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta else 0
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def _drop_seconds(text: str, local: datetime) -> str:
    seconds = f":{local.second:02d}"
    index = text.rfind(seconds)
    return text[:index] + text[index + len(seconds) :] if index != -1 else text


def escape(value: object) -> str:
    """Escape user-supplied text for Telegram's HTML parse mode."""
    return html.escape(str(value), quote=False)


MESSAGE_LIMIT = 4096  # Telegram's limit on a message's text, counted after HTML parsing
CAPTION_LIMIT = 1024  # and on a file's caption, counted the same way
_TAG = re.compile(r"<[^>]*>")


def visible_length(text: str) -> int:
    """The length Telegram holds against its limits: the text as HTML parsing leaves it (no
    tags, entities decoded), in UTF-16 code units (an emoji counts two)."""
    plain = html.unescape(_TAG.sub("", text))
    return len(plain.encode("utf-16-le")) // 2


def page_bounds(
    blocks: Sequence[str], limit: int, *, separator: str = "\n", most: int | None = None
) -> list[tuple[int, int]]:
    """Split ``blocks`` into pages of whole blocks, ``[(start, end), ...]``, each page joined
    with ``separator`` within ``limit`` visible characters (and at most ``most`` blocks).

    Blocks are never cut, so a tag or an entity opened in one is closed on the same page.
    A block longer than ``limit`` alone gets a page of its own: callers keep blocks short.
    """
    pages: list[tuple[int, int]] = []
    start, used = 0, 0
    gap = visible_length(separator)
    for index, block in enumerate(blocks):
        size = visible_length(block)
        full = most is not None and index - start >= most
        if index > start and (used + gap + size > limit or full):
            pages.append((start, index))
            start, used = index, size
        else:
            used += size if index == start else gap + size
    if blocks:
        pages.append((start, len(blocks)))
    return pages
