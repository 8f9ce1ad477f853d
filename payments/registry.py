"""Dispatch refunds to the refunder of the payment's method."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping

from bot.redaction import redact_error
from payments.base import ErrorCode, PaymentMethod, Refunder, RefundRequest, RefundResult

__all__ = ["RefunderRegistry"]

log = logging.getLogger(__name__)


class RefunderRegistry:
    """One :class:`~payments.base.Refunder` per :class:`~payments.base.PaymentMethod`.

    ``refund()`` routes a request by its method; a method without a refunder answers
    ``not_configured`` instead of raising, so a bot that only sells in Stars still handles
    a stray card payment gracefully. Also a :class:`Refunder` itself.
    """

    def __init__(self, refunders: Mapping[PaymentMethod | str, Refunder] | None = None) -> None:
        self._refunders: dict[PaymentMethod, Refunder] = {}
        for method, refunder in (refunders or {}).items():
            self.register(method, refunder)

    def register(self, method: PaymentMethod | str, refunder: Refunder) -> None:
        """Use ``refunder`` for ``method`` (replacing any previous one)."""
        self._refunders[PaymentMethod(method)] = refunder

    def get(self, method: PaymentMethod | str) -> Refunder | None:
        """The refunder for ``method``, or ``None``."""
        return self._refunders.get(PaymentMethod(method))

    @property
    def methods(self) -> frozenset[PaymentMethod]:
        """Methods that have a refunder."""
        return frozenset(self._refunders)

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund through the method's refunder. Never raises for provider failures; an
        unexpected exception from a refunder is logged and reported as ``provider_error``."""
        refunder = self._refunders.get(request.method)
        if refunder is None:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_CONFIGURED,
                detail=f"no refunder configured for {request.method.value}",
            )
        try:
            return await refunder.refund(request)
        except Exception as exc:
            log.exception("refunder for %s raised", request.method.value)
            return RefundResult(
                ok=False,
                error_code=ErrorCode.PROVIDER_ERROR,
                detail=redact_error(exc),
            )

    async def refund_status(
        self, method: PaymentMethod | str, provider_refund_id: str
    ) -> RefundResult:
        """Follow a pending refund through the method's refunder, if it can follow refunds."""
        refunder = self._refunders.get(PaymentMethod(method))
        status = getattr(refunder, "refund_status", None)
        if status is None:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_CONFIGURED,
                detail=f"no refund tracker configured for {PaymentMethod(method).value}",
            )
        try:
            return await status(provider_refund_id)
        except Exception as exc:
            log.exception("refund tracker for %s raised", PaymentMethod(method).value)
            return RefundResult(
                ok=False,
                error_code=ErrorCode.PROVIDER_ERROR,
                detail=redact_error(exc),
            )

    async def aclose(self) -> None:
        """Close every refunder that holds resources (those with an ``aclose()``)."""
        for refunder in self._refunders.values():
            close = getattr(refunder, "aclose", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result
