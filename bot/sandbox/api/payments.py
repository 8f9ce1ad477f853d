"""Payments and Stars: invoices, pre-checkout queries, charges, Stars refunds and transactions.

Card invoices (Stripe, YooKassa) may be backed by a provider fake: a
:class:`CardProcessor` registered for a provider token records each payment on its side,
and its id becomes the ``provider_payment_charge_id``, as Telegram reports it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

from bot.sandbox.api.callbacks import check_reply_markup, take_query
from bot.sandbox.api.chats import resolve_target
from bot.sandbox.api.messages import reply_to, send
from bot.sandbox.core.errors import bad
from bot.sandbox.core.host import CardProcessor, Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import (
    BotMessage,
    Charge,
    InvoiceInfo,
    PreCheckoutAnswer,
    RefundEvent,
    SimBot,
    StarTransaction,
    UserProfile,
)
from bot.sandbox.transcript import format_amount

__all__ = [
    "CURRENCIES",
    "CardProcessor",
    "find_charge",
    "payment_chat",
    "refund_charge",
    "resolve_invoice",
    "take_payment",
]

# Currencies accepted by Telegram Payments (core.telegram.org/bots/payments#supported-currencies).
# A compact string of ISO codes reads better than a hundred-line list literal.
CURRENCIES = frozenset(
    """AED AFN ALL AMD ARS AUD AZN BAM BDT BGN BHD BND BOB BRL BYN CAD CHF CLP CNY COP CRC CZK
    DKK DOP DZD EGP ETB EUR GBP GEL GHS GTQ HKD HNL HRK HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KRW KZT LBP LKR MAD MDL MMK MNT MOP MUR MVR MXN MYR MZN NGN NIO NOK NPR NZD PAB PEN
    PHP PKR PLN PYG QAR RON RSD RUB SAR SEK SGD SYP THB TJS TRY TTD TWD TZS UAH UGX USD UYU UZS
    VEF VND YER ZAR XTR""".split()  # noqa: SIM905
)
STARS_SUBSCRIPTION_PERIOD = 2592000


def parse_invoice(server: Host, bot: SimBot, params: Params, *, link: bool) -> InvoiceInfo:
    title = params.string("title", required=True) or ""
    description = params.string("description", required=True) or ""
    payload = params.string("payload", required=True) or ""
    currency = params.string("currency", required=True) or ""
    provider_token = params.string("provider_token") or ""
    if len(title) > 32:
        raise bad("title is too long")
    if len(description) > 255:
        raise bad("description is too long")
    if len(payload.encode()) > 128:
        raise bad("payload is too long")
    if currency not in CURRENCIES:
        raise bad("CURRENCY_INVALID")
    prices = params.structured("prices", required=True)
    if not isinstance(prices, list) or not prices:
        raise bad("can't parse prices JSON object")
    for price in prices:
        if not isinstance(price, dict) or not isinstance(price.get("label"), str):
            raise bad("can't parse prices JSON object")
        amount = price.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise bad("CURRENCY_TOTAL_AMOUNT_INVALID")
    subscription_period = params.integer("subscription_period") if link else None
    if currency == "XTR":
        has_tips = params.integer("max_tip_amount") or params.has("suggested_tip_amounts")
        if len(prices) != 1 or provider_token or has_tips:
            raise bad("STARS_INVOICE_INVALID")
        if subscription_period is not None and subscription_period != STARS_SUBSCRIPTION_PERIOD:
            raise bad("SUBSCRIPTION_PERIOD_INVALID")
    else:
        if not provider_token:
            raise bad("PAYMENT_PROVIDER_INVALID")
        if subscription_period is not None:
            raise bad("SUBSCRIPTION_PERIOD_INVALID")
    photo_url = params.string("photo_url")
    if photo_url and not photo_url.startswith(("http://", "https://")):
        raise bad("PHOTO_URL_INVALID")
    provider_data = params.raw.get("provider_data")
    if provider_data is not None and not isinstance(provider_data, str):
        provider_data = json.dumps(provider_data)
    return InvoiceInfo(
        bot_token=bot.token,
        title=title,
        description=description,
        payload=payload,
        currency=currency,
        prices=prices,
        provider_token=provider_token,
        start_parameter=params.string("start_parameter") or "",
        provider_data=provider_data,
        photo_url=photo_url,
        need_name=params.flag("need_name"),
        need_email=params.flag("need_email"),
        need_phone_number=params.flag("need_phone_number"),
        need_shipping_address=params.flag("need_shipping_address"),
        send_email_to_provider=params.flag("send_email_to_provider"),
        send_phone_number_to_provider=params.flag("send_phone_number_to_provider"),
        subscription_period=subscription_period,
    )


def resolve_invoice(server: Host, bot: SimBot, invoice: BotMessage | str) -> InvoiceInfo:
    if isinstance(invoice, str):
        info = server.state.invoice_links.get(invoice)
        if info is None or info.bot_token != bot.token:
            raise ValueError(f"unknown invoice link {invoice!r}")
        return info
    found = server.state.invoices.get((bot.token, invoice.chat_id, invoice.message_id))
    if found is None:
        raise ValueError(f"message {invoice.message_id} has no invoice")
    return found


def payment_chat(server: Host, user: UserProfile, info: InvoiceInfo) -> dict[str, Any]:
    if info.chat_id is not None and info.chat_id in server.state.chats:
        return server.state.chats[info.chat_id].chat_dict()
    return user.private_chat()


async def take_payment(
    server: Host,
    bot: SimBot,
    user: UserProfile,
    info: InvoiceInfo,
    order_info: dict[str, Any],
    provider_charge_id: str | None,
) -> Charge:
    """Charge ``user`` for ``info``: a Stars transaction, or a card payment at its provider."""
    number = next(server.state.counter)
    now = server.clock()
    if info.currency == "XTR":
        telegram_id = "stx" + secrets.token_urlsafe(48)
        provider_id = provider_charge_id or f"{bot.id}_{user.id}_{number}"
    else:
        telegram_id = f"{int(now)}_{user.id}_{number}_{secrets.token_hex(4)}"
        processor = server.card_processors.get(info.provider_token)
        if provider_charge_id is None and processor is not None:
            provider_charge_id = await processor.record_payment(
                amount_minor=info.total_amount, currency=info.currency, description=info.title
            )
        provider_id = provider_charge_id or "ch_" + secrets.token_hex(12)
    charge = Charge(
        telegram_payment_charge_id=telegram_id,
        provider_payment_charge_id=provider_id,
        bot_token=bot.token,
        user_id=user.id,
        invoice=info,
        order_info=order_info,
        created=now,
    )
    server.state.charges[telegram_id] = charge
    if info.currency == "XTR":
        server.state.star_transactions.append(_transaction(charge, int(now), incoming=True))
    return charge


def find_charge(server: Host, charge_id: str) -> Charge | None:
    return server.state.charges.get(charge_id)


def refund_charge(server: Host, charge: Charge, source: Literal["bot", "telegram"]) -> None:
    charge.refunded = True
    now = server.clock()
    server.state.star_transactions.append(_transaction(charge, int(now), incoming=False))
    server.refund_events.append(
        RefundEvent(
            charge.telegram_payment_charge_id,
            charge.user_id,
            charge.total_amount,
            charge.currency,
            charge.invoice.payload,
            source,
            now,
        )
    )
    profile = server.state.profiles.get(charge.user_id)
    name = profile.first_name if profile else str(charge.user_id)
    by = "🤖 refunds" if source == "bot" else "💸 Telegram refunds"
    server.state.transcript.add(
        f"{by} {format_amount(charge.total_amount, charge.currency)} → {name} "
        f"({charge.telegram_payment_charge_id})",
        charge.user_id,
    )


def _transaction(charge: Charge, date: int, *, incoming: bool) -> StarTransaction:
    # A refund carries the id of the payment it returns, as Telegram's StarTransaction does.
    return StarTransaction(
        id=charge.telegram_payment_charge_id,
        bot_token=charge.bot_token,
        amount=charge.total_amount,
        date=date,
        user_id=charge.user_id,
        invoice_payload=charge.invoice.payload,
        incoming=incoming,
    )


# -- invite links -----------------------------------------------------------------------


@api("sendInvoice", rate_limited=True)
async def send_invoice(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=True)
    info = parse_invoice(server, bot, params, link=False)
    markup = check_reply_markup(params.structured("reply_markup"), inline_only=True)
    if markup is not None and not markup["inline_keyboard"][0][0].get("pay"):
        raise bad("REPLY_MARKUP_BUY_EMPTY")
    content = {**reply_to(server, bot, target, params), "invoice": info.invoice_dict()}
    data = send(server, bot, target, content, markup)
    info.chat_id = target.chat_id
    info.message_id = data["message_id"]
    server.state.invoices[(bot.token, target.chat_id, data["message_id"])] = info
    return data


@api("createInvoiceLink")
async def create_invoice_link(server: Host, bot: SimBot, params: Params) -> str:
    info = parse_invoice(server, bot, params, link=True)
    info.link = "https://t.me/$" + secrets.token_urlsafe(24)
    server.state.invoice_links[info.link] = info
    return info.link


@api("answerPreCheckoutQuery")
async def answer_pre_checkout_query(server: Host, bot: SimBot, params: Params) -> bool:
    query_id = params.string("pre_checkout_query_id", required=True)
    ok = params.flag("ok", required=True)
    error_message = params.string("error_message")
    if not ok and not error_message:
        raise bad("ERROR_MESSAGE_EMPTY")
    query = take_query(server, bot, query_id, pre_checkout=True)
    query.future.set_result(PreCheckoutAnswer(ok, None if ok else error_message, time.monotonic()))
    return True


@api("refundStarPayment")
async def refund_star_payment(server: Host, bot: SimBot, params: Params) -> bool:
    user_id = params.integer("user_id", required=True)
    charge_id = params.string("telegram_payment_charge_id", required=True) or ""
    charge = server.state.charges.get(charge_id)
    if (
        charge is None
        or charge.user_id != user_id
        or charge.bot_token != bot.token
        or charge.currency != "XTR"
    ):
        raise bad("CHARGE_NOT_FOUND")
    if charge.refunded:
        raise bad("CHARGE_ALREADY_REFUNDED")
    refund_charge(server, charge, source="bot")
    return True


@api("getStarTransactions")
async def get_star_transactions(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    """``StarTransactions`` in chronological order, as the Bot API documents it."""
    offset = params.integer("offset") or 0
    limit = params.integer("limit")
    if offset < 0:
        raise bad("offset must be non-negative")
    if limit is None:
        limit = 100
    if not 1 <= limit <= 100:
        raise bad("limit must be between 1 and 100")
    mine = [entry for entry in server.state.star_transactions if entry.bot_token == bot.token]
    if server.star_transactions_newest_first:
        mine.reverse()
    return {"transactions": [_transaction_dict(server, t) for t in mine[offset : offset + limit]]}


def _transaction_dict(server: Host, entry: StarTransaction) -> dict[str, Any]:
    profile = server.state.profiles.get(entry.user_id) or UserProfile(entry.user_id, "User")
    partner = {
        "type": "user",
        "transaction_type": "invoice_payment",
        "user": profile.user_dict(),
        "invoice_payload": entry.invoice_payload,
    }
    side = "source" if entry.incoming else "receiver"
    return {"id": entry.id, "amount": entry.amount, "date": entry.date, side: partner}
