"""Refunds of Stripe payments taken through Telegram, with the official SDK's async API.

Telegram reports Stripe payments with a ``provider_payment_charge_id`` that is a charge
(``ch_...``) or, for newer integrations, a PaymentIntent (``pi_...``). Both can be refunded.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import aiohttp
import stripe

from payments.base import (
    ErrorCode,
    PaymentMethod,
    RefundRequest,
    RefundResult,
    check_method,
    provider_idempotency_key,
)

__all__ = ["StripeRefunder"]

log = logging.getLogger(__name__)

_STRIPE_IDEMPOTENCY_KEY_MAX: Final = 255
_METADATA_KEY: Final = "webinarpass_idempotency_key"
_OK_STATUSES: Final = frozenset({"succeeded", "pending"})
_FINAL_FAILURES: Final = frozenset({"failed", "canceled"})


class StripeRefunder:
    """Refund Stripe payments by charge or PaymentIntent id.

    One instance owns one aiohttp session (through ``stripe.AIOHTTPClient``): create it
    inside the running event loop, and close it with :meth:`aclose` or ``async with``.

    ``api_base`` points the SDK at another server (localstripe in tests). An empty
    ``api_key`` yields ``not_configured`` results instead of failing at start-up, so a bot
    without Stripe still runs.

    Before creating a refund the charge is read once: a fully refunded charge is answered
    with ``already_refunded`` (or, if that refund carries our idempotency key, as the same
    successful refund) without a second refund call. Stripe itself would refuse with
    ``charge_already_refunded`` (also handled), but local fakes such as localstripe do not
    check, and the pre-check makes retries behave the same everywhere.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        max_network_retries: int = 2,
        timeout: float = 30.0,
    ) -> None:
        self._client: stripe.StripeClient | None = None
        self._http: stripe.AIOHTTPClient | None = None
        if not api_key:
            return
        # aiohttp, not httpx: it is already a dependency (aiogram uses it).
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))
        base_addresses: dict[str, str | None] = {}
        if api_base:
            base_addresses["api"] = api_base.rstrip("/")
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,  # type: ignore[arg-type]
            http_client=self._http,
            # The SDK retries connection errors and 5xx with the same idempotency key,
            # which is safe; 0 makes failures immediate (tests).
            max_network_retries=max_network_retries,
        )

    async def __aenter__(self) -> StripeRefunder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session. Safe to call more than once."""
        http, self._http = self._http, None
        self._client = None
        if http is not None:
            await http.close_async()

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a Stripe payment; see :class:`payments.base.Refunder`."""
        check_method(request, PaymentMethod.STRIPE)
        client = self._client
        if client is None:
            return RefundResult(
                ok=False, error_code=ErrorCode.NOT_CONFIGURED, detail="no Stripe API key"
            )
        target = request.provider_payment_charge_id
        if not target:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_FOUND,
                detail="payment has no provider_payment_charge_id",
            )
        key = provider_idempotency_key(request.idempotency_key, _STRIPE_IDEMPOTENCY_KEY_MAX)
        try:
            charge = await self._load_charge(client, target)
            if charge is None:
                return RefundResult(
                    ok=False,
                    error_code=ErrorCode.NOT_FOUND,
                    detail=f"{target} has no charge to refund",
                )
            if str(charge.currency).upper() != request.currency:
                return RefundResult(
                    ok=False,
                    error_code=ErrorCode.PROVIDER_ERROR,
                    detail=f"currency mismatch: charge is {charge.currency}, "
                    f"refund asks {request.currency}",
                )
            if charge.refunded:
                return await self._already_refunded(client, charge.id, key)

            params: dict[str, Any] = {
                "amount": request.amount_minor,
                # Free-text reasons go to metadata: Stripe's `reason` is a closed enum.
                "metadata": _metadata(request, key),
            }
            if target.startswith("pi_"):
                params["payment_intent"] = target
            else:
                params["charge"] = target
            refund = await client.v1.refunds.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            )
        except stripe.StripeError as exc:
            return _map_error(exc)

        status = refund.status or "succeeded"
        if status not in _OK_STATUSES:
            return RefundResult(
                ok=False,
                provider_refund_id=refund.id,
                error_code=ErrorCode.PROVIDER_ERROR,
                detail=f"refund status {status}: {getattr(refund, 'failure_reason', None)}",
            )
        log.info("stripe refund %s for %s: %s", refund.id, target, status)
        return RefundResult(ok=True, provider_refund_id=refund.id, pending=status == "pending")

    async def refund_status(self, provider_refund_id: str) -> RefundResult:
        """Where a refund stands (``refunds.retrieve``); see ``RefundTracker``."""
        client = self._client
        if client is None:
            return RefundResult(
                ok=False, error_code=ErrorCode.NOT_CONFIGURED, detail="no Stripe API key"
            )
        try:
            refund = await client.v1.refunds.retrieve_async(provider_refund_id)
        except stripe.StripeError as exc:
            return _map_error(exc)
        status = refund.status or "succeeded"
        if status == "succeeded":
            return RefundResult(ok=True, provider_refund_id=refund.id)
        if status in _FINAL_FAILURES:
            return RefundResult(
                ok=False,
                provider_refund_id=refund.id,
                error_code=ErrorCode.REFUND_CANCELED,
                detail=f"refund status {status}: {getattr(refund, 'failure_reason', None)}",
            )
        # pending, requires_action: Stripe is still working on it.
        return RefundResult(ok=True, provider_refund_id=refund.id, pending=True)

    @staticmethod
    async def _load_charge(client: stripe.StripeClient, target: str) -> stripe.Charge | None:
        """The charge behind ``target`` (a charge or a PaymentIntent id)."""
        if target.startswith("pi_"):
            intent = await client.v1.payment_intents.retrieve_async(
                target, params={"expand": ["latest_charge"]}
            )
            latest = intent.latest_charge
            if latest is None:
                return None
            if isinstance(latest, str):  # not expanded (should not happen, but cheap)
                return await client.v1.charges.retrieve_async(latest)
            return latest
        return await client.v1.charges.retrieve_async(target)

    @staticmethod
    async def _already_refunded(
        client: stripe.StripeClient, charge_id: str, key: str
    ) -> RefundResult:
        # A retry of our own finished refund should look like that refund, not like
        # someone else's: find it by the idempotency key we stored in its metadata.
        refunds = await client.v1.refunds.list_async(params={"charge": charge_id, "limit": 100})
        for existing in refunds.data:
            # StripeObject is not a dict in SDK 16: convert before .get().
            metadata = existing.metadata.to_dict() if existing.metadata else {}
            if metadata.get(_METADATA_KEY) == key:
                return RefundResult(
                    ok=True,
                    provider_refund_id=existing.id,
                    pending=getattr(existing, "status", None) == "pending",
                )
        return RefundResult(
            ok=True,
            error_code=ErrorCode.ALREADY_REFUNDED,
            detail=f"charge {charge_id} is already fully refunded",
        )


def _metadata(request: RefundRequest, key: str) -> dict[str, str]:
    metadata = {
        _METADATA_KEY: key,
        "telegram_payment_charge_id": request.telegram_payment_charge_id[:500],
        "telegram_user_id": str(request.user_id),
    }
    if request.reason:
        metadata["reason"] = request.reason[:500]  # Stripe: values up to 500 chars
    return metadata


def _map_error(exc: stripe.StripeError) -> RefundResult:
    detail = f"{type(exc).__name__}: {exc.user_message or exc}"
    if exc.code:
        detail = f"{detail} (code {exc.code})"
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return RefundResult(ok=False, error_code=ErrorCode.NETWORK_ERROR, detail=detail)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return RefundResult(ok=False, error_code=ErrorCode.NOT_CONFIGURED, detail=detail)
    if isinstance(exc, stripe.IdempotencyError) or exc.http_status == 409:
        # The same idempotency key is in flight (two workers, or a retry overlapping a slow
        # call): the first request decides; this one learns the outcome on a later try.
        return RefundResult(ok=False, error_code=ErrorCode.IN_PROGRESS, detail=detail)
    if exc.code == "charge_already_refunded":
        return RefundResult(ok=True, error_code=ErrorCode.ALREADY_REFUNDED, detail=detail)
    if exc.code == "resource_missing" or exc.http_status == 404:
        # localstripe answers 404 without a code; Stripe says resource_missing.
        return RefundResult(ok=False, error_code=ErrorCode.NOT_FOUND, detail=detail)
    if exc.http_status is not None and exc.http_status >= 500:
        # Stripe: the outcome of a 5xx is unknown; retrying with the same key is safe.
        return RefundResult(ok=False, error_code=ErrorCode.NETWORK_ERROR, detail=detail)
    return RefundResult(ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=detail)
