"""Refunds the provider accepts as ``pending`` and finishes later, followed by the job until they
end: the real ``yookassa`` SDK against the project's fake YooKassa server.

localstripe answers every refund ``succeeded`` at once, so Stripe's pending path is covered only
by its tracker reading a finished refund (tests/payments/test_stripe_refunds.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.factory import create_refunders
from bot.sandbox.yookassa import FakeYooKassa
from bot.services import Services
from bot.services.orders import REFUND_LEASE as FOLLOW_UP_LEASE
from bot.services.refund_worker import RefundWorker
from bot.services.refunds import RefundStatusCode, result_text
from storage.enums import (
    AccessMode,
    OutboxKind,
    PaymentMethod,
    PaymentStatus,
    RefundStatus,
    TicketStatus,
)
from storage.models import AccessLink, OutboxMessage, Payment, Refund, Ticket, User, Webinar
from storage.repositories.sales import SalesRepository
from tests.factories import add_links, make_org, make_webinar
from tests.sales.conftest import (
    OWNER_ID,
    SECRET_KEY,
    SHOP_ID,
    Buyer,
    add_buyers,
    refund_now,
    refunds_done,
)


async def rows(session: AsyncSession, model: type, *where: Any) -> list[Any]:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    result = list((await session.scalars(statement)).all())
    await session.commit()
    return result


@pytest.fixture
def yk_app(app_context: AppContext, fake_yookassa: FakeYooKassa) -> AppContext:
    app_context.settings = app_context.settings.model_copy(
        update={
            "yookassa_shop_id": SHOP_ID,
            "yookassa_secret_key": SecretStr(SECRET_KEY),
            "yookassa_api_url": fake_yookassa.url,
        }
    )
    app_context.refunders = create_refunders(app_context.settings, None)
    return app_context


async def follow_refunds(app: AppContext) -> int:
    return await RefundWorker(app).follow_up()


async def sold_ticket(
    session: AsyncSession, app: AppContext, create_payment: Any
) -> tuple[Webinar, int, str]:
    """A Russian organization's webinar (unique links), one ticket bought with YooKassa."""
    org = await make_org(
        session, OWNER_ID, language="ru", currency="RUB", accept_yookassa=True, accept_stars=False
    )
    webinar = await make_webinar(
        session, org, price_minor=99000, price_stars=None, access_mode=AccessMode.LINKS
    )
    await add_links(session, webinar, 2)
    await add_buyers(session, 2001, 1)
    bob = Buyer(app, 2001)
    order = (await bob.invoice(webinar, PaymentMethod.YOOKASSA)).order
    assert order is not None
    assert (await bob.checkout(order)).ok
    provider_payment = await create_payment("990.00", "RUB")
    bought = await bob.pay(order, provider_charge=provider_payment)
    assert bought.ticket is not None
    return webinar, bought.ticket.id, provider_payment


async def refund(app: AppContext, ticket_id: int):  # type: ignore[no-untyped-def]
    return await refund_now(app, ticket_id)


def notices(found: list[OutboxMessage], chat_id: int) -> list[str]:
    return [n.payload["text"] for n in found if n.chat_id == chat_id]


def refund_reads(fake: FakeYooKassa) -> list[str]:
    return [r.path for r in fake.requests if r.method == "GET" and "/refunds/" in r.path]


async def test_a_pending_refund_is_followed_until_it_succeeds(
    session: AsyncSession, yk_app: AppContext, fake_yookassa: FakeYooKassa, create_payment: Any
) -> None:
    webinar, ticket_id, provider_payment = await sold_ticket(session, yk_app, create_payment)
    fake_yookassa.refund_status = "pending"

    outcome = await refund(yk_app, ticket_id)
    assert outcome.status == RefundStatusCode.PROCESSING
    [stored] = await rows(session, Refund)
    assert stored.status == RefundStatus.PROCESSING
    [provider_refund] = fake_yookassa.refunds_for(provider_payment)
    assert stored.provider_refund_id == provider_refund["id"]
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUND_PENDING
    # Nothing is done yet: the ticket and its link stay, the participant is told nothing.
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.ACTIVE
    notices_now = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert notices(notices_now, 2001) == []
    [told] = notices(notices_now, OWNER_ID)  # the organizer who asked: it is under way
    assert "still processing" in told

    # The organizer is told it is under way; /participants marks it.
    assert "still processing" in result_text(outcome)
    async with yk_app.session_factory() as s:
        listing = await Services(s, yk_app).participants.list(webinar.org_id, webinar.id)
    assert [p.refund_pending for p in listing.active] == [True]

    # Asking again while the provider works does not make a second refund.
    again = await refund(yk_app, ticket_id)
    assert again.status == RefundStatusCode.PROCESSING
    assert len(fake_yookassa.refunds_for(provider_payment)) == 1

    # The job asks only when the refund is due, and again later while it is still pending.
    assert await follow_refunds(yk_app) == 0
    assert refund_reads(fake_yookassa) == []
    yk_app.clock.advance(minutes=1)
    assert await follow_refunds(yk_app) == 0
    assert len(refund_reads(fake_yookassa)) == 1
    [stored] = await rows(session, Refund)
    assert (stored.status, stored.checks) == (RefundStatus.PROCESSING, 1)
    assert stored.next_check_at > yk_app.clock.now()

    fake_yookassa.settle_refund(provider_refund["id"], "succeeded")
    yk_app.clock.advance(minutes=2)
    assert await follow_refunds(yk_app) == 1

    [stored] = await rows(session, Refund)
    assert stored.status == RefundStatus.SUCCEEDED
    assert stored.completed_at is not None
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUNDED
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.REFUNDED
    [link] = await rows(session, AccessLink, AccessLink.ticket_id == ticket_id)
    assert link.revoked_at is not None
    found = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    [told] = notices(found, 2001)
    assert "Организатор вернул деньги" in told  # the organization's language
    # The organizer who asked hears of it twice: under way, then done. No alert.
    processing, done = notices(found, OWNER_ID)
    assert ("still processing" in processing, "refunded" in done) == (True, True)

    # Done: the job has nothing more to ask, a new /refund says so.
    yk_app.clock.advance(hours=2)
    assert await follow_refunds(yk_app) == 0
    assert len(refund_reads(fake_yookassa)) == 2
    assert (await refund(yk_app, ticket_id)).status == RefundStatusCode.ALREADY_REFUNDED


async def test_a_pending_refund_the_provider_cancels_fails_and_alerts_the_organizers(
    session: AsyncSession, yk_app: AppContext, fake_yookassa: FakeYooKassa, create_payment: Any
) -> None:
    _webinar, ticket_id, provider_payment = await sold_ticket(session, yk_app, create_payment)
    owner = await session.get_one(User, OWNER_ID)
    owner.locale = "it"  # the organizer reads Italian; the organization speaks Russian
    await session.commit()
    fake_yookassa.refund_status = "pending"
    assert (await refund(yk_app, ticket_id)).status == RefundStatusCode.PROCESSING
    [provider_refund] = fake_yookassa.refunds_for(provider_payment)

    fake_yookassa.settle_refund(provider_refund["id"], "canceled", reason="rejected_by_payee")
    yk_app.clock.advance(minutes=1)
    assert await follow_refunds(yk_app) == 1

    [stored] = await rows(session, Refund)
    assert (stored.status, stored.error_code) == (RefundStatus.FAILED, "refund_canceled")
    assert "rejected_by_payee" in (stored.detail or "")
    first_key = stored.idempotency_key
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUND_FAILED  # never recorded as done
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.ACTIVE
    found = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert notices(found, 2001) == []
    [alert] = [text for text in notices(found, OWNER_ID) if "canceled" in text]
    assert f"/refund {ticket_id}" in alert
    assert "ha annullato il rimborso" in alert  # the organizer's own language

    # Trying again makes a new refund (the canceled one's key would only replay it).
    fake_yookassa.refund_status = "succeeded"
    retried = await refund(yk_app, ticket_id)
    assert retried.status == RefundStatusCode.REFUNDED, retried.detail
    assert [r["status"] for r in fake_yookassa.refunds_for(provider_payment)] == [
        "canceled",
        "succeeded",
    ]
    [stored_again] = await rows(session, Refund)
    assert stored_again.id == stored.id
    assert stored_again.idempotency_key != first_key
    assert stored_again.status == RefundStatus.SUCCEEDED
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.REFUNDED


async def test_replicas_never_ask_about_one_refund_at_the_same_time(
    session: AsyncSession, yk_app: AppContext, fake_yookassa: FakeYooKassa, create_payment: Any
) -> None:
    _webinar, ticket_id, provider_payment = await sold_ticket(session, yk_app, create_payment)
    fake_yookassa.refund_status = "pending"
    assert (await refund(yk_app, ticket_id)).status == RefundStatusCode.PROCESSING
    [provider_refund] = fake_yookassa.refunds_for(provider_payment)
    fake_yookassa.settle_refund(provider_refund["id"], "succeeded")
    yk_app.clock.advance(minutes=1)

    async def replica() -> int:
        return await RefundWorker(yk_app).follow_up()

    ended = await asyncio.gather(*(replica() for _ in range(3)))
    assert sorted(ended) == [0, 0, 1]
    assert len(refund_reads(fake_yookassa)) == 1
    found = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert len(notices(found, 2001)) == 1


async def test_an_unanswered_check_keeps_the_refund_processing_and_asks_again_later(
    session: AsyncSession, yk_app: AppContext, fake_yookassa: FakeYooKassa, create_payment: Any
) -> None:
    _webinar, ticket_id, provider_payment = await sold_ticket(session, yk_app, create_payment)
    fake_yookassa.refund_status = "pending"
    assert (await refund(yk_app, ticket_id)).status == RefundStatusCode.PROCESSING
    [provider_refund] = fake_yookassa.refunds_for(provider_payment)

    fake_yookassa.fail_next(500)
    yk_app.clock.advance(minutes=1)
    assert await follow_refunds(yk_app) == 0
    [stored] = await rows(session, Refund)
    assert stored.status == RefundStatus.PROCESSING
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUND_PENDING

    fake_yookassa.settle_refund(provider_refund["id"], "succeeded")
    yk_app.clock.advance(minutes=5)
    assert await follow_refunds(yk_app) == 1
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUNDED


async def test_a_lapsed_lease_lets_another_replica_ask(
    session: AsyncSession, yk_app: AppContext, fake_yookassa: FakeYooKassa, create_payment: Any
) -> None:
    _webinar, ticket_id, _provider_payment = await sold_ticket(session, yk_app, create_payment)
    fake_yookassa.refund_status = "pending"
    assert (await refund(yk_app, ticket_id)).status == RefundStatusCode.PROCESSING
    yk_app.clock.advance(minutes=1)
    now = yk_app.clock.now()

    async def claim(at: Any) -> list[Any]:
        async with yk_app.session_factory() as s:
            claims = await SalesRepository(s).claim_refunds_to_follow(
                now=at, lease_until=at + FOLLOW_UP_LEASE, limit=10
            )
            await s.commit()
            return claims

    [first] = await claim(now)  # a replica claims it, then dies before answering
    assert await claim(now) == []  # held: nobody else asks meanwhile
    [second] = await claim(now + FOLLOW_UP_LEASE * 2)
    assert (second.refund_id, second.checks) == (first.refund_id, first.checks + 1)


async def test_cancelling_a_webinar_counts_refunds_still_processing(
    session: AsyncSession, yk_app: AppContext, fake_yookassa: FakeYooKassa, create_payment: Any
) -> None:
    webinar, _ticket_id, _provider_payment = await sold_ticket(session, yk_app, create_payment)
    fake_yookassa.refund_status = "pending"
    async with yk_app.session_factory() as s:
        cancelled = await Services(s, yk_app).webinars.cancel(
            webinar.org_id, webinar.id, requested_by=OWNER_ID
        )
    assert (cancelled.refunds.queued, cancelled.refunds.withdrawn) == (1, 0)
    await refunds_done(yk_app)
    [stored] = await rows(session, Refund)
    assert stored.status == RefundStatus.PROCESSING
