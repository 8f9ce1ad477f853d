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
from bot.services.purchases import PaymentResult
from storage.database import create_engine, create_session_factory
from storage.enums import AccessMode, PaymentStatus, TicketStatus
from storage.models import AccessLink, Order, Payment, Ticket, Webinar
from tests.conftest import BACKEND
from tests.factories import add_links, make_org, make_webinar
from tests.sales.conftest import OWNER_ID, Buyer, FakeBotApi, add_buyers

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
