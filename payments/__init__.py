"""Payments: invoices for Telegram Stars, Stripe and YooKassa, and refunds.

The core types and the invoice builder import cheaply. The refunders pull in the provider
SDKs (``stripe`` alone takes a noticeable moment to import), so they load on first use::

    from payments import StripeRefunder   # imports stripe only now
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from payments.base import (
    CURRENCY_EXPONENTS,
    ErrorCode,
    PaymentMethod,
    Refunder,
    RefundRequest,
    RefundResult,
    format_amount,
    from_decimal,
    normalize_currency,
    to_decimal,
)
from payments.invoices import ReceiptSpec, build_invoice, truncate_text
from payments.registry import RefunderRegistry

if TYPE_CHECKING:
    from payments.stars import StarsRefunder
    from payments.stripe_refunds import StripeRefunder
    from payments.yookassa_refunds import YooKassaRefunder

__all__ = [
    "CURRENCY_EXPONENTS",
    "ErrorCode",
    "PaymentMethod",
    "ReceiptSpec",
    "RefundRequest",
    "RefundResult",
    "Refunder",
    "RefunderRegistry",
    "StarsRefunder",
    "StripeRefunder",
    "YooKassaRefunder",
    "build_invoice",
    "format_amount",
    "from_decimal",
    "normalize_currency",
    "to_decimal",
    "truncate_text",
]

_LAZY = {
    "StarsRefunder": "payments.stars",
    "StripeRefunder": "payments.stripe_refunds",
    "YooKassaRefunder": "payments.yookassa_refunds",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'payments' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
