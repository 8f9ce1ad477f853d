"""Refunds through the real refunders: Stars (a Bot API fake), Stripe, YooKassa."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.factory import create_refunders
from bot.services import Services
from bot.services.purchases import PaymentResult
from bot.services.refunds import RefundStatusCode
from handlers.admin.participants import line as participants_line
from storage.enums import (
    AccessMode,
    OrderStatus,
    OutboxKind,
    OutboxStatus,
    PaymentMethod,
    PaymentStatus,
    RefundStatus,
    TicketStatus,
    WebinarStatus,
)
from storage.models import AccessLink, Order, OutboxMessage, Payment, Refund, Ticket
from tests.factories import add_links, make_org, make_user, make_webinar
from tests.sales.conftest import (
    OWNER_ID,
    SECRET_KEY,
    SHOP_ID,
    STRIPE_KEY,
    Buyer,
    FakeBotApi,
    add_buyers,
    refund_now,
    refunds_done,
)


async def rows(session: AsyncSession, model: type, *where: Any) -> list[Any]:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    result = list((await session.scalars(statement)).all())
    await session.commit()
    return result


async def refund(app: AppContext, ticket_id: int, by: int | None = OWNER_ID):  # type: ignore[no-untyped-def]
    return await refund_now(app, ticket_id, by)


async def test_an_organizer_refund_revokes_the_ticket_frees_the_seat_and_tells_the_buyer(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID, language="pt_BR")
    webinar = await make_webinar(session, org, access_mode=AccessMode.LINKS, capacity=1)
    await add_links(session, webinar, 2)
    await add_buyers(session, 2001, 2)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    _order, bought = await bob.buy(webinar)
    ticket_id = bought.ticket.id

    outcome = await refund(stars_app, ticket_id)
    assert outcome.status == RefundStatusCode.REFUNDED
    [ticket] = await rows(session, Ticket, Ticket.id == ticket_id)
    assert ticket.status == TicketStatus.REFUNDED
    [link] = await rows(session, AccessLink, AccessLink.ticket_id == ticket_id)
    assert link.revoked_at is not None  # marked revoked, never given to anyone else
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUNDED
    [stored] = await rows(session, Refund)
    assert (stored.status, stored.requested_by) == (RefundStatus.SUCCEEDED, OWNER_ID)
    reminders = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.REMINDER)
    assert {row.status for row in reminders} == {OutboxStatus.DROPPED}
    [notice, told] = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert (notice.chat_id, told.chat_id) == (2001, OWNER_ID)
    assert "refunded" in told.payload["text"]
    assert "reembols" in notice.payload["text"]

    # The seat is free again, and the revoked link is not reused.
    _order, second = await Buyer(stars_app, 2002, fake_bot_api).buy(webinar)
    assert second.result == PaymentResult.ISSUED
    [new_link] = await rows(session, AccessLink, AccessLink.ticket_id == second.ticket.id)
    assert new_link.id != link.id

    again = await refund(stars_app, ticket_id)
    assert again.status == RefundStatusCode.ALREADY_REFUNDED
    assert len(fake_bot_api.calls) == 1


async def test_only_organizers_of_the_tickets_organization_may_refund(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    await make_org(session, 3000, name="Other org")
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    _order, bought = await Buyer(stars_app, 2001, fake_bot_api).buy(webinar)
    for stranger in (3000, 2001):
        outcome = await refund(stars_app, bought.ticket.id, by=stranger)
        assert outcome.status == RefundStatusCode.NOT_FOUND
    assert fake_bot_api.calls == []
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.ACTIVE


async def test_a_failed_refund_changes_nothing_visible_and_can_be_retried(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    _order, bought = await Buyer(stars_app, 2001, fake_bot_api).buy(webinar)

    fake_bot_api.next_error = (500, "Internal Server Error", None)
    failed = await refund(stars_app, bought.ticket.id)
    # No answer is no decision: the refund stays queued and is asked again later.
    assert failed.status == RefundStatusCode.RETRYING
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.ACTIVE
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUND_PENDING
    [stored] = await rows(session, Refund)
    assert (stored.status, stored.error_code) == (RefundStatus.PENDING, "network_error")
    assert await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE) == []

    assert await refunds_done(stars_app) == 0  # not due yet
    stars_app.clock.advance(minutes=2)
    assert await refunds_done(stars_app) == 1
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUNDED
    [stored_again] = await rows(session, Refund)
    assert stored_again.id == stored.id  # same row, same idempotency key
    assert stored_again.status == RefundStatus.SUCCEEDED


async def test_a_refund_without_a_configured_provider_fails_clearly(
    session: AsyncSession, app_context: AppContext
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    _order, bought = await Buyer(app_context, 2001).buy(webinar)
    outcome = await refund(app_context, bought.ticket.id)  # no bot: Stars cannot be refunded
    assert (outcome.status, outcome.error_code) == (RefundStatusCode.FAILED, "not_configured")
    # The ticket stays, and the organizers see the money is owed.
    async with app_context.session_factory() as s:
        listing = await Services(s, app_context).participants.list(org.id, webinar.id)
    [participant] = listing.participants
    assert (participant.status, participant.refund_failed) == (TicketStatus.ACTIVE, True)
    line = participants_line(1, participant, "en")
    assert "owed" in line
    assert f"/refund {bought.ticket.id}" in line


async def test_stripe_refund_with_the_real_sdk_against_localstripe(
    session: AsyncSession, app_context: AppContext, localstripe: Any, make_charge: Any
) -> None:
    app_context.settings = app_context.settings.model_copy(
        update={"stripe_api_key": SecretStr(STRIPE_KEY), "stripe_api_base": localstripe.api_base}
    )
    app_context.refunders = create_refunders(app_context.settings, app_context.bot)
    org = await make_org(session, OWNER_ID, accept_stripe=True, accept_stars=False)
    webinar = await make_webinar(session, org, price_minor=1999, price_stars=None)
    await add_buyers(session, 2001, 1)
    bob = Buyer(app_context, 2001)
    order = (await bob.invoice(webinar, PaymentMethod.STRIPE)).order
    assert (order.amount_minor, order.currency) == (1999, "USD")
    assert (await bob.checkout(order)).ok
    charge = await make_charge(1999, "usd")
    bought = await bob.pay(order, provider_charge=charge)
    outcome = await refund(app_context, bought.ticket.id)
    assert outcome.status == RefundStatusCode.REFUNDED, outcome.detail
    [stored] = await rows(session, Refund)
    assert stored.provider_refund_id
    assert stored.provider_refund_id.startswith("re_")
    assert stored.idempotency_key.startswith("webinarpass-refund-")


async def test_yookassa_refund_with_the_real_sdk_against_the_fake(
    session: AsyncSession,
    app_context: AppContext,
    fake_yookassa: Any,
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
    org = await make_org(
        session, OWNER_ID, language="ru", currency="RUB", accept_yookassa=True, accept_stars=False
    )
    webinar = await make_webinar(session, org, price_minor=99000, price_stars=None)
    await add_buyers(session, 2001, 1)
    bob = Buyer(app_context, 2001)
    order = (await bob.invoice(webinar, PaymentMethod.YOOKASSA)).order
    assert (await bob.checkout(order)).ok
    payment_id = await create_payment("990.00", "RUB")
    bought = await bob.pay(order, provider_charge=payment_id)
    outcome = await refund(app_context, bought.ticket.id)
    assert outcome.status == RefundStatusCode.REFUNDED, outcome.detail
    [stored] = await rows(session, Refund)
    assert stored.provider_refund_id


async def test_cancelling_a_webinar_refunds_everyone_and_tells_them(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID, language="it")
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 3)
    for user_id in (2001, 2002, 2003):
        await Buyer(stars_app, user_id, fake_bot_api).buy(webinar)
    async with stars_app.session_factory() as s:
        cancelled = await Services(s, stars_app).webinars.cancel(
            org.id, webinar.id, requested_by=OWNER_ID
        )
    assert cancelled.refunds.queued == 3
    assert await refunds_done(stars_app) == 3
    assert {t.status for t in await rows(session, Ticket)} == {TicketStatus.REFUNDED}
    notices = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert sorted(n.chat_id for n in notices) == [2001, 2002, 2003]
    assert all("annullato" in n.payload["text"] for n in notices)
    [stored] = await rows(session, type(webinar), type(webinar).id == webinar.id)
    assert stored.status == WebinarStatus.CANCELLED
    assert {o.status for o in await rows(session, Order)} == {OrderStatus.REFUNDED}


async def test_a_refund_reported_by_telegram_is_recorded_once(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    await make_user(session, 2002)
    await session.commit()
    _order, _bought = await Buyer(stars_app, 2001, fake_bot_api).buy(webinar)
    [payment] = await rows(session, Payment)
    for _attempt in range(2):
        async with stars_app.session_factory() as s:
            outcome = await Services(s, stars_app).refunds.record_telegram_refund(
                user_id=2001, telegram_charge_id=payment.telegram_payment_charge_id
            )
    assert outcome.status == RefundStatusCode.ALREADY_REFUNDED
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.REFUNDED
    [stored] = await rows(session, Refund)
    assert (stored.reason, stored.status) == ("telegram", RefundStatus.SUCCEEDED)
    assert fake_bot_api.calls == []  # nothing to refund ourselves
    notices = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert len(notices) == 1


async def test_an_automatic_refund_the_provider_did_not_answer_is_retried_by_the_worker(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    order, _bought = await bob.buy(webinar)
    fake_bot_api.next_error = (502, "Bad Gateway", None)
    duplicate = await bob.pay(order, charge="dup-1")
    assert duplicate.result == PaymentResult.REFUNDING
    [dup] = await rows(session, Payment, Payment.telegram_payment_charge_id == "dup-1")
    assert dup.status == PaymentStatus.REFUND_PENDING  # queued: the update did not wait
    await refunds_done(stars_app)  # the provider fails once: asked again later
    [dup] = await rows(session, Payment, Payment.telegram_payment_charge_id == "dup-1")
    assert dup.status == PaymentStatus.REFUND_PENDING
    assert await refunds_done(stars_app) == 0  # not due yet
    stars_app.clock.advance(minutes=5)
    await refunds_done(stars_app)
    [dup] = await rows(session, Payment, Payment.telegram_payment_charge_id == "dup-1")
    assert dup.status == PaymentStatus.REFUNDED
    assert fake_bot_api.refunded == {"dup-1"}
