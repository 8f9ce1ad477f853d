from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments import (
    CURRENCY_EXPONENTS,
    PaymentMethod,
    RefunderRegistry,
    RefundRequest,
    RefundResult,
    format_amount,
    from_decimal,
    to_decimal,
)
from payments.base import ErrorCode, provider_idempotency_key


def request(method: str = "stars", **overrides: object) -> RefundRequest:
    fields: dict[str, object] = {
        "method": method,
        "user_id": 42,
        "telegram_payment_charge_id": "tg-charge-1",
        "provider_payment_charge_id": None,
        "amount_minor": 100,
        "currency": "XTR" if method == "stars" else "RUB",
        "idempotency_key": "refund-1",
    }
    fields.update(overrides)
    return RefundRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [
        (1999, "USD", Decimal("19.99")),
        (1000, "rub", Decimal("10.00")),
        (5, "EUR", Decimal("0.05")),
        (250, "XTR", Decimal(250)),
    ],
)
def test_minor_units_round_trip(minor: int, currency: str, major: Decimal) -> None:
    assert to_decimal(minor, currency) == major
    assert from_decimal(major, currency) == minor
    assert from_decimal(str(major), currency) == minor


def test_format_amount_keeps_the_currency_decimals() -> None:
    assert format_amount(1000, "RUB") == "10.00"
    assert format_amount(1, "USD") == "0.01"
    assert format_amount(7, "XTR") == "7"


def test_from_decimal_refuses_to_round_money() -> None:
    with pytest.raises(ValueError, match="decimals"):
        from_decimal("19.999", "USD")
    with pytest.raises(ValueError, match="decimals"):
        from_decimal("1.5", "XTR")
    with pytest.raises(TypeError):
        from_decimal(19.99, "USD")  # type: ignore[arg-type]


def test_unknown_currency_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported currency"):
        to_decimal(100, "JPY")
    assert set(CURRENCY_EXPONENTS) == {"XTR", "USD", "EUR", "RUB"}


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["USD", "RUB", "XTR"]))
def test_round_trip_property(minor: int, currency: str) -> None:
    assert from_decimal(to_decimal(minor, currency), currency) == minor


def test_refund_request_normalises_and_validates() -> None:
    req = request("stripe", currency="usd")
    assert req.method is PaymentMethod.STRIPE
    assert req.currency == "USD"
    with pytest.raises(ValueError, match="positive"):
        request(amount_minor=0)
    with pytest.raises(ValueError, match="idempotency_key"):
        request(idempotency_key="")
    with pytest.raises(ValueError, match="paypal"):
        request(method="paypal")


def test_provider_idempotency_key_is_stable_and_short() -> None:
    assert provider_idempotency_key("short", 64) == "short"
    long_key = "refund:" + "x" * 100
    hashed = provider_idempotency_key(long_key, 64)
    assert len(hashed) == 64
    assert hashed == provider_idempotency_key(long_key, 64)
    assert hashed != provider_idempotency_key(long_key + "y", 64)


def test_result_retryable_only_for_network_errors() -> None:
    assert RefundResult(ok=False, error_code=ErrorCode.NETWORK_ERROR).retryable
    assert not RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR).retryable
    assert not RefundResult(ok=True, error_code=ErrorCode.ALREADY_REFUNDED).retryable
    assert ErrorCode.ALREADY_REFUNDED == "already_refunded"


class _Recording:
    """A minimal Refunder: the registry is what is under test here."""

    def __init__(self) -> None:
        self.seen: list[RefundRequest] = []
        self.closed = False

    async def refund(self, request: RefundRequest) -> RefundResult:
        self.seen.append(request)
        return RefundResult(ok=True, provider_refund_id="r1")

    async def aclose(self) -> None:
        self.closed = True


class _Exploding:
    async def refund(self, request: RefundRequest) -> RefundResult:
        raise RuntimeError("boom")


async def test_registry_routes_by_method_and_reports_missing_ones() -> None:
    stars = _Recording()
    registry = RefunderRegistry({"stars": stars, PaymentMethod.STRIPE: _Exploding()})
    assert registry.methods == {PaymentMethod.STARS, PaymentMethod.STRIPE}

    assert (await registry.refund(request("stars"))).ok
    assert stars.seen[0].telegram_payment_charge_id == "tg-charge-1"

    missing = await registry.refund(request("yookassa", provider_payment_charge_id="p"))
    assert (missing.ok, missing.error_code) == (False, "not_configured")

    crashed = await registry.refund(request("stripe", currency="USD"))
    assert (crashed.ok, crashed.error_code) == (False, "provider_error")
    assert "boom" in (crashed.detail or "")

    await registry.aclose()
    assert stars.closed


@pytest.mark.parametrize(
    ("currency", "charge", "method"),
    [
        ("XTR", None, PaymentMethod.STARS),
        ("USD", "ch_3abc", PaymentMethod.STRIPE),
        ("EUR", "pi_3abc", PaymentMethod.STRIPE),
        ("RUB", "2d5e1b4a-000f-5000-8000-1b2c3d4e5f60", PaymentMethod.YOOKASSA),
        ("RUB", "something-else", None),
        ("USD", None, None),
    ],
)
def test_the_method_of_a_charge_is_told_from_the_charge(
    currency: str, charge: str | None, method: PaymentMethod | None
) -> None:
    from payments.base import method_of_charge

    assert method_of_charge(currency, charge) == method
