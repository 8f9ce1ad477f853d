"""Buyers racing for the last seats: never oversold, no link given twice, nothing lost.

Each buyer runs on its own session, as concurrent updates do. On PostgreSQL a second test spreads
the buyers over several engines (separate connection pools, as several bot processes would).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.orders import has_live_hold
from bot.services.purchases import PaymentOutcome, PaymentResult
from storage.database import create_engine, create_session_factory
from storage.enums import AccessMode, PaymentStatus, TicketStatus, WebinarStatus
from storage.models import AccessLink, Order, Payment, Refund, Ticket, Webinar
from storage.repositories.sales import OrderLock, SalesRepository
from tests.conftest import BACKEND
from tests.factories import add_links, make_org, make_webinar
from tests.sales.conftest import OWNER_ID, Buyer, FakeBotApi, add_buyers, refunds_done

BUYERS = 50
SEATS = 10


async def setup_rush(session: AsyncSession, *, links: int = SEATS + 5) -> Webinar:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(
        session, org, capacity=SEATS, access_mode=AccessMode.LINKS, price_stars=50
    )
    await add_links(session, webinar, links)
    await add_buyers(session, 5000, BUYERS)
    return webinar


async def attempt(buyer: Buyer, order: Order) -> str:
    await asyncio.sleep(random.random() / 100)  # shuffle the interleaving a little
    answer = await buyer.checkout(order)
    if not answer.ok:
        return "refused"
    return str((await buyer.pay(order)).result)


async def check_invariants(session: AsyncSession, webinar: Webinar) -> None:
    tickets = (
        await session.scalars(
            select(Ticket).where(
                Ticket.webinar_id == webinar.id, Ticket.status == TicketStatus.ACTIVE
            )
        )
    ).all()
    assert len(tickets) == SEATS
    assert len({t.user_id for t in tickets}) == SEATS
    assigned = (
        await session.scalars(select(AccessLink.ticket_id).where(AccessLink.ticket_id.is_not(None)))
    ).all()
    assert sorted(assigned) == sorted(t.id for t in tickets)  # one link each, none twice
    unrefunded = await session.scalar(
        select(func.count(Payment.id)).where(Payment.status != PaymentStatus.REFUNDED)
    )
    assert unrefunded == SEATS  # every other charge went back
    await session.commit()


async def test_fifty_buyers_race_for_ten_seats(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi
) -> None:
    webinar = await setup_rush(session)
    buyers = [Buyer(stars_app, 5000 + i, fake_bot_api) for i in range(BUYERS)]
    orders = [(await b.invoice(webinar)).order for b in buyers]
    results = await asyncio.gather(*(attempt(b, o) for b, o in zip(buyers, orders, strict=True)))
    assert Counter(results) == {"issued": SEATS, "refused": BUYERS - SEATS}
    await check_invariants(session, webinar)


async def test_late_payers_and_new_buyers_race_for_ten_seats(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi, clock: FakeClock
) -> None:
    """Ten holds lapse; their late payments race 40 fresh buyers: the late ones may win a seat
    or are refunded; never more than ten tickets."""
    webinar = await setup_rush(session)
    buyers = [Buyer(stars_app, 5000 + i, fake_bot_api) for i in range(BUYERS)]
    orders = [(await b.invoice(webinar)).order for b in buyers]
    late = list(zip(buyers[:SEATS], orders[:SEATS], strict=True))
    for buyer, order in late:
        assert (await buyer.checkout(order)).ok
    clock.advance(minutes=30)

    async def pay_late(buyer: Buyer, order: Order) -> str:
        await asyncio.sleep(random.random() / 100)
        return str((await buyer.pay(order)).result)

    results = await asyncio.gather(
        *(pay_late(b, o) for b, o in late),
        *(attempt(b, o) for b, o in zip(buyers[SEATS:], orders[SEATS:], strict=True)),
    )
    counts = Counter(results)
    assert counts["issued"] == SEATS
    assert counts["issued"] + counts["refunding"] + counts["refused"] == BUYERS
    assert len(fake_bot_api.refunded) == counts["refunding"]
    await check_invariants(session, webinar)


@pytest.fixture
async def more_apps(stars_app: AppContext, database_url: str) -> AsyncIterator[list[AppContext]]:
    """Three more apps on their own engines (connection pools), sharing the clock and bot."""
    engines = [create_engine(database_url, pool_size=5) for _ in range(3)]
    yield [replace(stars_app, session_factory=create_session_factory(engine)) for engine in engines]
    for engine in engines:
        await engine.dispose()


@pytest.mark.skipif(BACKEND != "postgres", reason="row locks across processes: PostgreSQL only")
async def test_buyers_on_several_engines_never_oversell(
    session: AsyncSession,
    stars_app: AppContext,
    more_apps: list[AppContext],
    fake_bot_api: FakeBotApi,
    clock: FakeClock,
) -> None:
    webinar = await setup_rush(session)
    apps = [stars_app, *more_apps]
    buyers = [Buyer(apps[i % len(apps)], 5000 + i, fake_bot_api) for i in range(BUYERS)]
    orders = [(await b.invoice(webinar)).order for b in buyers]
    # A third of the buyers hold first and pay late, to race the seat check under lock too.
    early = range(0, BUYERS, 3)
    for i in list(early)[:SEATS]:
        assert (await buyers[i].checkout(orders[i])).ok
    clock.advance(minutes=30)

    async def go(i: int) -> str:
        if i in list(early)[:SEATS]:
            await asyncio.sleep(random.random() / 100)
            return str((await buyers[i].pay(orders[i])).result)
        return await attempt(buyers[i], orders[i])

    results = Counter(await asyncio.gather(*(go(i) for i in range(BUYERS))))
    assert results["issued"] == SEATS
    assert sum(results.values()) == BUYERS
    assert set(results) <= {"issued", "refused", "refunding"}
    await check_invariants(session, webinar)
    assert PaymentResult.ISSUED == "issued"


# -- payments that hold a live seat run side by side (issue 13) ----------------------------------
#
# A payment whose order still holds a live seat takes the webinar's row FOR SHARE on PostgreSQL:
# such payments run in parallel with each other, and still one at a time with a cancellation, an
# edit, a pre-checkout or a payment whose hold lapsed (all FOR UPDATE). These races hold on the
# code before and after that change, on both backends (SQLite: one engine, one writer).


@pytest.fixture
def racing_apps(stars_app: AppContext, more_apps: list[AppContext]) -> list[AppContext]:
    """Four engines on PostgreSQL (four bot processes), the one app on SQLite."""
    return [stars_app, *more_apps] if BACKEND == "postgres" else [stars_app]


async def test_payments_with_live_holds_racing_a_cancel_leave_every_charge_refunded_once(
    session: AsyncSession,
    racing_apps: list[AppContext],
    fake_bot_api: FakeBotApi,
) -> None:
    org = await make_org(session, OWNER_ID)
    webinars = [await make_webinar(session, org, capacity=SEATS, price_stars=50) for _ in range(3)]
    await add_buyers(session, 5000, SEATS)
    held: list[tuple[Buyer, Order]] = []
    for w, webinar in enumerate(webinars):
        for i in range(SEATS):
            buyer = Buyer(racing_apps[(w + i) % len(racing_apps)], 5000 + i, fake_bot_api)
            buyer.work_refunds = False
            order = (await buyer.invoice(webinar)).order
            assert (await buyer.checkout(order)).ok
            held.append((buyer, order))

    async def pay(buyer: Buyer, order: Order) -> str:
        await asyncio.sleep(random.random() / 50)
        return str((await buyer.pay(order)).result)

    async def cancel(app: AppContext, webinar: Webinar) -> None:
        await asyncio.sleep(random.random() / 50)
        async with app.session_factory() as s:
            await Services(s, app).webinars.cancel(org.id, webinar.id, requested_by=OWNER_ID)

    results = await asyncio.gather(
        *(pay(buyer, order) for buyer, order in held),
        *(cancel(racing_apps[w % len(racing_apps)], webinar) for w, webinar in enumerate(webinars)),
    )
    assert set(results[: len(held)]) <= {"issued", "refunding"}
    await refunds_done(racing_apps[0])
    statuses = (await session.scalars(select(Webinar.status))).all()
    assert set(statuses) == {WebinarStatus.CANCELLED}
    active = await session.scalar(
        select(func.count(Ticket.id)).where(Ticket.status == TicketStatus.ACTIVE)
    )
    assert active == 0  # no ticket issued behind a cancellation's snapshot
    payments = (await session.scalars(select(Payment))).all()
    assert len(payments) == len(held)
    assert {p.status for p in payments} == {PaymentStatus.REFUNDED}
    refunds = Counter((await session.scalars(select(Refund.payment_id))).all())
    assert sorted(refunds) == sorted(p.id for p in payments)
    assert set(refunds.values()) == {1}  # each charge refunded once
    assert len(fake_bot_api.refunded) == len(held)
    await session.commit()


async def test_live_and_lapsed_payers_and_new_buyers_race_for_ten_seats(
    session: AsyncSession,
    racing_apps: list[AppContext],
    fake_bot_api: FakeBotApi,
    clock: FakeClock,
) -> None:
    """Six holds lapse, then four buyers hold a live seat; all ten pay while 40 new buyers
    check out: the four live holds always buy their seat, never more than ten tickets."""
    webinar = await setup_rush(session)
    apps = racing_apps
    buyers = [Buyer(apps[i % len(apps)], 5000 + i, fake_bot_api) for i in range(BUYERS)]
    orders = [(await b.invoice(webinar)).order for b in buyers]
    lapsed, live = range(6), range(6, 10)
    for i in lapsed:
        assert (await buyers[i].checkout(orders[i])).ok
    clock.advance(minutes=30)
    for i in live:
        assert (await buyers[i].checkout(orders[i])).ok

    async def go(i: int) -> str:
        if i < 10:
            await asyncio.sleep(random.random() / 100)
            return str((await buyers[i].pay(orders[i])).result)
        return await attempt(buyers[i], orders[i])

    results = await asyncio.gather(*(go(i) for i in range(BUYERS)))
    assert all(results[i] == "issued" for i in live)
    counts = Counter(results)
    assert counts["issued"] == SEATS
    assert set(counts) <= {"issued", "refused", "refunding"}
    assert len(fake_bot_api.refunded) == counts["refunding"]
    await check_invariants(session, webinar)


async def test_thirty_late_payers_race_each_other_for_ten_seats(
    session: AsyncSession,
    racing_apps: list[AppContext],
    fake_bot_api: FakeBotApi,
    clock: FakeClock,
) -> None:
    """Three rounds of ten holds lapse; their thirty charges race: each counts the seats, so
    ten buy one and twenty are refunded."""
    webinar = await setup_rush(session)
    late = 3 * SEATS
    apps = racing_apps
    buyers = [Buyer(apps[i % len(apps)], 5000 + i, fake_bot_api) for i in range(late)]
    orders = [(await b.invoice(webinar)).order for b in buyers]
    for i in range(late):
        assert (await buyers[i].checkout(orders[i])).ok
        if i % SEATS == SEATS - 1:
            clock.advance(minutes=30)

    async def pay_late(buyer: Buyer, order: Order) -> str:
        await asyncio.sleep(random.random() / 100)
        return str((await buyer.pay(order)).result)

    paid = await asyncio.gather(*(pay_late(b, o) for b, o in zip(buyers, orders, strict=True)))
    counts = Counter(paid)
    assert counts == {"issued": SEATS, "refunding": late - SEATS}
    assert len(fake_bot_api.refunded) == late - SEATS
    await check_invariants(session, webinar)


async def test_two_charges_of_one_held_order_racing_buy_one_ticket(
    session: AsyncSession,
    racing_apps: list[AppContext],
    fake_bot_api: FakeBotApi,
) -> None:
    webinar = await _webinar_with_five_buyers(session)
    pairs = []
    for i in range(5):
        first = Buyer(racing_apps[i % len(racing_apps)], 5000 + i, fake_bot_api)
        second = Buyer(racing_apps[(i + 1) % len(racing_apps)], 5000 + i, fake_bot_api)
        order = (await first.invoice(webinar)).order
        assert (await first.checkout(order)).ok
        pairs.append((first, second, order))

    await _one_of_each_pair_bought(
        [(buyer, order) for first, second, order in pairs for buyer in (first, second)]
    )
    await _one_ticket_each_and_every_other_charge_refunded(session, webinar, 5)


async def test_charges_of_two_held_orders_of_one_buyer_racing_buy_one_ticket(
    session: AsyncSession,
    racing_apps: list[AppContext],
    fake_bot_api: FakeBotApi,
) -> None:
    """Two invoices (the price changed in between), both checked out: their charges race."""
    webinar = await _webinar_with_five_buyers(session)
    buyers = [Buyer(racing_apps[i % len(racing_apps)], 5000 + i, fake_bot_api) for i in range(5)]
    old = [(await b.invoice(webinar)).order for b in buyers]
    for buyer, order in zip(buyers, old, strict=True):
        assert (await buyer.checkout(order)).ok
    webinar.price_stars = 60
    await session.commit()
    new = [(await b.invoice(webinar)).order for b in buyers]
    for buyer, order in zip(buyers, new, strict=True):
        assert (await buyer.checkout(order)).ok
    others = [
        Buyer(racing_apps[(i + 1) % len(racing_apps)], 5000 + i, fake_bot_api) for i in range(5)
    ]

    await _one_of_each_pair_bought(
        [pay for i in range(5) for pay in ((buyers[i], old[i]), (others[i], new[i]))]
    )
    await _one_ticket_each_and_every_other_charge_refunded(session, webinar, 5)


async def _webinar_with_five_buyers(session: AsyncSession) -> Webinar:
    """Buyers 5000-5004 and a Stars webinar of ``SEATS`` seats at 50 Stars."""
    webinar = await make_webinar(
        session, await make_org(session, OWNER_ID), capacity=SEATS, price_stars=50
    )
    await add_buyers(session, 5000, 5)
    return webinar


async def _one_of_each_pair_bought(payments: list[tuple[Buyer, Order]]) -> None:
    """Pay all at once (a jitter of up to 10 ms each); of each two in a row, one charge bought
    the ticket and the other is refunded as a duplicate."""

    async def pay(buyer: Buyer, order: Order) -> PaymentOutcome:
        await asyncio.sleep(random.random() / 100)
        return await buyer.pay(order)

    outcomes = await asyncio.gather(*(pay(buyer, order) for buyer, order in payments))
    for pair in zip(outcomes[::2], outcomes[1::2], strict=True):
        results = sorted((str(outcome.result), str(outcome.reason)) for outcome in pair)
        assert results == [("issued", "None"), ("refunding", "duplicate")]


async def _one_ticket_each_and_every_other_charge_refunded(
    session: AsyncSession, webinar: Webinar, buyers: int
) -> None:
    tickets = (
        await session.scalars(
            select(Ticket).where(
                Ticket.webinar_id == webinar.id, Ticket.status == TicketStatus.ACTIVE
            )
        )
    ).all()
    assert len(tickets) == len({t.user_id for t in tickets}) == buyers
    payments = (await session.scalars(select(Payment))).all()
    assert len(payments) == 2 * buyers
    bought = {t.payment_id for t in tickets}
    for payment in payments:
        expected = PaymentStatus.SUCCEEDED if payment.id in bought else PaymentStatus.REFUNDED
        assert payment.status == expected
    await session.commit()


@pytest.mark.skipif(BACKEND != "postgres", reason="row locks: PostgreSQL only")
async def test_a_hold_that_lapses_while_its_charge_is_paid_still_counts_for_a_checkout(
    session: AsyncSession, stars_app: AppContext, fake_bot_api: FakeBotApi, clock: FakeClock
) -> None:
    """A payment judged its hold live and runs beside the pre-checkouts; its hold lapses before
    its ticket is committed. A checkout meanwhile neither waits for it nor gives its seat
    away: the lapsed hold of an order a payment holds counts as taken."""
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, capacity=1, price_stars=50)
    await add_buyers(session, 5000, 2)
    bob, ann = (Buyer(stars_app, 5000 + i, fake_bot_api) for i in range(2))
    bob_order = (await bob.invoice(webinar)).order
    ann_order = (await ann.invoice(webinar)).order
    assert (await bob.checkout(bob_order)).ok
    async with stars_app.session_factory() as paying:
        found = await SalesRepository(paying).order_context(bob_order.token, lock=OrderLock.PAYMENT)
        assert found is not None
        assert has_live_hold(found.order, clock.now())
        clock.advance(minutes=30)  # Bob's hold lapses while his charge is being paid
        answer = await asyncio.wait_for(ann.checkout(ann_order), timeout=10)
        assert not answer.ok  # the seat Bob's charge is buying stays his
        await paying.rollback()
    # Bob's payment never happened (rolled back): his lapsed hold no longer counts.
    assert (await asyncio.wait_for(ann.checkout(ann_order), timeout=10)).ok
