from __future__ import annotations

import json
from typing import Any

import pytest
from aiogram.methods import CreateInvoiceLink, SendInvoice
from aiogram.types import LabeledPrice
from hypothesis import given
from hypothesis import strategies as st

from payments import PaymentMethod, ReceiptSpec, build_invoice
from payments.invoices import (
    DESCRIPTION_MAX,
    ELLIPSIS,
    TITLE_MAX,
    truncate_text,
    utf16_len,
)

STRIPE_TOKEN = "284685063:TEST:stripe-token"
YOOKASSA_TOKEN = "381764678:TEST:100500"


def base(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "chat_id": 42,
        "title": "Python webinar",
        "description": "Two hours, live, with Q&A",
        "payload": "order:17",
        "label": "Ticket",
    }
    kwargs.update(overrides)
    return kwargs


def stars(**overrides: Any) -> dict[str, Any]:
    params = base(amount_minor=250, currency="XTR")
    params.update(overrides)
    return build_invoice(PaymentMethod.STARS, **params)


def stripe(**overrides: Any) -> dict[str, Any]:
    params = base(amount_minor=1999, currency="USD", provider_token=STRIPE_TOKEN)
    params.update(overrides)
    return build_invoice(PaymentMethod.STRIPE, **params)


def yookassa(**overrides: Any) -> dict[str, Any]:
    params = base(amount_minor=1000, currency="RUB", provider_token=YOOKASSA_TOKEN)
    params.update(overrides)
    return build_invoice(PaymentMethod.YOOKASSA, **params)


# -- the three methods -------------------------------------------------------------------


def test_stars_invoice() -> None:
    kwargs = stars()
    assert kwargs == {
        "chat_id": 42,
        "title": "Python webinar",
        "description": "Two hours, live, with Q&A",
        "payload": "order:17",
        "currency": "XTR",
        "prices": [LabeledPrice(label="Ticket", amount=250)],
    }
    # The keys are exactly what aiogram's method accepts.
    SendInvoice(**kwargs)


def test_stripe_invoice() -> None:
    kwargs = stripe(currency="eur", need_email=True, photo_url="https://example.org/p.png")
    assert kwargs["provider_token"] == STRIPE_TOKEN
    assert kwargs["currency"] == "EUR"
    assert kwargs["prices"] == [LabeledPrice(label="Ticket", amount=1999)]
    assert kwargs["need_email"] is True
    assert "send_email_to_provider" not in kwargs
    assert "provider_data" not in kwargs
    assert kwargs["photo_url"] == "https://example.org/p.png"
    SendInvoice(**kwargs)


def test_yookassa_invoice_with_email_and_receipt() -> None:
    kwargs = yookassa(need_email=True, receipt=ReceiptSpec(description="Вебинар по Python"))
    assert kwargs["need_email"] is True
    assert kwargs["send_email_to_provider"] is True
    assert json.loads(kwargs["provider_data"]) == {
        "receipt": {
            "items": [
                {
                    "description": "Вебинар по Python",
                    "quantity": "1.00",
                    "amount": {"value": "10.00", "currency": "RUB"},
                    "vat_code": 1,
                    "payment_mode": "full_payment",
                    "payment_subject": "service",
                }
            ]
        }
    }
    SendInvoice(**kwargs)


def test_yookassa_receipt_defaults_to_title_and_carries_options() -> None:
    receipt = ReceiptSpec(vat_code=4, tax_system_code=2, customer_email="buyer@example.org")
    data = json.loads(yookassa(amount_minor=123456, receipt=receipt)["provider_data"])["receipt"]
    assert data["items"][0]["description"] == "Python webinar"
    assert data["items"][0]["amount"] == {"value": "1234.56", "currency": "RUB"}
    assert data["items"][0]["vat_code"] == 4
    assert data["tax_system_code"] == 2
    assert data["customer"] == {"email": "buyer@example.org"}


def test_yookassa_without_email_or_receipt_is_plain() -> None:
    kwargs = yookassa()
    assert "need_email" not in kwargs
    assert "provider_data" not in kwargs


def test_yookassa_other_currencies_when_configured() -> None:
    kwargs = yookassa(currency="USD", allowed_currencies={"RUB", "usd", "EUR"})
    assert kwargs["currency"] == "USD"
    with pytest.raises(ValueError, match="not allowed"):
        yookassa(currency="USD")


def test_no_chat_id_gives_create_invoice_link_arguments() -> None:
    kwargs = stars(chat_id=None)
    assert "chat_id" not in kwargs
    CreateInvoiceLink(**kwargs)
    CreateInvoiceLink(**yookassa(chat_id=None, need_email=True, receipt=ReceiptSpec()))


def test_long_title_and_description_are_truncated() -> None:
    kwargs = stars(title="Т" * 40, description="word " * 100)
    assert kwargs["title"] == "Т" * (TITLE_MAX - 1) + ELLIPSIS
    assert len(kwargs["description"]) <= DESCRIPTION_MAX
    assert kwargs["description"].endswith("word" + ELLIPSIS)  # trailing space dropped


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "overrides", "message"),
    [
        (stars, {"amount_minor": 0}, "positive"),
        (stripe, {"amount_minor": -5}, "positive"),
        (stripe, {"amount_minor": 19.99}, "int"),
        (stars, {"amount_minor": True}, "int"),
        (stars, {"payload": ""}, "payload"),
        (stars, {"payload": "я" * 65}, "130 bytes"),
        (stars, {"title": "   "}, "title"),
        (stars, {"description": ""}, "description"),
        (stars, {"label": ""}, "label"),
        (stars, {"currency": "USD"}, "not allowed for stars"),
        (stars, {"currency": "JPY"}, "unsupported currency"),
        (stars, {"provider_token": "x"}, "no provider_token"),
        (stars, {"need_email": True}, "email"),
        (stars, {"receipt": ReceiptSpec()}, "receipt"),
        (stars, {"allowed_currencies": {"USD"}}, "always in XTR"),
        (stripe, {"provider_token": None}, "provider_token"),
        (stripe, {"provider_token": "  "}, "provider_token"),
        (stripe, {"currency": "RUB"}, "not allowed for stripe"),
        (stripe, {"currency": "XTR"}, "not allowed for stripe"),
        (stripe, {"receipt": ReceiptSpec(), "need_email": True}, "YooKassa"),
        (stripe, {"allowed_currencies": {"XTR"}}, "Stars invoices only"),
        (yookassa, {"provider_token": ""}, "provider_token"),
        (yookassa, {"currency": "EUR"}, "not allowed for yookassa"),
        (yookassa, {"receipt": ReceiptSpec()}, "email"),
        (yookassa, {"receipt": ReceiptSpec(vat_code=0), "need_email": True}, "vat_code"),
        (
            yookassa,
            {"receipt": ReceiptSpec(payment_mode="whatever"), "need_email": True},
            "payment_mode",
        ),
        (
            yookassa,
            {"receipt": ReceiptSpec(tax_system_code=9), "need_email": True},
            "tax_system_code",
        ),
    ],
)
def test_invalid_input_raises(builder: Any, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        builder(**overrides)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown payment method"):
        build_invoice("paypal", **base(amount_minor=1, currency="USD"))


def test_payload_limit_is_in_bytes() -> None:
    assert stars(payload="x" * 128)["payload"] == "x" * 128
    assert stars(payload="я" * 64)["payload"] == "я" * 64  # 128 bytes
    with pytest.raises(ValueError, match="129 bytes"):
        stars(payload="x" * 129)


# -- truncation properties ---------------------------------------------------------------


@given(st.text(), st.integers(min_value=2, max_value=300))
def test_truncate_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    result = truncate_text(text, limit)
    assert utf16_len(result) <= limit
    assert len(result) <= limit
    if utf16_len(text) <= limit:
        assert result == text
    else:
        assert result.endswith(ELLIPSIS)
        assert text.startswith(result[: -len(ELLIPSIS)])


# Whole user-perceived characters: accents written as combining marks, ZWJ emoji, flags,
# skin tones, variation selectors, astral letters.
GRAPHEMES = [
    "a",
    "Я",
    " ",
    "e\u0301",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f1f7\U0001f1fa",
    "\U0001f44d\U0001f3fd",
    "\u2764\ufe0f",
    "\U0001d400",
    "\r\n",
]


@given(st.lists(st.sampled_from(GRAPHEMES), max_size=60), st.integers(min_value=2, max_value=40))
def test_truncate_never_splits_a_character(units: list[str], limit: int) -> None:
    text = "".join(units)
    result = truncate_text(text, limit)
    if result == text:
        return
    head = result[: -len(ELLIPSIS)]
    # The kept part is a whole number of units (minus trailing whitespace), unless the
    # first unit alone is too long, where a code-point cut beats an empty title.
    prefixes = {"".join(units[:k]).rstrip() for k in range(len(units) + 1)}
    assert head in prefixes or utf16_len(units[0]) > limit - 1


@given(
    st.text(min_size=1).filter(str.strip),
    st.text(min_size=1).filter(str.strip),
)
def test_invoice_title_and_description_within_limits(title: str, description: str) -> None:
    kwargs = stars(title=title, description=description)
    for key, limit, source in (
        ("title", TITLE_MAX, title),
        ("description", DESCRIPTION_MAX, description),
    ):
        value = kwargs[key]
        assert 1 <= utf16_len(value) <= limit
        assert value == source or source.startswith(value[: -len(ELLIPSIS)])


def test_single_huge_grapheme_still_yields_content() -> None:
    text = "a" + "\u0301" * 100
    result = truncate_text(text, 10)
    assert result.startswith("a")
    assert utf16_len(result) <= 10
