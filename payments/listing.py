"""What the payment providers recorded: their charges in a time window, for reconciliation.

One async generator per provider, each yielding :class:`ProviderCharge` for the money the
provider actually took between ``since`` and ``until`` (both inclusive, timezone-aware),
with whether and how much of it went back. Plain provider I/O: no database.

Matching with our ``Payment`` rows:

* Stars: ``telegram_payment_charge_id`` (Telegram's transaction id is the charge id).
* Stripe: ``provider_payment_charge_id`` is the charge id (``ch_...``); Telegram may report
  the PaymentIntent instead, hence ``payment_intent_id``.
* YooKassa: ``provider_payment_charge_id`` is the YooKassa payment id.

A provider or network failure raises :class:`ListingError`: a partial listing must never
look like a complete one. ``request_timeout`` bounds each request to the provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import StarTransaction, TransactionPartnerUser

from payments.base import PaymentMethod, from_decimal, normalize_currency

if TYPE_CHECKING:
    import stripe

# The provider SDKs (stripe, yookassa with requests) are imported where a listing runs: they
# take a noticeable share of the bot's start-up, and most deployments list one provider or none.

__all__ = [
    "ListingError",
    "ProviderCharge",
    "list_star_charges",
    "list_stripe_charges",
    "list_yookassa_charges",
]

MAX_PAGE: Final = 100  # the most any of the three APIs returns at once
_PAYLOAD_KEY: Final = "invoice_payload"
_TELEGRAM_CHARGE_KEY: Final = "telegram_payment_charge_id"
_TELEGRAM_USER_KEY: Final = "telegram_user_id"


@dataclass(frozen=True, slots=True)
class ProviderCharge:
    """One charge as its provider recorded it.

    ``charge_id`` is the provider's own id (Stars: the transaction id; Stripe: ``ch_...``;
    YooKassa: the payment id). ``payload`` is the invoice payload (our Order's token) when the
    provider knows it: always for Stars, for Stripe and YooKassa only when the charge's
    metadata carries ``invoice_payload``. ``user_id`` is the Telegram user (Stars: always;
    others: from ``telegram_user_id`` metadata, if any). ``refunded`` is true once the whole
    amount is back (or on its way: a pending refund counts), ``refunded_minor`` says how much.
    """

    method: PaymentMethod
    charge_id: str
    telegram_payment_charge_id: str | None
    provider_payment_charge_id: str | None
    user_id: int | None
    amount_minor: int
    currency: str
    payload: str | None
    created_at: datetime
    refunded: bool
    refunded_minor: int
    refund_ids: tuple[str, ...]
    payment_intent_id: str | None = None


class ListingError(RuntimeError):
    """A provider could not be listed completely (network, credentials, provider error)."""

    def __init__(self, method: PaymentMethod, detail: str) -> None:
        super().__init__(f"{method.value}: {detail}")
        self.method = method
        self.detail = detail


def _check_window(since: datetime, until: datetime) -> None:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if since > until:
        raise ValueError("since is after until")


def _page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE}, got {page_size}")
    return page_size


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):  # stripe.StripeObject is not a dict
        value = value.to_dict()
    return {str(key): str(item) for key, item in dict(value).items()}


def _user_id(metadata: dict[str, str]) -> int | None:
    raw = metadata.get(_TELEGRAM_USER_KEY, "")
    return int(raw) if raw.isdigit() else None


# -- Telegram Stars -------------------------------------------------------------------------


async def list_star_charges(
    bot: Bot,
    since: datetime,
    until: datetime,
    *,
    page_size: int = MAX_PAGE,
    request_timeout: float = 30.0,
) -> AsyncIterator[ProviderCharge]:
    """Stars payments to ``bot`` in the window, from ``getStarTransactions``.

    The Bot API documents the list as chronological; Telegram has been seen to answer newest
    first. Both are handled: when the pages run newest first, reading stops at the first
    transaction older than ``since``; otherwise every page is read, since the refunds of the
    window's payments may come after ``until``. A refund is an outgoing transaction to the user
    with the id of the payment it returns.
    """
    _check_window(since, until)
    limit = _page_size(page_size)
    payments: dict[str, StarTransaction] = {}
    refunds: dict[str, list[StarTransaction]] = {}
    offset = 0
    previous: datetime | None = None
    rising = falling = False
    while True:
        try:
            answer = await bot.get_star_transactions(
                offset=offset, limit=limit, request_timeout=max(1, round(request_timeout))
            )
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError) as exc:
            raise ListingError(PaymentMethod.STARS, f"{type(exc).__name__}: {exc}") from exc
        page = answer.transactions
        reached_older = False
        for transaction in page:
            date = transaction.date
            if previous is not None:
                rising = rising or date > previous
                falling = falling or date < previous
            previous = date
            if isinstance(transaction.receiver, TransactionPartnerUser):
                refunds.setdefault(transaction.id, []).append(transaction)
            elif isinstance(transaction.source, TransactionPartnerUser):
                if since <= date <= until:
                    payments[transaction.id] = transaction
                elif date < since and falling and not rising:
                    reached_older = True
        offset += len(page)
        if len(page) < limit or reached_older:
            break
    for transaction in sorted(payments.values(), key=lambda item: item.date):
        source = transaction.source
        assert isinstance(source, TransactionPartnerUser)
        returned = refunds.get(transaction.id, [])
        refunded_minor = sum(item.amount for item in returned)
        yield ProviderCharge(
            method=PaymentMethod.STARS,
            charge_id=transaction.id,
            telegram_payment_charge_id=transaction.id,
            provider_payment_charge_id=None,
            user_id=source.user.id,
            amount_minor=transaction.amount,
            currency="XTR",
            payload=source.invoice_payload,
            created_at=transaction.date,
            refunded=bool(returned) and refunded_minor >= transaction.amount,
            refunded_minor=refunded_minor,
            refund_ids=tuple(item.id for item in returned),
        )


# -- Stripe ---------------------------------------------------------------------------------


async def list_stripe_charges(
    api_key: str,
    since: datetime,
    until: datetime,
    *,
    api_base: str | None = None,
    page_size: int = MAX_PAGE,
    request_timeout: float = 30.0,
) -> AsyncIterator[ProviderCharge]:
    """Succeeded Stripe charges in the window (``Charge.list``, auto-paging).

    The SDK is asked for ``created[gt]`` only and the upper bound is applied here: Stripe
    accepts ``gte``/``lte`` too, but localstripe (the tests' Stripe) implements ``gt`` alone.
    """
    import stripe

    _check_window(since, until)
    limit = _page_size(page_size)
    timeout = request_timeout
    http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))
    base_addresses: dict[str, str | None] = {"api": api_base.rstrip("/")} if api_base else {}
    client = stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,  # type: ignore[arg-type]
        http_client=http,
        max_network_retries=2,
    )
    lower = int(since.timestamp())
    if lower < since.timestamp():  # created is whole seconds: the first second fully inside
        lower += 1
    upper = int(until.timestamp())
    try:
        first = await _stripe(
            client.v1.charges.list_async(
                params={"created": {"gt": lower - 1}, "limit": limit}  # type: ignore[typeddict-item]
            ),
            timeout,
        )
        charges = first.auto_paging_iter().__aiter__()
        while True:
            try:
                charge = await _stripe(charges.__anext__(), timeout)
            except StopAsyncIteration:
                break
            if charge.created > upper or charge.status != "succeeded":
                continue
            yield await _stripe_charge(client, charge, timeout)
    finally:
        await http.close_async()


async def _stripe(call: Any, timeout: float) -> Any:  # noqa: ASYNC109 - per request
    import stripe

    try:
        return await asyncio.wait_for(call, timeout)
    except stripe.StripeError as exc:
        raise ListingError(PaymentMethod.STRIPE, f"{type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise ListingError(PaymentMethod.STRIPE, f"no answer within {timeout:g}s") from exc


async def _stripe_charge(
    client: stripe.StripeClient,
    charge: stripe.Charge,
    timeout: float,  # noqa: ASYNC109 - per request
) -> ProviderCharge:
    metadata = _metadata(charge.metadata)
    refunded_minor = int(charge.amount_refunded or 0)
    refund_ids: tuple[str, ...] = ()
    if refunded_minor:
        refunds = await _stripe(
            client.v1.refunds.list_async(params={"charge": charge.id, "limit": MAX_PAGE}),
            timeout,
        )
        refund_ids = tuple(
            refund.id for refund in refunds.data if refund.status in ("succeeded", "pending")
        )
    intent = charge.payment_intent
    return ProviderCharge(
        method=PaymentMethod.STRIPE,
        charge_id=charge.id,
        telegram_payment_charge_id=metadata.get(_TELEGRAM_CHARGE_KEY),
        provider_payment_charge_id=charge.id,
        user_id=_user_id(metadata),
        amount_minor=int(charge.amount),
        currency=normalize_currency(str(charge.currency)),
        payload=metadata.get(_PAYLOAD_KEY),
        created_at=datetime.fromtimestamp(charge.created, UTC),
        refunded=bool(charge.refunded) or refunded_minor >= int(charge.amount),
        refunded_minor=refunded_minor,
        refund_ids=refund_ids,
        payment_intent_id=intent if isinstance(intent, str) else getattr(intent, "id", None),
    )


# -- YooKassa -------------------------------------------------------------------------------


async def list_yookassa_charges(
    shop_id: str | int,
    secret_key: str,
    since: datetime,
    until: datetime,
    *,
    api_url: str | None = None,
    page_size: int = MAX_PAGE,
    request_timeout: float = 60.0,
) -> AsyncIterator[ProviderCharge]:
    """Succeeded YooKassa payments in the window (``Payment.list`` with ``created_at.gte/lte``
    and the cursor). The SDK is blocking: each page runs in a worker thread, under the lock
    that guards the SDK's process-global credentials, and is bounded by ``timeout``."""
    _check_window(since, until)
    limit = _page_size(page_size)
    lister = _YooKassaLister(str(shop_id), secret_key, api_url, request_timeout)
    params: dict[str, Any] = {
        "created_at.gte": _yookassa_time(since),
        "created_at.lte": _yookassa_time(until),
        "status": "succeeded",
        "limit": limit,
    }
    while True:
        page = await lister.run(lister.payments_page, params)
        for payment in page.items or []:
            yield await lister.charge(payment)
        cursor = page.next_cursor
        if not cursor:
            break
        params = {**params, "cursor": cursor}


def _yookassa_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _YooKassaLister:
    def __init__(self, shop_id: str, secret_key: str, api_url: str | None, timeout: float):
        self._shop_id = shop_id
        self._secret_key = secret_key
        self._api_url = api_url.rstrip("/") if api_url else None
        self._timeout = timeout

    async def run(self, blocking: Any, *args: Any) -> Any:
        from payments.yookassa_refunds import run_sdk

        try:
            return await asyncio.wait_for(run_sdk(blocking, *args), self._timeout)
        except TimeoutError as exc:
            raise ListingError(
                PaymentMethod.YOOKASSA, f"no answer within {self._timeout:g}s"
            ) from exc
        except Exception as exc:
            # The SDK raises its ApiError family, requests' errors, or an AttributeError
            # when the connection failed (see yookassa_refunds._is_network_failure).
            raise ListingError(PaymentMethod.YOOKASSA, f"{type(exc).__name__}: {exc}") from exc

    def _configure(self) -> None:
        from yookassa import Configuration

        kwargs: dict[str, Any] = {"api_url": self._api_url} if self._api_url else {}
        Configuration.configure(self._shop_id, self._secret_key, **kwargs)

    def payments_page(self, params: dict[str, Any]) -> Any:
        from yookassa import Payment

        from payments.yookassa_refunds import SDK_LOCK

        with SDK_LOCK:
            self._configure()
            return Payment.list(params)

    def refunds_of(self, payment_id: str) -> list[str]:
        ids: list[str] = []
        params: dict[str, Any] = {"payment_id": payment_id, "limit": MAX_PAGE}
        from yookassa import Refund

        from payments.yookassa_refunds import SDK_LOCK

        with SDK_LOCK:
            self._configure()
            while True:
                page = Refund.list(params)
                ids.extend(
                    refund.id
                    for refund in page.items or []
                    if refund.status in ("succeeded", "pending")
                )
                if not page.next_cursor:
                    return ids
                params = {**params, "cursor": page.next_cursor}

    async def charge(self, payment: Any) -> ProviderCharge:
        currency = normalize_currency(payment.amount.currency)
        amount = from_decimal(payment.amount.value, currency)
        refunded = payment.refunded_amount
        refunded_minor = from_decimal(refunded.value, currency) if refunded is not None else 0
        refund_ids: tuple[str, ...] = ()
        if refunded_minor:
            refund_ids = tuple(await self.run(self.refunds_of, payment.id))
        metadata = _metadata(payment.metadata)
        return ProviderCharge(
            method=PaymentMethod.YOOKASSA,
            charge_id=payment.id,
            telegram_payment_charge_id=metadata.get(_TELEGRAM_CHARGE_KEY),
            provider_payment_charge_id=payment.id,
            user_id=_user_id(metadata),
            amount_minor=amount,
            currency=currency,
            payload=metadata.get(_PAYLOAD_KEY),
            created_at=datetime.fromisoformat(payment.created_at.replace("Z", "+00:00")),
            refunded=refunded_minor >= amount,
            refunded_minor=refunded_minor,
            refund_ids=refund_ids,
        )
