"""Refunds of Telegram Stars payments through the Bot API (``refundStarPayment``)."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from bot.redaction import redact, redact_error
from payments.base import ErrorCode, PaymentMethod, RefundRequest, RefundResult, check_method

__all__ = ["StarsRefunder"]

log = logging.getLogger(__name__)

# Substrings of Telegram's error descriptions ("Bad Request: CHARGE_ALREADY_REFUNDED").
_ALREADY_REFUNDED = ("CHARGE_ALREADY_REFUNDED",)
_NOT_FOUND = ("CHARGE_NOT_FOUND", "CHARGE_ID_INVALID")


class StarsRefunder:
    """Refund Stars with ``bot.refund_star_payment``.

    Stars refunds are always for the whole payment: ``amount_minor`` is not sent (Telegram
    has no partial Stars refunds) and ``idempotency_key`` is not needed, because a repeated
    call answers ``CHARGE_ALREADY_REFUNDED``, which maps to ``ok=True``.
    """

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a Stars payment; see :class:`payments.base.Refunder`."""
        check_method(request, PaymentMethod.STARS)
        try:
            done = await self._bot.refund_star_payment(
                user_id=request.user_id,
                telegram_payment_charge_id=request.telegram_payment_charge_id,
            )
        except TelegramBadRequest as exc:
            return _map_bad_request(exc)
        except TelegramRetryAfter as exc:
            # Flood control: the refund did not happen, it will work after the pause.
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NETWORK_ERROR,
                detail=f"rate limited, retry after {exc.retry_after}s",
            )
        except (TelegramNetworkError, TelegramServerError, TimeoutError) as exc:
            return RefundResult(ok=False, error_code=ErrorCode.NETWORK_ERROR, detail=_describe(exc))
        except (TelegramUnauthorizedError, TelegramForbiddenError) as exc:
            return RefundResult(
                ok=False, error_code=ErrorCode.NOT_CONFIGURED, detail=_describe(exc)
            )
        except TelegramAPIError as exc:
            return RefundResult(
                ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=_describe(exc)
            )
        if not done:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.PROVIDER_ERROR,
                detail="refundStarPayment returned false",
            )
        log.info("stars refund done for charge %s", request.telegram_payment_charge_id)
        return RefundResult(ok=True)


def _describe(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return redact(str(message)) if message else redact_error(exc)


def _map_bad_request(exc: TelegramBadRequest) -> RefundResult:
    text = exc.message.upper()
    if any(marker in text for marker in _ALREADY_REFUNDED):
        return RefundResult(ok=True, error_code=ErrorCode.ALREADY_REFUNDED, detail=exc.message)
    if any(marker in text for marker in _NOT_FOUND):
        return RefundResult(ok=False, error_code=ErrorCode.NOT_FOUND, detail=exc.message)
    return RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=exc.message)
