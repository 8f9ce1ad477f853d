"""A successful payment whose payload matches no order is recorded, refunded and explained.

Service level with the real refunders (Stars through a Bot API fake, Stripe through
localstripe, YooKassa through the fake YooKassa), then end to end through the real bot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.context import AppContext
from bot.factory import create_refunders
from bot.sandbox import SandboxServer
from bot.sandbox.yookassa import FakeYooKassa
from bot.services import Services
from bot.services.purchases import PaymentResult
from storage.enums import (
    OutboxKind,
    PaymentMethod,
    PaymentStatus,
    RefundReason,
    RefundStatus,
)
from storage.models import Order, OutboxMessage, Payment, Refund, Ticket
from tests.factories import make_org, make_user, make_webinar
from tests.sales.conftest import (
    OWNER_ID,
    SECRET_KEY,
    SHOP_ID,
    STRIPE_KEY,
    FakeBotApi,
    refunds_done,
)


async def rows(session: AsyncSession, model: type, *where: Any) -> list[Any]:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    result = list((await session.scalars(statement)).all())
    await session.commit()
    return result


async def pay_unmatched(
    app: AppContext,
    *,
    charge: str,
    amount: int = 100,
    currency: str = "XTR",
    provider_charge: str | None = None,
    user_id: int = 2001,
):  # type: ignore[no-untyped-def]
    async with app.session_factory() as session:
        outcome = await Services(session, app).purchases.complete_payment(
            user_id=user_id,
            payload="no-such-order-token",
            total_amount=amount,
            currency=currency,
            telegram_charge_id=charge,
            provider_charge_id=provider_charge,
        )
    await refunds_done(app)
    return outcome


async def test_an_unmatched_stars_payment_is_stored_refunded_and_explained_once(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    await make_user(session, 2001, language_code="es")
    await session.commit()
    fake_bot_api.charges["stxLOST1"] = 2001

    outcome = await pay_unmatched(stars_app, charge="stxLOST1")
    assert (outcome.result, outcome.reason) == (PaymentResult.REFUNDING, RefundReason.UNMATCHED)
    [payment] = await rows(session, Payment)
    assert payment.order_id is None
    assert (payment.method, payment.amount_minor, payment.currency) == ("stars", 100, "XTR")
    assert payment.status == PaymentStatus.REFUNDED
    [refund] = await rows(session, Refund)
    assert (refund.reason, refund.status) == (RefundReason.UNMATCHED, RefundStatus.SUCCEEDED)
    assert fake_bot_api.refunded == {"stxLOST1"}
    [notice] = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert notice.chat_id == 2001
    assert "reembols" in notice.payload["text"]  # the buyer's language: no organization
    assert await rows(session, Ticket) == []

    # Telegram redelivers the update: the charge id is known, nothing changes.
    replay = await pay_unmatched(stars_app, charge="stxLOST1")
    assert replay.result == PaymentResult.REPLAY
    assert len(await rows(session, Payment)) == 1
    assert len(fake_bot_api.calls) == 1
    assert len(await rows(session, OutboxMessage)) == 1


async def test_an_unmatched_yookassa_payment_is_refunded_by_its_provider_id(
    session: AsyncSession,
    app_context: AppContext,
    fake_yookassa: FakeYooKassa,
    create_payment: Any,
) -> None:
    app_context.settings = app_context.settings.model_copy(
        update={
            "yookassa_shop_id": SHOP_ID,
            "yookassa_secret_key": SecretStr(SECRET_KEY),
            "yookassa_api_url": fake_yookassa.url,
        }
    )
    app_context.refunders = create_refunders(app_context.settings, app_context.bot)
    await make_user(session, 2001, language_code="ru")
    await session.commit()
    provider_payment = await create_payment("990.00", "RUB")

    outcome = await pay_unmatched(
        app_context,
        charge="tg-yk-1",
        amount=99000,
        currency="RUB",
        provider_charge=provider_payment,
    )
    assert outcome.result == PaymentResult.REFUNDING
    [payment] = await rows(session, Payment)
    assert (payment.method, payment.status) == (PaymentMethod.YOOKASSA, PaymentStatus.REFUNDED)
    [provider_refund] = fake_yookassa.refunds_for(provider_payment)
    assert provider_refund["amount"] == {"value": "990.00", "currency": "RUB"}
    [notice] = await rows(session, OutboxMessage)
    assert "990,00" in notice.payload["text"]


async def test_an_unmatched_stripe_payment_is_refunded_by_its_charge(
    session: AsyncSession, app_context: AppContext, localstripe: Any, make_charge: Any
) -> None:
    app_context.settings = app_context.settings.model_copy(
        update={"stripe_api_key": SecretStr(STRIPE_KEY), "stripe_api_base": localstripe.api_base}
    )
    app_context.refunders = create_refunders(app_context.settings, app_context.bot)
    await make_user(session, 2001)
    await session.commit()
    charge = await make_charge(1999, "usd")

    outcome = await pay_unmatched(
        app_context, charge="tg-st-1", amount=1999, currency="USD", provider_charge=charge
    )
    assert outcome.result == PaymentResult.REFUNDING
    [payment] = await rows(session, Payment)
    assert (payment.method, payment.status) == (PaymentMethod.STRIPE, PaymentStatus.REFUNDED)
    [refund] = await rows(session, Refund)
    assert (refund.provider_refund_id or "").startswith("re_")


async def test_an_unmatched_payment_that_cannot_be_refunded_alerts_the_bot_owners(
    session: AsyncSession, app_context: AppContext
) -> None:
    await make_user(session, 2001)
    await make_user(session, OWNER_ID, language_code="it")
    await session.commit()
    # No Stripe key in this deployment: the refund cannot be made here.
    outcome = await pay_unmatched(
        app_context, charge="tg-st-2", amount=1999, currency="USD", provider_charge="ch_lost"
    )
    assert outcome.result == PaymentResult.REFUNDING
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUND_FAILED
    [refund] = await rows(session, Refund)
    assert (refund.status, refund.error_code) == (RefundStatus.FAILED, "not_configured")
    found = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    [alert] = [n.payload["text"] for n in found if n.chat_id == OWNER_ID]
    assert "tg-st-2" in alert
    assert "rimborso" in alert  # the owner's own language


async def test_the_bot_refunds_a_payment_for_an_order_it_no_longer_has(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    org = await make_org(session, OWNER_ID, language="it")
    webinar = await make_webinar(session, org, price_stars=100)
    await session.commit()
    bob = sandbox.user(2001, first_name="Bob", language_code="pt-br")
    await bob.command("/start", f"w_{webinar.code}")
    card = await bob.next_message()
    await bob.press(card, text="⭐ Paga con Telegram Stars: 100 ⭐")
    paid = await bob.pay(await bob.next_message())
    assert paid.ok
    assert "Pagamento ricevuto" in (await bob.next_message()).body  # the access message
    bob.drain()
    await asyncio.sleep(0.3)
    bob.drain()

    # The order is gone (say, a database restored from an older backup): the next charge for
    # that invoice matches nothing.
    await session.execute(update(Order).values(token="lost-in-a-restore"))
    await session.commit()
    again = await bob.pay_again(paid)

    told = await bob.next_message()
    assert "reembolsado automaticamente" in told.text  # Bob's language
    for _ in range(100):
        [lost] = await rows(
            session, Payment, Payment.telegram_payment_charge_id == again.telegram_payment_charge_id
        )
        if lost.status == PaymentStatus.REFUNDED:
            break
        await asyncio.sleep(0.02)
    assert lost.order_id is None
    assert lost.status == PaymentStatus.REFUNDED
    assert [e.telegram_payment_charge_id for e in sandbox.refund_events] == [
        again.telegram_payment_charge_id
    ]

    await bob.replay_last_update()
    await bob.expect_silence(0.5)
    assert len(await rows(session, Payment)) == 2


async def test_an_unmatched_payment_in_a_currency_we_never_sell_in_fails_clearly(
    session: AsyncSession, app_context: AppContext
) -> None:
    await make_user(session, 2001)
    await session.commit()
    outcome = await pay_unmatched(
        app_context, charge="tg-gbp-1", amount=500, currency="GBP", provider_charge="ch_gbp"
    )
    assert outcome.result == PaymentResult.REFUNDING
    [payment] = await rows(session, Payment)
    assert (payment.currency, payment.status) == ("GBP", PaymentStatus.REFUND_FAILED)
    [refund] = await rows(session, Refund)
    assert (refund.status, refund.error_code) == (RefundStatus.FAILED, "provider_error")
    assert "GBP" in (refund.detail or "")
    found = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert sorted(n.chat_id for n in found) == [OWNER_ID, 2001]
