"""Regression tests for the money and access races of the review (issue 11): each failed on the
code before the fix. Both backends; the concurrent cases use one session per actor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import stripe
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.admin_input import InvalidInput
from bot.services.orders import OWED_ALERT_AFTER
from bot.services.purchases import PaymentResult
from bot.services.refund_worker import RefundWorker
from payments.base import ErrorCode
from payments.stripe_refunds import _map_error
from storage.enums import (
    AccessMode,
    OrderStatus,
    OutboxKind,
    PaymentStatus,
    RefundReason,
    RefundStatus,
    TicketStatus,
    WebinarStatus,
)
from storage.models import AccessLink, Order, OutboxMessage, Payment, Refund, Ticket, Webinar
from storage.repositories.sales import OrderLock, SalesRepository
from tests.factories import add_links, make_org, make_webinar
from tests.sales.conftest import OWNER_ID, Buyer, FakeBotApi, add_buyers, refunds_done


async def rows(session: AsyncSession, model: type, *where: Any) -> list[Any]:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    result = list((await session.scalars(statement)).all())
    await session.commit()
    return result


async def test_a_late_refund_of_an_earlier_charge_never_revokes_what_a_later_charge_bought(
    session: AsyncSession, stars_app: AppContext, clock: FakeClock, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, capacity=1, price_stars=100)
    await add_buyers(session, 2001, 2)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    ann = Buyer(stars_app, 2002, fake_bot_api)
    first_order = (await bob.invoice(webinar)).order
    assert (await bob.checkout(first_order)).ok
    clock.advance(minutes=20)  # Bob's hold lapses and Ann takes the last seat
    _ann_order, ann_bought = await ann.buy(webinar)

    # Bob's late charge cannot buy a seat; its refund meets a provider that does not answer.
    fake_bot_api.next_error = (502, "Bad Gateway", None)
    late = await bob.pay(first_order, charge="late-1")
    assert (late.result, late.reason) == (PaymentResult.REFUNDING, RefundReason.NO_SEAT)
    [late_payment] = await rows(session, Payment, Payment.telegram_payment_charge_id == "late-1")
    assert late_payment.status == PaymentStatus.REFUND_PENDING

    # A seat frees and Bob buys again: a new order, never the one whose charge is being refunded.
    async with stars_app.session_factory() as s:
        await Services(s, stars_app).refunds.refund_ticket(ann_bought.ticket.id, requested_by=None)
    await refunds_done(stars_app)
    second_order, second = await bob.buy(webinar)
    assert second_order.id != first_order.id
    assert second.result == PaymentResult.ISSUED

    # The first refund now completes: it revokes nothing that the second charge bought.
    clock.advance(minutes=5)
    await refunds_done(stars_app)
    [late_payment] = await rows(session, Payment, Payment.telegram_payment_charge_id == "late-1")
    assert late_payment.status == PaymentStatus.REFUNDED
    [ticket] = await rows(session, Ticket, Ticket.user_id == 2001)
    assert ticket.status == TicketStatus.ACTIVE
    [bought_with] = await rows(session, Payment, Payment.id == ticket.payment_id)
    assert bought_with.telegram_payment_charge_id != "late-1"
    [old] = await rows(session, Order, Order.id == first_order.id)
    assert old.status == OrderStatus.REFUNDED


async def test_cancel_and_payments_racing_leave_no_active_ticket_and_no_unrefunded_charge(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinars = [await make_webinar(session, org, price_stars=100) for _ in range(4)]
    await add_buyers(session, 2001, 4)
    buyers = [Buyer(stars_app, 2001 + i, fake_bot_api, work_refunds=False) for i in range(4)]
    orders: dict[tuple[int, int], Order] = {}
    for webinar in webinars:
        for buyer in buyers:
            order = (await buyer.invoice(webinar)).order
            assert (await buyer.checkout(order)).ok
            orders[webinar.id, buyer.user_id] = order

    async def cancel(webinar: Webinar) -> None:
        async with stars_app.session_factory() as s:
            await Services(s, stars_app).webinars.cancel(org.id, webinar.id, requested_by=OWNER_ID)

    await asyncio.gather(
        *(buyer.pay(orders[webinar.id, buyer.user_id]) for webinar in webinars for buyer in buyers),
        *(cancel(webinar) for webinar in webinars),
    )
    await refunds_done(stars_app)
    assert {w.status for w in await rows(session, Webinar)} == {WebinarStatus.CANCELLED}
    assert await rows(session, Ticket, Ticket.status == TicketStatus.ACTIVE) == []
    payments = await rows(session, Payment)
    assert len(payments) == 16
    assert {p.status for p in payments} == {PaymentStatus.REFUNDED}
    assert len(fake_bot_api.refunded) == 16


async def test_a_charge_that_does_not_match_its_order_is_refunded_as_a_mismatch(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID, language="es")
    webinar = await make_webinar(session, org, price_stars=100)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    order = (await bob.invoice(webinar)).order
    assert (await bob.checkout(order)).ok
    order.amount_minor = 1  # what a forged or foreign update would claim
    outcome = await bob.pay(order)
    assert (outcome.result, outcome.reason) == (PaymentResult.REFUNDING, RefundReason.MISMATCH)
    [payment] = await rows(session, Payment)
    assert (payment.status, payment.is_duplicate) == (PaymentStatus.REFUNDED, False)
    [refund] = await rows(session, Refund)
    assert refund.reason == RefundReason.MISMATCH
    [notice] = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert "no coincide" in notice.payload["text"]  # not "you already paid"
    assert "ya pagaste" not in notice.payload["text"].lower()
    assert await rows(session, Ticket) == []


async def test_money_owed_is_never_forgotten_and_people_are_told(
    session: AsyncSession, stars_app: AppContext, clock: FakeClock, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=100)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    order, _bought = await bob.buy(webinar)
    for _ in range(OWED_ALERT_AFTER + 3):
        fake_bot_api.next_error = (502, "Bad Gateway", None)
        if _ == 0:
            await bob.pay(order, charge="dup-1")  # a second charge: refunded automatically
        else:
            await refunds_done(stars_app)
        clock.advance(hours=2)  # days pass: the old code gave up after two
    [refund] = await rows(session, Refund)
    assert (refund.status, refund.attempts) == (RefundStatus.PENDING, OWED_ALERT_AFTER + 3)
    notices = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    alerts = [n for n in notices if "still owed" in n.payload["text"]]
    assert [n.chat_id for n in alerts] == [OWNER_ID]  # the organizer, who is also an owner
    async with stars_app.session_factory() as s:
        figures = await Services(s, stars_app).stats.for_org(org.id)
    assert (figures.owed, figures.owed_payments) == ({"XTR": 100}, [refund.payment_id])
    await refunds_done(stars_app)  # the provider answers at last
    [refund] = await rows(session, Refund)
    assert refund.status == RefundStatus.SUCCEEDED


def test_stripe_409_means_the_same_refund_is_in_flight_not_a_failure() -> None:
    error = stripe.IdempotencyError("Keys for idempotent requests can only be used ...")
    assert _map_error(error).error_code == ErrorCode.IN_PROGRESS


async def test_replicas_working_the_refund_queue_call_the_provider_once_per_refund(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    """Three workers (three replicas, or a retry overlapping a slow call) drain one queue: each
    refund is claimed by one of them, so the provider hears each idempotency key once."""
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=100)
    await add_buyers(session, 2001, 6)
    tickets = []
    for user_id in range(2001, 2007):
        _order, bought = await Buyer(stars_app, user_id, fake_bot_api).buy(webinar)
        tickets.append(bought.ticket.id)
    for ticket_id in tickets:
        async with stars_app.session_factory() as s:
            await Services(s, stars_app).refunds.refund_ticket(ticket_id, requested_by=OWNER_ID)
    fake_bot_api.delay = 0.05  # slow answers: the workers overlap
    handled = await asyncio.gather(*(RefundWorker(stars_app).run_until_idle() for _ in range(3)))
    assert sum(handled) == 6
    charges = [call["telegram_payment_charge_id"] for call in fake_bot_api.calls]
    assert len(charges) == len(set(charges)) == 6
    assert {p.status for p in await rows(session, Payment)} == {PaymentStatus.REFUNDED}


async def test_an_order_read_again_under_a_lock_is_as_the_lock_found_it(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    """A payment whose hold lapsed ends its first transaction and reads its order again under
    the counting lock (``PurchaseService``): what changed in between (here a cancellation) must
    be what it sees, not the instances its session kept from the first read."""
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=100)
    await add_buyers(session, 2101, 1)
    order = (await Buyer(stars_app, 2101, fake_bot_api).invoice(webinar)).order
    async with stars_app.session_factory() as mine:
        repo = SalesRepository(mine)
        first = await repo.order_context(order.token, lock=OrderLock.PAYMENT)
        assert first is not None
        assert first.webinar.status != WebinarStatus.CANCELLED
        await mine.commit()
        async with stars_app.session_factory() as other:
            await Services(other, stars_app).webinars.cancel(
                org.id, webinar.id, requested_by=OWNER_ID
            )
        again = await repo.order_context(order.token, lock=OrderLock.PAYMENT_COUNTING)
        assert again is not None
        assert again.webinar is first.webinar  # the session's own instance, as a load gives
        assert again.webinar.status == WebinarStatus.CANCELLED
        await mine.rollback()


async def test_an_access_mode_change_waits_for_a_payment_in_flight_and_then_refuses(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    """The access mode changes only while nobody holds a ticket. A payment issuing one locks the
    webinar only ``FOR KEY SHARE`` (payments pass each other), and an update of the webinar's row
    does not wait for that: the change must take the row ``FOR UPDATE`` before it counts the
    tickets, or it counts before the payment commits and switches the mode under a new ticket
    (its holder then finds no access of the new kind)."""
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=100)
    await add_buyers(session, 2201, 1)
    order = (await Buyer(stars_app, 2201, fake_bot_api).invoice(webinar)).order
    async with stars_app.session_factory() as paying:
        context = await SalesRepository(paying).order_context(order.token, lock=OrderLock.PAYMENT)
        assert context is not None
        paying.add(Ticket(order_id=order.id, webinar_id=webinar.id, user_id=2201))
        await paying.flush()

        async def switch() -> None:
            async with stars_app.session_factory() as s:
                webinars = Services(s, stars_app).webinars
                await webinars.set_access(org.id, webinar.id, AccessMode.LINKS)

        change = asyncio.create_task(switch())
        await asyncio.sleep(0.5)
        assert not change.done()  # waiting for the payment's transaction
        await paying.commit()
    with pytest.raises(InvalidInput, match="no longer change"):
        await change
    [unchanged] = await rows(session, Webinar, Webinar.id == webinar.id)
    assert unchanged.access_mode == AccessMode.PASSWORD


async def test_two_link_imports_at_once_give_each_waiting_ticket_one_link(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    """Two organizers import links at the same moment: both see the same tickets waiting for a
    link. Without the webinar's lock, the second gave a ticket the first had just served a
    second link, which the one-link-per-ticket constraint refused: that import failed."""
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, access_mode=AccessMode.LINKS)
    await add_buyers(session, 2301, 3)
    for user_id in (2301, 2302, 2303):
        _order, bought = await Buyer(stars_app, user_id, fake_bot_api).buy(webinar)
        assert bought.result == PaymentResult.WAITING_LINK
    await add_links(session, webinar, 6)
    await session.commit()

    async def assign() -> int:
        async with stars_app.session_factory() as s:
            return await Services(s, stars_app).access.assign_waiting(webinar.id)

    assert sorted(await asyncio.gather(assign(), assign())) == [0, 3]
    taken = [
        link.ticket_id
        for link in await rows(session, AccessLink, AccessLink.ticket_id.is_not(None))
    ]
    assert len(taken) == len(set(taken)) == 3
