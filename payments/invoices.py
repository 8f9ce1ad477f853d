"""Build the keyword arguments for ``bot.send_invoice`` / ``bot.create_invoice_link``.

A pure function: no I/O, no bot. It validates the input against Telegram's limits and the
rules of each payment method so a bad invoice fails here with a clear ``ValueError`` rather
than as an opaque ``Bad Request`` from Telegram in front of a buyer.

    kwargs = build_invoice(PaymentMethod.STARS, chat_id=42, title="Webinar",
                           description="Live session", payload="order:17",
                           amount_minor=250, currency="XTR", provider_token=None,
                           label="Ticket")
    await bot.send_invoice(**kwargs)

Pass ``chat_id=None`` to get arguments for ``bot.create_invoice_link`` (which has none).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from aiogram.types import LabeledPrice

from payments.base import PaymentMethod, format_amount, normalize_currency

__all__ = [
    "DEFAULT_CURRENCIES",
    "DESCRIPTION_MAX",
    "ELLIPSIS",
    "PAYLOAD_MAX_BYTES",
    "RECEIPT_ITEM_DESCRIPTION_MAX",
    "TITLE_MAX",
    "ReceiptSpec",
    "build_invoice",
    "truncate_text",
    "utf16_len",
]

TITLE_MAX: Final = 32
DESCRIPTION_MAX: Final = 255
PAYLOAD_MAX_BYTES: Final = 128
# YooKassa's limit for receipt.items[].description.
RECEIPT_ITEM_DESCRIPTION_MAX: Final = 128
ELLIPSIS: Final = "…"  # one character (U+2026), one UTF-16 code unit

# Which currencies each method accepts unless the caller configures otherwise.
DEFAULT_CURRENCIES: Final[dict[PaymentMethod, frozenset[str]]] = {
    PaymentMethod.STARS: frozenset({"XTR"}),
    PaymentMethod.STRIPE: frozenset({"USD", "EUR"}),
    PaymentMethod.YOOKASSA: frozenset({"RUB"}),
}

# YooKassa receipt enums (54-FZ). vat_code 1..12 covers the 2025 additions (5%/7% rates).
_VAT_CODES: Final = range(1, 13)
_TAX_SYSTEM_CODES: Final = range(1, 7)
_PAYMENT_MODES: Final = frozenset(
    {
        "full_prepayment",
        "partial_prepayment",
        "advance",
        "full_payment",
        "partial_payment",
        "credit",
        "credit_payment",
    }
)


@dataclass(frozen=True)
class ReceiptSpec:
    """A one-item fiscal receipt for YooKassa (54-FZ), sent in ``provider_data``.

    ``description`` defaults to the invoice title. The buyer's email must reach YooKassa:
    either ask Telegram for it (``need_email=True`` on the invoice, which also sets
    ``send_email_to_provider``) or set ``customer_email`` here.
    """

    description: str | None = None
    vat_code: int = 1  # 1 = without VAT
    payment_mode: str = "full_payment"
    payment_subject: str = "service"
    tax_system_code: int | None = None
    customer_email: str | None = None


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units.

    Telegram's "1-32 characters" is not precise about the unit; UTF-16 units are never
    fewer than code points, so counting them keeps us within the limit either way.
    """
    return len(text.encode("utf-16-le")) // 2


_ZWJ: Final = "\u200d"


def _is_extender(ch: str) -> bool:
    """True for code points that attach to the previous one (cutting before them would
    split a user-perceived character): combining marks, ZWJ, variation selectors, emoji
    skin-tone modifiers and emoji tag characters."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch == _ZWJ
        or 0xFE00 <= cp <= 0xFE0F
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _safe_cut(text: str, cut: int) -> int:
    """Move ``cut`` left until ``text[:cut]`` ends on a grapheme boundary (a pragmatic
    subset of UAX #29 that covers accents, emoji sequences, flags and CRLF)."""
    while 0 < cut < len(text):
        prev, nxt = text[cut - 1], text[cut]
        if _is_extender(nxt) or prev == _ZWJ or (prev == "\r" and nxt == "\n"):
            cut -= 1
            continue
        if _is_regional_indicator(prev) and _is_regional_indicator(nxt):
            # Flags are pairs of regional indicators: cutting after an odd count splits one.
            run = 0
            while cut - run - 1 >= 0 and _is_regional_indicator(text[cut - run - 1]):
                run += 1
            if run % 2 == 1:
                cut -= 1
                continue
        break
    return cut


def truncate_text(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` UTF-16 units, ending with ``…`` if shortened.

    Never splits a character: the cut lands on a code point and, where possible, on a
    grapheme boundary (so "é" written as e + accent, or a family emoji, stays whole).
    The part before the ellipsis is always a prefix of ``text``; trailing whitespace
    before the ellipsis is dropped. If one grapheme alone is longer than the limit,
    it is cut between code points as a last resort rather than dropping all content.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(ELLIPSIS)
    cut = used = 0
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > budget:
            break
        used += width
        cut += 1
    safe = _safe_cut(text, cut)
    head = text[: safe or cut].rstrip()
    return head + ELLIPSIS


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _receipt_provider_data(
    receipt: ReceiptSpec, *, title: str, amount_minor: int, currency: str
) -> str:
    """The ``provider_data`` JSON YooKassa reads from a Telegram payment to register a
    receipt: ``{"receipt": {"items": [{description, quantity, amount, vat_code, ...}]}}``."""
    if receipt.vat_code not in _VAT_CODES:
        raise ValueError(f"receipt vat_code must be 1..12, got {receipt.vat_code}")
    if receipt.tax_system_code is not None and receipt.tax_system_code not in _TAX_SYSTEM_CODES:
        raise ValueError(f"receipt tax_system_code must be 1..6, got {receipt.tax_system_code}")
    if receipt.payment_mode not in _PAYMENT_MODES:
        raise ValueError(f"unknown receipt payment_mode {receipt.payment_mode!r}")
    subject = _require_text("receipt payment_subject", receipt.payment_subject)
    item_description = receipt.description if receipt.description is not None else title
    item_description = _require_text("receipt description", item_description)
    item = {
        "description": truncate_text(item_description, RECEIPT_ITEM_DESCRIPTION_MAX),
        "quantity": "1.00",
        # amount is the price of one unit; with quantity 1 it equals the invoice total,
        # which YooKassa requires to match the payment amount exactly.
        "amount": {"value": format_amount(amount_minor, currency), "currency": currency},
        "vat_code": receipt.vat_code,
        "payment_mode": receipt.payment_mode,
        "payment_subject": subject,
    }
    body: dict[str, Any] = {"items": [item]}
    if receipt.tax_system_code is not None:
        body["tax_system_code"] = receipt.tax_system_code
    if receipt.customer_email:
        body["customer"] = {"email": receipt.customer_email}
    return json.dumps({"receipt": body}, ensure_ascii=False, separators=(",", ":"))


def build_invoice(
    method: PaymentMethod | str,
    *,
    chat_id: int | str | None = None,
    title: str,
    description: str,
    payload: str,
    amount_minor: int,
    currency: str,
    provider_token: str | None = None,
    label: str,
    photo_url: str | None = None,
    need_email: bool = False,
    receipt: ReceiptSpec | None = None,
    allowed_currencies: Collection[str] | None = None,
) -> dict[str, Any]:
    """Return keyword arguments for ``bot.send_invoice`` (or ``create_invoice_link`` when
    ``chat_id`` is ``None``).

    - ``title``/``description`` are truncated to Telegram's 32/255 characters with ``…``.
    - ``payload`` must be 1-128 bytes of UTF-8; longer is a ``ValueError`` (it is our own
      order reference, silently cutting it would break payment matching).
    - Stars: currency ``XTR``, one price, no provider token, no email or receipt.
    - Stripe: a provider token, currency USD/EUR by default.
    - YooKassa: a provider token, currency RUB by default; ``need_email`` also sets
      ``send_email_to_provider``; ``receipt`` becomes ``provider_data``.
    - ``allowed_currencies`` replaces the default currency set of Stripe/YooKassa
      (e.g. ``{"RUB", "USD", "EUR"}`` for a YooKassa shop configured for them).

    Raises ``ValueError`` on any invalid input.
    """
    try:
        method = PaymentMethod(method)
    except ValueError:
        raise ValueError(f"unknown payment method {method!r}") from None

    title = truncate_text(_require_text("title", title), TITLE_MAX)
    description = truncate_text(_require_text("description", description), DESCRIPTION_MAX)
    label = _require_text("label", label)

    if not isinstance(payload, str) or not payload:
        raise ValueError("payload must be a non-empty string")
    payload_bytes = len(payload.encode("utf-8"))
    if payload_bytes > PAYLOAD_MAX_BYTES:
        raise ValueError(
            f"payload is {payload_bytes} bytes; Telegram allows at most {PAYLOAD_MAX_BYTES}"
        )

    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise ValueError(f"amount_minor must be an int, got {type(amount_minor).__name__}")
    if amount_minor <= 0:
        raise ValueError(f"amount_minor must be positive, got {amount_minor}")

    currency = normalize_currency(currency)
    allowed = DEFAULT_CURRENCIES[method]
    if allowed_currencies is not None:
        configured = frozenset(normalize_currency(c) for c in allowed_currencies)
        if method is PaymentMethod.STARS and configured != allowed:
            raise ValueError(
                "Stars invoices are always in XTR; allowed_currencies cannot change it"
            )
        if method is not PaymentMethod.STARS and "XTR" in configured:
            raise ValueError(f"XTR is for Stars invoices only, not {method.value}")
        allowed = configured
    if currency not in allowed:
        raise ValueError(
            f"currency {currency} is not allowed for {method.value}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )

    kwargs: dict[str, Any] = {}
    if chat_id is not None:
        kwargs["chat_id"] = chat_id
    kwargs.update(
        title=title,
        description=description,
        payload=payload,
        currency=currency,
        prices=[LabeledPrice(label=label, amount=amount_minor)],
    )
    if photo_url:
        kwargs["photo_url"] = photo_url

    if method is PaymentMethod.STARS:
        # Telegram rejects a provider token, provider_data or requested buyer data for XTR.
        if provider_token:
            raise ValueError("Stars invoices take no provider_token")
        if need_email:
            raise ValueError("Stars invoices cannot request the buyer's email")
        if receipt is not None:
            raise ValueError("Stars invoices cannot carry a fiscal receipt")
        return kwargs

    if not provider_token or not provider_token.strip():
        raise ValueError(f"{method.value} invoices need a provider_token from @BotFather")
    kwargs["provider_token"] = provider_token

    if method is PaymentMethod.STRIPE:
        if receipt is not None:
            raise ValueError("fiscal receipts are a YooKassa feature, not available for Stripe")
        if need_email:
            kwargs["need_email"] = True
        return kwargs

    # YooKassa
    if need_email:
        # YooKassa sends the fiscal receipt to this address, so it must get it.
        kwargs["need_email"] = True
        kwargs["send_email_to_provider"] = True
    if receipt is not None:
        if not need_email and not receipt.customer_email:
            raise ValueError(
                "a YooKassa receipt needs the buyer's email: "
                "pass need_email=True or ReceiptSpec.customer_email"
            )
        kwargs["provider_data"] = _receipt_provider_data(
            receipt, title=title, amount_minor=amount_minor, currency=currency
        )
    return kwargs
