"""Shared payment types: methods, money in minor units, refund requests and results.

Money is always an ``int`` of minor units plus an ISO 4217 currency code. USD, EUR and RUB
have two decimals (``1999`` is 19.99); ``XTR`` (Telegram Stars) is a whole number of stars.
Floats never appear: conversions go through :class:`decimal.Decimal`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "CURRENCY_EXPONENTS",
    "ErrorCode",
    "PaymentMethod",
    "RefundRequest",
    "RefundResult",
    "RefundTracker",
    "Refunder",
    "check_method",
    "format_amount",
    "from_decimal",
    "method_of_charge",
    "normalize_currency",
    "provider_idempotency_key",
    "to_decimal",
]


class PaymentMethod(StrEnum):
    """How a payment was taken. The values match ``storage.enums.PaymentMethod``."""

    STARS = "stars"
    STRIPE = "stripe"
    YOOKASSA = "yookassa"


# Number of decimal digits of the minor unit. Only the currencies the bot sells in: an
# unknown currency is an error rather than a guess, because a wrong exponent is a 100x
# mistake in the amount.
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    "XTR": 0,
    "USD": 2,
    "EUR": 2,
    "RUB": 2,
}


def normalize_currency(currency: str) -> str:
    """Return the upper-case ISO code, or raise ``ValueError`` for an unsupported currency."""
    code = currency.strip().upper() if isinstance(currency, str) else ""
    if code not in CURRENCY_EXPONENTS:
        supported = ", ".join(sorted(CURRENCY_EXPONENTS))
        raise ValueError(f"unsupported currency {currency!r}; supported: {supported}")
    return code


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Convert minor units to a :class:`Decimal` in major units: ``(1999, "USD") -> 19.99``.

    The result always carries the currency's number of decimals (``1000 RUB -> 10.00``).
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be int, got {type(amount_minor).__name__}")
    exponent = CURRENCY_EXPONENTS[normalize_currency(currency)]
    return Decimal(amount_minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def from_decimal(amount: Decimal | int | str, currency: str) -> int:
    """Convert a major-unit amount to minor units: ``(Decimal("19.99"), "USD") -> 1999``.

    Raises ``ValueError`` if the amount has more decimals than the currency allows
    (``"19.999" USD``) instead of silently rounding money. Floats are refused: they cannot
    represent most prices exactly.
    """
    if isinstance(amount, float | bool):
        raise TypeError("amount must be Decimal, int or str, not float/bool")
    exponent = CURRENCY_EXPONENTS[normalize_currency(currency)]
    try:
        value = Decimal(amount)
    except ArithmeticError as exc:
        raise ValueError(f"not a number: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {amount!r}")
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount!r} has more than {exponent} decimals for {currency}")
    return int(minor)


def format_amount(amount_minor: int, currency: str) -> str:
    """Major units as a plain string with the currency's decimals: ``(1000, "RUB") -> "10.00"``.

    This is the format YooKassa expects in ``amount.value``.
    """
    return format(to_decimal(amount_minor, currency), "f")


def provider_idempotency_key(key: str, max_length: int) -> str:
    """Fit an idempotency key into a provider's length limit, deterministically.

    YooKassa accepts at most 64 characters, Stripe 255. A longer key is replaced by its
    SHA-256 hex digest (64 chars), so a retry with the same key still maps to the same
    provider key and the provider de-duplicates it.
    """
    if len(key) <= max_length:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return digest[:max_length]


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def method_of_charge(currency: str, provider_payment_charge_id: str | None) -> PaymentMethod | None:
    """Which method took a payment, told from the payment alone, or ``None`` if it cannot be.

    For a payment that matches no order: Stars are paid in ``XTR``; Stripe's charge ids are
    ``ch_``/``pi_``/``py_``; YooKassa's payment ids are UUIDs.
    """
    if currency.strip().upper() == "XTR":
        return PaymentMethod.STARS
    charge = provider_payment_charge_id or ""
    if charge.startswith(("ch_", "pi_", "py_")):
        return PaymentMethod.STRIPE
    if _UUID.match(charge):
        return PaymentMethod.YOOKASSA
    return None


class ErrorCode(StrEnum):
    """Stable ``RefundResult.error_code`` values. Callers may compare with plain strings."""

    ALREADY_REFUNDED = "already_refunded"  # ok=True: the money is back already
    NOT_FOUND = "not_found"  # the provider does not know the payment
    NOT_CONFIGURED = "not_configured"  # no or rejected credentials for this method
    PROVIDER_ERROR = "provider_error"  # the provider refused; retrying will not help
    NETWORK_ERROR = "network_error"  # transient; retry later with the same idempotency key
    # Another request with the same idempotency key is still running at the provider (Stripe's
    # 409): not a failure, the answer is on its way; ask again later with the same key.
    IN_PROGRESS = "in_progress"
    # A refund the provider had accepted as pending ended canceled or failed: no money moved.
    REFUND_CANCELED = "refund_canceled"


@dataclass(frozen=True)
class RefundRequest:
    """Everything any provider needs to refund one Telegram payment.

    ``telegram_payment_charge_id`` and ``provider_payment_charge_id`` come from the
    ``SuccessfulPayment`` update. ``idempotency_key`` must be stable across retries of the
    same refund (store it with the refund row) so a retry never refunds twice.
    """

    method: PaymentMethod
    user_id: int
    telegram_payment_charge_id: str
    provider_payment_charge_id: str | None
    amount_minor: int
    currency: str
    idempotency_key: str
    reason: str | None = None

    def __post_init__(self) -> None:
        # Accept the storage layer's enum or a plain string; normalise so providers can
        # compare with ``is``/``==`` against our enum.
        object.__setattr__(self, "method", PaymentMethod(self.method))
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError("amount_minor must be int")
        if self.amount_minor <= 0:
            raise ValueError(f"refund amount must be positive, got {self.amount_minor}")
        if not self.idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        if not self.telegram_payment_charge_id:
            raise ValueError("telegram_payment_charge_id must not be empty")


@dataclass(frozen=True)
class RefundResult:
    """Outcome of a refund attempt. Refunders return this instead of raising.

    ``ok`` means the money is (or will be, see ``pending``) back with the buyer.
    ``error_code`` is one of :class:`ErrorCode`; it is ``"already_refunded"`` together
    with ``ok=True`` when an earlier refund already returned the money.
    ``pending`` is true when the provider accepted the refund but finishes it later
    (YooKassa/Stripe status ``pending``): record ``provider_refund_id`` and poll or wait.
    """

    ok: bool
    provider_refund_id: str | None = None
    error_code: str | None = None
    detail: str | None = None
    pending: bool = False

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (network or provider outage)."""
        return not self.ok and self.error_code == ErrorCode.NETWORK_ERROR


@runtime_checkable
class Refunder(Protocol):
    """Refunds payments of one method. Implementations never raise for provider or network
    failures: they map them to a :class:`RefundResult`. A request for another method is a
    programming error and raises ``ValueError``."""

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund ``request``; safe to call again with the same ``idempotency_key``."""
        ...


@runtime_checkable
class RefundTracker(Protocol):
    """Follows a refund the provider accepted as ``pending`` (YooKassa, Stripe)."""

    async def refund_status(self, provider_refund_id: str) -> RefundResult:
        """Where the refund is now, as a :class:`RefundResult`: ``ok`` and ``pending`` while
        the provider still works on it, ``ok`` alone once the money is back,
        ``error_code="refund_canceled"`` when it ended without paying. Any other error means
        "no answer this time": ask again later. Never raises for provider failures."""
        ...


def check_method(request: RefundRequest, expected: PaymentMethod) -> None:
    """Raise ``ValueError`` if ``request`` is for another payment method (a caller bug)."""
    if request.method is not expected:
        raise ValueError(f"{expected.value} refunder got a {request.method.value} request")
