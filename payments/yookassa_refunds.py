"""Refunds of YooKassa payments taken through Telegram, with the official (synchronous) SDK.

For YooKassa, Telegram's ``provider_payment_charge_id`` is the YooKassa payment id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import requests
from yookassa import Configuration, Payment, Refund
from yookassa.domain.exceptions import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    InternalServerError,
    NotFoundError,
    ResponseProcessingError,
    TooManyRequestsError,
    UnauthorizedError,
)

from payments.base import (
    ErrorCode,
    PaymentMethod,
    RefundRequest,
    RefundResult,
    check_method,
    format_amount,
    from_decimal,
    provider_idempotency_key,
)

__all__ = ["SDK_LOCK", "YooKassaRefunder"]

log = logging.getLogger(__name__)

_IDEMPOTENCE_KEY_MAX: Final = 64  # YooKassa's limit for the Idempotence-Key header
_DESCRIPTION_MAX: Final = 250  # refund.description limit
_PAYMENT_ID_LENGTH: Final = 36  # YooKassa payment ids are UUID-like; the SDK checks it

# yookassa.Configuration is process-global and ApiClient copies it when a call starts, so
# configure-then-call must be atomic or two refunders with different shops could send one
# shop's refund with the other's credentials. One lock for the whole process.
T = TypeVar("T")
SDK_LOCK = threading.Lock()
# The SDK blocks (``requests``). Its calls run on these few threads of their own, never on the
# event loop's default executor: a provider that hangs may hold these, but never the threads
# aiohttp resolves host names with, nor anything else of the bot.
SDK_THREADS = 2
_executor: ThreadPoolExecutor | None = None


def sdk_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(SDK_THREADS, thread_name_prefix="yookassa-sdk")
    return _executor


async def run_sdk(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking SDK call on the SDK's own threads."""
    return await asyncio.get_running_loop().run_in_executor(sdk_executor(), function, *args)


class YooKassaRefunder:
    """Refund YooKassa payments with ``yookassa.Refund.create``.

    The SDK is blocking (``requests``), so each refund runs on the SDK's own small thread pool.
    Calls are serialised by a process-wide lock because the SDK keeps its credentials in globals.

    ``api_url`` overrides the API root, including the ``/v3`` prefix (the fake server's
    ``url``). ``timeout`` is the HTTP timeout the SDK is configured with, and also bounds how
    long :meth:`refund` waits: a hung connection yields ``network_error`` after ``timeout``
    seconds and the thread gives the lock back as its own call times out (a later retry with the
    same idempotency key is safe: YooKassa returns the refund already made).
    """

    def __init__(
        self,
        shop_id: str | int,
        secret_key: str,
        api_url: str | None = None,
        *,
        timeout: float = 20.0,
    ) -> None:
        self._shop_id = str(shop_id) if shop_id else ""
        self._secret_key = secret_key
        self._api_url = api_url.rstrip("/") if api_url else None
        self._timeout = timeout

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a YooKassa payment; see :class:`payments.base.Refunder`."""
        check_method(request, PaymentMethod.YOOKASSA)
        if not self._shop_id or not self._secret_key:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_CONFIGURED,
                detail="no YooKassa shop id / secret key",
            )
        if not request.provider_payment_charge_id:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_FOUND,
                detail="payment has no provider_payment_charge_id",
            )
        if len(request.provider_payment_charge_id) != _PAYMENT_ID_LENGTH:
            # The SDK refuses such ids with a bare ValueError; no YooKassa payment has one.
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_FOUND,
                detail=f"{request.provider_payment_charge_id!r} is not a YooKassa payment id",
            )
        try:
            return await asyncio.wait_for(run_sdk(self._refund_blocking, request), self._timeout)
        except TimeoutError:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NETWORK_ERROR,
                detail=f"no answer from YooKassa within {self._timeout:g}s",
            )

    def _configure(self) -> None:
        # A real timeout on the connection itself (the SDK's default is half an hour), and no
        # retries of its own: a call ends, so the lock and the thread are given back, and our
        # queue retries later with the same idempotency key.
        kwargs: dict[str, Any] = {"timeout": self._timeout, "max_attempts": 1}
        if self._api_url:
            kwargs["api_url"] = self._api_url
        Configuration.configure(self._shop_id, self._secret_key, **kwargs)

    def _refund_blocking(self, request: RefundRequest) -> RefundResult:
        payment_id = request.provider_payment_charge_id
        assert payment_id  # checked by refund()
        params: dict[str, Any] = {
            "payment_id": payment_id,
            "amount": {
                "value": format_amount(request.amount_minor, request.currency),
                "currency": request.currency,
            },
            "metadata": {
                "telegram_payment_charge_id": request.telegram_payment_charge_id[:512],
                "telegram_user_id": str(request.user_id),
            },
        }
        if request.reason:
            params["description"] = request.reason[:_DESCRIPTION_MAX]
        key = provider_idempotency_key(request.idempotency_key, _IDEMPOTENCE_KEY_MAX)

        with SDK_LOCK:
            self._configure()
            try:
                refund = Refund.create(params, key)
            except BadRequestError as exc:
                # YooKassa has no dedicated "already refunded" code: a refund of a fully
                # refunded payment is a generic invalid_request. Look at the payment to
                # tell "the money is already back" from a real error.
                return self._classify_bad_request(payment_id, exc)
            except Exception as exc:
                return _map_error(exc)

        status = refund.status
        if status in ("succeeded", "pending"):
            log.info("yookassa refund %s for %s: %s", refund.id, payment_id, status)
            return RefundResult(ok=True, provider_refund_id=refund.id, pending=status == "pending")
        reason = getattr(refund.cancellation_details, "reason", None)
        return RefundResult(
            ok=False,
            provider_refund_id=refund.id,
            error_code=ErrorCode.PROVIDER_ERROR,
            detail=f"refund status {status}" + (f": {reason}" if reason else ""),
        )

    async def refund_status(self, provider_refund_id: str) -> RefundResult:
        """Where a refund stands (``Refund.find_one``); see :class:`payments.base.RefundTracker`."""
        if not self._shop_id or not self._secret_key:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_CONFIGURED,
                detail="no YooKassa shop id / secret key",
            )
        try:
            return await asyncio.wait_for(
                run_sdk(self._status_blocking, provider_refund_id), self._timeout
            )
        except TimeoutError:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NETWORK_ERROR,
                detail=f"no answer from YooKassa within {self._timeout:g}s",
            )

    def _status_blocking(self, refund_id: str) -> RefundResult:
        with SDK_LOCK:
            self._configure()
            try:
                refund = Refund.find_one(refund_id)
            except Exception as exc:
                return _map_error(exc)
        status = refund.status
        if status == "succeeded":
            return RefundResult(ok=True, provider_refund_id=refund.id)
        if status == "pending":
            return RefundResult(ok=True, provider_refund_id=refund.id, pending=True)
        reason = getattr(refund.cancellation_details, "reason", None)
        return RefundResult(
            ok=False,
            provider_refund_id=refund.id,
            error_code=ErrorCode.REFUND_CANCELED,
            detail=f"refund status {status}" + (f": {reason}" if reason else ""),
        )

    @staticmethod
    def _classify_bad_request(payment_id: str, exc: BadRequestError) -> RefundResult:
        detail = _error_detail(exc)
        try:
            payment = Payment.find_one(payment_id)
            amount = from_decimal(payment.amount.value, payment.amount.currency)
            refunded = payment.refunded_amount
            refunded_minor = (
                from_decimal(refunded.value, refunded.currency) if refunded is not None else 0
            )
        except Exception:
            log.debug("could not read payment %s after a refused refund", payment_id, exc_info=True)
            return RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=detail)
        if refunded_minor >= amount:
            return RefundResult(
                ok=True,
                error_code=ErrorCode.ALREADY_REFUNDED,
                detail=f"payment {payment_id} is already fully refunded ({detail})",
            )
        return RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=detail)


def _error_detail(exc: BaseException) -> str:
    if isinstance(exc, ApiError) and isinstance(exc.content, dict):
        content = exc.content
        parts = [str(content.get("code") or type(exc).__name__)]
        if content.get("description"):
            parts.append(str(content["description"]))
        if content.get("parameter"):
            parts.append(f"parameter {content['parameter']}")
        return ": ".join(parts)
    return f"{type(exc).__name__}: {exc}"


def _is_network_failure(exc: BaseException) -> bool:
    # The SDK handles a failed request with `self.__handle_error(e.response)`; for a
    # connection error `response` is None, so what escapes is an AttributeError whose
    # __context__ is the real requests exception. Walk the chain to find it.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, requests.RequestException | ConnectionError | TimeoutError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _map_error(exc: Exception) -> RefundResult:
    detail = _error_detail(exc)
    if isinstance(exc, NotFoundError):
        return RefundResult(ok=False, error_code=ErrorCode.NOT_FOUND, detail=detail)
    if isinstance(exc, UnauthorizedError | ForbiddenError):
        return RefundResult(ok=False, error_code=ErrorCode.NOT_CONFIGURED, detail=detail)
    if isinstance(exc, TooManyRequestsError | InternalServerError | ResponseProcessingError):
        # 429, 500 and 202 ("still processing") all mean: repeat later with the same key.
        return RefundResult(ok=False, error_code=ErrorCode.NETWORK_ERROR, detail=detail)
    if isinstance(exc, ApiError):
        return RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=detail)
    if _is_network_failure(exc):
        cause = exc.__context__ if isinstance(exc, AttributeError) and exc.__context__ else exc
        return RefundResult(
            ok=False, error_code=ErrorCode.NETWORK_ERROR, detail=_error_detail(cause)
        )
    log.exception("unexpected error from the YooKassa SDK")
    return RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=detail)
