"""Selling against the real database: orders, pre-checkout holds, payments, tickets, links."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

import pytest
from icalendar import Calendar
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.purchases import PaymentResult
from storage.enums import (
    AccessMode,
    OrderStatus,
    OutboxKind,
    OutboxStatus,
    PaymentMethod,
    PaymentStatus,
    RefundReason,
    RefundStatus,
    TicketStatus,
    WebinarStatus,
)
from storage.models import AccessLink, Order, OutboxMessage, Payment, Refund, Ticket
from tests.factories import add_links, make_org, make_user, make_webinar
from tests.sales.conftest import OWNER_ID, Buyer, FakeBotApi, add_buyers, refund_now

T = TypeVar("T")


# On SQLite the engine has one connection: every helper ends its read so buyers can write.


async def count(session: AsyncSession, model: type) -> int:
    value = int(await session.scalar(select(func.count()).select_from(model)) or 0)
    await session.commit()
    return value


async def outbox(session: AsyncSession, kind: OutboxKind | None = None) -> list[OutboxMessage]:
    statement = select(OutboxMessage).order_by(OutboxMessage.id)
    if kind is not None:
        statement = statement.where(OutboxMessage.kind == kind)
    rows = list((await session.scalars(statement)).all())
    await session.commit()
    return rows


async def fresh(session: AsyncSession, obj: T) -> T:
    """The row as stored now (objects from other sessions are not refreshed in place)."""
    value = await session.get(type(obj), obj.id, populate_existing=True)  # type: ignore[attr-defined]
    await session.commit()
    assert value is not None
    return value


async def scalars(session: AsyncSession, statement: Any) -> list[Any]:
    rows = list((await session.scalars(statement)).all())
    await session.commit()
    return rows


async def state(session: AsyncSession) -> tuple[int, ...]:
    await session.commit()
    return tuple([await count(session, m) for m in (Order, Payment, Ticket, Refund, OutboxMessage)])


async def test_a_purchase_issues_one_ticket_and_plans_access_once(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
    webinar = await make_webinar(session, org, price_stars=150, capacity=5)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001, fake_bot_api)

    result = await bob.invoice(webinar)
    assert result.invoice is not None
    order = result.order
    assert order is not None
    assert result.invoice["payload"] == order.token
    assert result.invoice["currency"] == "XTR"
    assert result.invoice["prices"][0].amount == 150
    assert "provider_token" not in result.invoice
    assert (await bob.invoice(webinar)).order.token == order.token  # reused, not a new row

    assert (await bob.checkout(order)).ok
    order = await fresh(session, order)
    assert order.status == OrderStatus.HELD
    assert order.hold_expires_at == stars_app.clock.now() + timedelta(minutes=15)

    outcome = await bob.pay(order, charge="charge-1")
    assert outcome.result == PaymentResult.ISSUED
    assert outcome.ticket is not None
    order = await fresh(session, order)
    assert order.status == OrderStatus.PAID
    access = await outbox(session, OutboxKind.ACCESS)
    assert [(row.dedupe_key, row.chat_id) for row in access] == [
        (f"access:{outcome.ticket.id}", 2001)
    ]
    assert len(await outbox(session, OutboxKind.REMINDER)) == 4  # 1 day, 1 hour, 10 min, start

    before = await state(session)
    replay = await bob.pay(order, charge="charge-1")
    assert replay.result == PaymentResult.REPLAY
    assert await state(session) == before
    assert fake_bot_api.calls == []


async def test_pre_checkout_refuses_bad_orders_and_changes_nothing(
    session: AsyncSession, stars_app: AppContext, clock: FakeClock
) -> None:
    org = await make_org(session, OWNER_ID, language="es")
    webinar = await make_webinar(session, org, price_stars=100, capacity=3)
    await add_buyers(session, 2001, 2)
    bob, eve = Buyer(stars_app, 2001), Buyer(stars_app, 2002)
    order = (await bob.invoice(webinar)).order
    assert order is not None
    before = await state(session)

    refusals = [
        await eve.checkout(order),  # a foreign order
        await bob.checkout(order, amount=1),  # wrong amount
        await bob.checkout(order, currency="USD"),  # wrong currency
    ]
    async with stars_app.session_factory() as other:
        answer = await Services(other, stars_app).sales.pre_checkout(
            user_id=2001, payload=order.token + "x", total_amount=100, currency="XTR"
        )
    refusals.append(answer)
    assert all(not r.ok and r.error_message for r in refusals)
    # A tampered amount is an invalid invoice, not a price change; in the organization's
    # language (es).
    assert "factura" in refusals[1].error_message
    assert "precio" not in refusals[1].error_message

    webinar.price_stars = 120  # the organizer changed the price after the invoice was sent
    await session.commit()
    changed = await bob.checkout(order)
    assert not changed.ok
    webinar.price_stars = 100
    webinar.status = WebinarStatus.CANCELLED
    await session.commit()
    assert not (await bob.checkout(order)).ok
    webinar.status = WebinarStatus.PUBLISHED
    await session.commit()
    clock.set(webinar.starts_at)
    assert not (await bob.checkout(order)).ok

    assert await state(session) == before
    order = await fresh(session, order)
    assert (order.status, order.hold_expires_at) == (OrderStatus.CREATED, None)


async def test_a_hold_keeps_the_seat_until_it_lapses(
    session: AsyncSession, stars_app: AppContext, clock: FakeClock
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, capacity=1)
    await add_buyers(session, 2001, 2)
    bob, ann = Buyer(stars_app, 2001), Buyer(stars_app, 2002)
    bob_order = (await bob.invoice(webinar)).order
    ann_order = (await ann.invoice(webinar)).order
    assert (await bob.checkout(bob_order)).ok
    refused = await ann.checkout(ann_order)
    assert not refused.ok
    assert "seats" in refused.error_message
    assert (await bob.checkout(bob_order)).ok  # the holder may retry the checkout

    clock.advance(minutes=16)
    assert (await ann.checkout(ann_order)).ok
    async with stars_app.session_factory() as s:
        assert await Services(s, stars_app).sales.expire_holds() == 1
    bob_order = await fresh(session, bob_order)
    assert bob_order.status == OrderStatus.EXPIRED


async def test_a_late_payment_without_a_seat_is_refunded_and_explained(
    session: AsyncSession, stars_app: AppContext, clock: FakeClock, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID, language="ru")
    webinar = await make_webinar(session, org, capacity=1, price_stars=100)
    await add_buyers(session, 2001, 2)
    bob, ann = Buyer(stars_app, 2001, fake_bot_api), Buyer(stars_app, 2002, fake_bot_api)
    bob_order = (await bob.invoice(webinar)).order
    assert (await bob.checkout(bob_order)).ok
    clock.advance(minutes=20)
    _order, ann_outcome = await ann.buy(webinar)
    assert ann_outcome.result == PaymentResult.ISSUED

    late = await bob.pay(bob_order, charge="late-1")
    assert (late.result, late.reason) == (PaymentResult.REFUNDING, RefundReason.NO_SEAT)
    [payment] = await scalars(
        session, select(Payment).where(Payment.telegram_payment_charge_id == "late-1")
    )
    [refund] = await scalars(session, select(Refund).where(Refund.payment_id == payment.id))
    assert (payment.status, refund.status) == (PaymentStatus.REFUNDED, RefundStatus.SUCCEEDED)
    assert fake_bot_api.refunded == {"late-1"}
    assert await count(session, Ticket) == 1
    notices = [row for row in await outbox(session, OutboxKind.NOTICE) if row.chat_id == 2001]
    assert len(notices) == 1
    assert "возвращ" in notices[0].payload["text"]  # told why, in Russian


async def test_a_late_payment_takes_a_seat_that_is_still_free(
    session: AsyncSession, stars_app: AppContext, clock: FakeClock
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, capacity=1)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001)
    order = (await bob.invoice(webinar)).order
    assert (await bob.checkout(order)).ok
    clock.advance(hours=1)
    assert (await bob.pay(order)).result == PaymentResult.ISSUED


async def test_a_second_charge_of_a_paid_order_is_refunded_automatically(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    order, first = await bob.buy(webinar)
    second = await bob.pay(order, charge="second")
    assert (second.result, second.reason) == (PaymentResult.REFUNDING, RefundReason.DUPLICATE)
    payments = {p.telegram_payment_charge_id: p for p in await scalars(session, select(Payment))}
    assert payments["second"].is_duplicate
    assert payments["second"].status == PaymentStatus.REFUNDED
    ticket = await fresh(session, first.ticket)
    assert ticket.status == TicketStatus.ACTIVE  # the first payment's ticket stays valid
    assert fake_bot_api.refunded == {"second"}
    assert len(await outbox(session, OutboxKind.ACCESS)) == 1


async def test_an_empty_pool_waits_alerts_and_delivers_on_import(
    session: AsyncSession, stars_app: AppContext
) -> None:
    org = await make_org(session, OWNER_ID)
    await make_user(session, 1001, first_name="Co")
    webinar = await make_webinar(session, org, access_mode=AccessMode.LINKS)
    await add_links(session, webinar, 1)
    await add_buyers(session, 2001, 3)
    results = [(await Buyer(stars_app, uid).buy(webinar))[1] for uid in (2001, 2002, 2003)]
    assert [r.result for r in results] == [
        PaymentResult.ISSUED,
        PaymentResult.WAITING_LINK,
        PaymentResult.WAITING_LINK,
    ]
    notices = await outbox(session, OutboxKind.NOTICE)
    assert sorted(row.chat_id for row in notices) == [OWNER_ID, 2002, 2003]  # one alert, not two
    assert len(await outbox(session, OutboxKind.ACCESS)) == 1

    session.add(AccessLink(webinar_id=webinar.id, url="https://meet.example.org/j/new"))
    await session.commit()
    async with stars_app.session_factory() as s:
        assert await Services(s, stars_app).access.assign_waiting(webinar.id) == 1
    assert len(await outbox(session, OutboxKind.ACCESS)) == 2
    owner_alerts = [
        row for row in await outbox(session, OutboxKind.NOTICE) if row.chat_id == OWNER_ID
    ]
    assert len(owner_alerts) == 2  # still one buyer waiting: alerted again for the new pool
    links = await scalars(session, select(AccessLink.ticket_id))
    assert len([t for t in links if t is not None]) == len({t for t in links if t is not None}) == 2


async def test_the_access_message_and_calendar_file_in_the_organizations_language(
    session: AsyncSession, stars_app: AppContext
) -> None:
    org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
    webinar = await make_webinar(session, org, title="Prezzi <b>&</b> co")
    await add_buyers(session, 2001, 1)
    _order, outcome = await Buyer(stars_app, 2001).buy(webinar)
    row = (await outbox(session, OutboxKind.ACCESS))[0]
    async with stars_app.session_factory() as s:
        parts = await Services(s, stars_app).access.render(row)
    assert parts is not None
    [calendar_part] = parts  # one message: the calendar file, the access as its caption
    caption = calendar_part.caption
    assert caption is not None
    assert "Prezzi &lt;b&gt;&amp;&lt;/b&gt; co" in caption
    assert "https://meet.example.org/room/42" in caption
    assert "s3cret" in caption
    assert "UTC+01:00" in caption
    # The payment's confirmation opens it (Italian, the organization's language).
    assert caption.startswith("✅ Pagamento ricevuto: il tuo biglietto è confermato. Ecco il tuo")
    assert caption.endswith("Aggiungi il webinar al tuo calendario.")
    assert calendar_part.document is not None
    filename, data = calendar_part.document
    assert filename.endswith(".ics")
    event = Calendar.from_ical(data).walk("VEVENT")[0]
    assert str(event["UID"]).startswith(f"webinar-{webinar.id}-ticket-{outcome.ticket.id}")
    assert event.decoded("DTSTART") == webinar.starts_at
    assert event.decoded("DTEND") == webinar.starts_at + timedelta(minutes=90)
    assert "DTSTAMP" in event
    assert str(event["SUMMARY"]) == webinar.title
    assert str(event["URL"]) == "https://meet.example.org/room/42"
    assert "s3cret" in str(event["DESCRIPTION"])


async def test_only_the_access_message_a_payment_plans_confirms_the_payment(
    session: AsyncSession, stars_app: AppContext
) -> None:
    """The payment's access message is its confirmation; the buyer who waited for a link had
    theirs in the waiting notice, and a free registration paid nothing."""
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, access_mode=AccessMode.LINKS)
    free = await make_webinar(session, org, price_stars=None)
    await add_links(session, webinar, 1)
    await add_buyers(session, 2001, 3)
    for uid in (2001, 2002):
        await Buyer(stars_app, uid).buy(webinar)
    async with stars_app.session_factory() as s:
        await Services(s, stars_app).purchases.register_free(2003, free.id)
    [waiting] = [row for row in await outbox(session, OutboxKind.NOTICE) if row.chat_id == 2002]
    assert waiting.payload["text"].startswith("✅ Payment received: your ticket for")
    session.add(AccessLink(webinar_id=webinar.id, url="https://meet.example.org/j/new"))
    await session.commit()
    async with stars_app.session_factory() as s:
        assert await Services(s, stars_app).access.assign_waiting(webinar.id) == 1

    headings = {}
    for row in await outbox(session, OutboxKind.ACCESS):
        async with stars_app.session_factory() as s:
            parts = await Services(s, stars_app).access.render(row)
        assert parts is not None
        headings[row.chat_id] = (parts[0].caption or parts[0].text or "").split("\n")[0]
    assert headings == {
        2001: "✅ Payment received: your ticket is confirmed. Here is your access:",
        2002: "Here is your access:",
        2003: "Here is your access:",
    }


async def test_outbox_access_row_is_dropped_for_a_refunded_ticket(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org)
    await add_buyers(session, 2001, 1)
    _order, outcome = await Buyer(stars_app, 2001, fake_bot_api).buy(webinar)
    refunded = await refund_now(stars_app, outcome.ticket.id)
    assert refunded.ok
    rows = await outbox(session, OutboxKind.ACCESS)
    assert rows[0].status == OutboxStatus.DROPPED
    async with stars_app.session_factory() as s:
        assert await Services(s, stars_app).access.render(rows[0]) is None


@pytest.mark.parametrize("language", ["en", "ru", "it", "pt_BR", "es"])
async def test_invoices_carry_the_price_of_the_method(
    session: AsyncSession, stars_app: AppContext, language: str
) -> None:
    org = await make_org(
        session,
        OWNER_ID,
        language=language,
        currency="RUB",
        accept_yookassa=True,
        yookassa_receipt=True,
    )
    webinar = await make_webinar(session, org, price_minor=199000, price_stars=None)
    await add_buyers(session, 2001, 1)
    result = await Buyer(stars_app, 2001).invoice(webinar, PaymentMethod.YOOKASSA)
    assert result.invoice is not None
    assert result.invoice["currency"] == "RUB"
    assert result.invoice["prices"][0].amount == 199000
    assert result.invoice["need_email"] is True
    assert '"vat_code":1' in result.invoice["provider_data"]
    refused = await Buyer(stars_app, 2001).invoice(webinar, PaymentMethod.STARS)
    assert refused.invoice is None
    assert refused.refusal


async def test_a_new_price_opens_a_new_order_which_repeated_presses_reuse(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=100, capacity=5)
    await add_buyers(session, 2001, 1)
    bob = Buyer(stars_app, 2001, fake_bot_api)
    first = (await bob.invoice(webinar)).order
    assert first is not None
    assert (await bob.invoice(webinar)).order.id == first.id

    webinar.price_stars = 120  # the organizer changed the price: the old invoice is stale
    await session.commit()
    second = (await bob.invoice(webinar)).order
    assert second.id != first.id
    assert second.amount_minor == 120
    assert (await bob.invoice(webinar)).order.id == second.id  # the new one is reused
    assert not (await bob.checkout(first)).ok  # the stale invoice cannot be paid

    assert (await bob.checkout(second)).ok
    assert (await bob.pay(second)).result == PaymentResult.ISSUED
    assert (await bob.invoice(webinar)).refusal  # he has a ticket now
    assert await count(session, Order) == 2
    assert (await fresh(session, first)).status == OrderStatus.CREATED


async def test_a_free_webinar_gives_its_seats_once_each_and_refuses_the_rest(
    session: AsyncSession, stars_app: AppContext
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=None, capacity=2)
    await add_buyers(session, 2401, 3)

    async def register(user_id: int) -> Any:
        async with stars_app.session_factory() as s:
            return await Services(s, stars_app).purchases.register_free(user_id, webinar.id)

    first, second = await register(2401), await register(2402)
    assert (first.result, second.result) == (PaymentResult.ISSUED, PaymentResult.ISSUED)
    full = await register(2403)
    assert full.ticket is None
    assert "all seats" in full.extra["refusal"]
    again = await register(2401)  # a second tap: the same ticket, no seat more
    assert (again.result, again.ticket.id) == (PaymentResult.REPLAY, first.ticket.id)

    # A cancelled ticket frees its seat.
    cancelled = await fresh(session, second.ticket)
    cancelled.status = TicketStatus.CANCELLED
    await session.commit()
    assert (await register(2403)).result == PaymentResult.ISSUED
    active = await scalars(
        session, select(Ticket.user_id).where(Ticket.status == TicketStatus.ACTIVE)
    )
    assert sorted(active) == [2401, 2403]
