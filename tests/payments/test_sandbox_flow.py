"""End to end: invoices built here, sent through aiogram to the sandbox Bot API server, paid
by a simulated user, then refunded through the provider fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.sandbox import PaymentResult, SandboxServer, SimUser
from bot.sandbox.yookassa import FakeYooKassa
from payments import (
    PaymentMethod,
    ReceiptSpec,
    RefundRequest,
    StarsRefunder,
    StripeRefunder,
    YooKassaRefunder,
    build_invoice,
)
from tests.payments.conftest import MakeCharge

TOKEN = "123456:TEST"


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    server = SandboxServer(precheckout_timeout=5.0)
    await server.start()
    server.add_bot(token=TOKEN, username="webinarpass_bot", first_name="WebinarPass")
    yield server
    await server.stop()
    assert not server.internal_errors, server.internal_errors


@pytest.fixture
async def sandbox_bot(sandbox: SandboxServer) -> AsyncIterator[Bot]:
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
    yield bot
    await bot.session.close()


@pytest.fixture
async def alice(sandbox: SandboxServer, sandbox_bot: Bot) -> SimUser:
    user = sandbox.user(1001, "Alice", username="alice", language_code="ru")
    await user.start()
    await _drain(sandbox_bot)
    return user


async def _drain(bot: Bot) -> None:
    updates = await bot.get_updates(timeout=0)
    if updates:
        await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)


async def pay(bot: Bot, user: SimUser, invoice: Any, **kwargs: Any) -> PaymentResult:
    """Pay like the app does, answering the pre-checkout query as the bot would."""
    paying = asyncio.create_task(user.pay(invoice, **kwargs))
    offset = None
    for _ in range(20):
        updates = await bot.get_updates(offset=offset, timeout=1)
        if updates:
            offset = updates[-1].update_id + 1
        queries = [u.pre_checkout_query for u in updates if u.pre_checkout_query]
        if queries:
            await bot.answer_pre_checkout_query(queries[0].id, ok=True)
            break
    result = await paying
    assert result.ok, result
    return result


def refund_request(method: PaymentMethod, paid: PaymentResult, user_id: int) -> RefundRequest:
    assert paid.telegram_payment_charge_id
    return RefundRequest(
        method=method,
        user_id=user_id,
        telegram_payment_charge_id=paid.telegram_payment_charge_id,
        provider_payment_charge_id=paid.provider_payment_charge_id,
        amount_minor=paid.total_amount,
        currency=paid.currency,
        idempotency_key=f"refund-{paid.telegram_payment_charge_id}",
    )


async def test_stars_invoice_payment_and_refund(
    sandbox: SandboxServer, sandbox_bot: Bot, alice: SimUser
) -> None:
    kwargs = build_invoice(
        PaymentMethod.STARS,
        chat_id=alice.id,
        title="Python webinar: a very long title that Telegram would refuse",
        description="Two hours live",
        payload="order:1",
        amount_minor=150,
        currency="XTR",
        label="Ticket",
    )
    await sandbox_bot.send_invoice(**kwargs)
    paid = await pay(sandbox_bot, alice, await alice.next_message())
    assert (paid.total_amount, paid.currency, paid.invoice_payload) == (150, "XTR", "order:1")

    refunder = StarsRefunder(sandbox_bot)
    request = refund_request(PaymentMethod.STARS, paid, alice.id)
    assert (await refunder.refund(request)).ok
    again = await refunder.refund(request)
    assert (again.ok, again.error_code) == (True, "already_refunded")
    assert [(e.telegram_payment_charge_id, e.source) for e in sandbox.refund_events] == [
        (paid.telegram_payment_charge_id, "bot")
    ]


async def test_yookassa_invoice_link_payment_and_refund(
    sandbox: SandboxServer,
    sandbox_bot: Bot,
    alice: SimUser,
    fake_yookassa: FakeYooKassa,
    yookassa_refunder: YooKassaRefunder,
) -> None:
    kwargs = build_invoice(
        PaymentMethod.YOOKASSA,
        title="Вебинар по Python",
        description="Два часа в прямом эфире",
        payload="order:2",
        amount_minor=99000,
        currency="RUB",
        provider_token="381764678:TEST:100500",
        label="Билет",
        need_email=True,
        receipt=ReceiptSpec(),
    )
    link = await sandbox_bot.create_invoice_link(**kwargs)
    sent = [c for c in sandbox.calls if c.method == "createInvoiceLink"][-1]
    assert json.loads(sent.params["provider_data"])["receipt"]["items"][0]["amount"] == {
        "value": "990.00",
        "currency": "RUB",
    }

    # YooKassa took the money: the payment id is what Telegram reports as the provider's.
    payment = fake_yookassa.add_payment(99000)
    paid = await pay(
        sandbox_bot,
        alice,
        link,
        email="alice@example.org",
        provider_payment_charge_id=payment["id"],
    )
    assert paid.provider_payment_charge_id == payment["id"]

    result = await yookassa_refunder.refund(refund_request(PaymentMethod.YOOKASSA, paid, alice.id))
    assert result.ok, result
    assert fake_yookassa.payments[payment["id"]]["refunded_amount"]["value"] == "990.00"


async def test_stripe_invoice_payment_and_refund(
    sandbox_bot: Bot,
    alice: SimUser,
    make_charge: MakeCharge,
    stripe_refunder: StripeRefunder,
) -> None:
    kwargs = build_invoice(
        PaymentMethod.STRIPE,
        chat_id=alice.id,
        title="Python webinar",
        description="Two hours live",
        payload="order:3",
        amount_minor=1999,
        currency="USD",
        provider_token="284685063:TEST:stripe",
        label="Ticket",
    )
    await sandbox_bot.send_invoice(**kwargs)
    charge_id = await make_charge(1999, "usd")
    paid = await pay(
        sandbox_bot, alice, await alice.next_message(), provider_payment_charge_id=charge_id
    )

    result = await stripe_refunder.refund(refund_request(PaymentMethod.STRIPE, paid, alice.id))
    assert result.ok, result
    assert result.provider_refund_id
