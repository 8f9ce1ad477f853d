"""The shape of the selling path on the real engine: how many statements and transactions each
use case runs. Not timings: counts, which only change when the code does.

Each use case runs as an update runs it: one session, whose transaction the middleware opened
by loading the update's user, and the service's own commit (or rollback) at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.context import AppContext
from bot.logs import current_update_id
from bot.sandbox import SandboxServer
from bot.services import Services
from bot.services.purchases import PaymentResult
from storage.enums import AccessMode, OrderStatus, PaymentMethod
from storage.models import Order, User, Webinar
from storage.repositories.sales import _SeatTickets
from tests.conftest import BACKEND
from tests.engine_events import listening
from tests.factories import add_links, make_org, make_webinar
from tests.sales.conftest import OWNER_ID, add_buyers, charge_id


@dataclass
class Trace:
    """What the engine ran: statements (a transaction's ``BEGIN`` aside), begins, commits and
    rollbacks, each under the update being handled (``None`` outside any update)."""

    statements: list[tuple[int | None, str]] = field(default_factory=list)
    ends: list[tuple[int | None, str]] = field(default_factory=list)

    def of(self, update_id: int | None = None) -> list[str]:
        return [s for u, s in self.statements if update_id is None or u == update_id]

    def count(self, what: str, update_id: int | None = None) -> int:
        return sum(1 for u, e in self.ends if e == what and (update_id is None or u == update_id))

    def __str__(self) -> str:
        return "\n".join(f"  [{u}] {s[:140]}" for u, s in self.statements)


@contextmanager
def traced(engine: AsyncEngine) -> Iterator[Trace]:
    trace = Trace()

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if not sql.startswith("BEGIN"):
            trace.statements.append((current_update_id.get(), " ".join(sql.split())))

    def ended(what: str) -> Any:
        return lambda *_args: trace.ends.append((current_update_id.get(), what))

    listeners = [
        ("before_cursor_execute", statement),
        ("begin", ended("begin")),
        ("commit", ended("commit")),
        ("rollback", ended("rollback")),
    ]
    with listening(engine, listeners):
        yield trace


async def as_update(
    app: AppContext, engine: AsyncEngine, viewer: int, use_case: str, /, *args: Any, **kwargs: Any
) -> tuple[Any, Trace]:
    """Run ``services.<use_case>(...)`` (``"sales.offer"``, say) the way an update of the user
    ``viewer`` runs it, counting only what the use case itself does."""
    service, name = use_case.split(".")
    async with app.session_factory() as session:
        # The middleware's work: the transaction is open now, and the user is held in the
        # update's data for the handler (the session's identity map alone holds it weakly).
        user = await session.get(User, viewer)
        with traced(engine) as trace:
            result = await getattr(getattr(Services(session, app), service), name)(*args, **kwargs)
        del user
    return result, trace


async def world(session: AsyncSession, **webinar: Any) -> Webinar:
    org = await make_org(session, OWNER_ID)
    made = await make_webinar(session, org, **{"price_stars": 50, "capacity": 10, **webinar})
    await add_buyers(session, 5000, 3)
    return made


def one_transaction(trace: Trace, *, committed: bool = True) -> None:
    assert trace.count("begin") == 0, "the use case ended the update's transaction early"
    assert (trace.count("commit"), trace.count("rollback")) == ((1, 0) if committed else (0, 1))


async def test_the_card_is_one_statement(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    webinar = await world(session)
    await session.commit()
    offer, trace = await as_update(stars_app, engine, 5000, "sales.offer", webinar.code, 5000)
    assert offer is not None
    assert offer.seats_left == 10
    assert len(trace.of()) <= 1, trace
    one_transaction(trace)


async def test_an_invoice_is_one_read_and_an_insert_and_a_repeated_press_only_the_read(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    webinar = await world(session)
    await session.commit()
    args = (5000, webinar.id, PaymentMethod.STARS)
    first, trace = await as_update(stars_app, engine, 5000, "sales.create_invoice", *args)
    assert first.order is not None
    assert len(trace.of()) <= 2, trace
    one_transaction(trace)

    again, trace = await as_update(stars_app, engine, 5000, "sales.create_invoice", *args)
    assert again.order is not None
    assert again.order.id == first.order.id  # the order is reused
    assert len(trace.of()) <= 1, trace
    one_transaction(trace)


async def test_a_pre_checkout_is_one_read_and_one_write(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    webinar = await world(session, capacity=1)
    await session.commit()
    orders = []
    for user_id in (5000, 5001):
        result, _trace = await as_update(
            stars_app,
            engine,
            user_id,
            "sales.create_invoice",
            user_id,
            webinar.id,
            PaymentMethod.STARS,
        )
        orders.append(result.order)

    def checkout(user_id: int, order: Any) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "payload": order.token,
            "total_amount": order.amount_minor,
            "currency": order.currency,
        }

    answer, trace = await as_update(
        stars_app, engine, 5000, "sales.pre_checkout", **checkout(5000, orders[0])
    )
    assert answer.ok
    statements = trace.of()
    if BACKEND == "postgres":
        # A read without a lock, then the hold in one statement outside a transaction: no lock
        # is held across a round trip.
        assert len(statements) == 2, trace
        assert "FOR " not in statements[0], trace
        assert "xmin" in statements[0], trace
        assert statements[1].startswith("SELECT outcome, others, own_ticket_id FROM webinarpass")
    else:
        # One BEGIN IMMEDIATE transaction: the read, the count, the hold.
        assert len(statements) == 3, trace
        assert statements[2].startswith("UPDATE orders SET status"), trace
    # The update's own transaction (the middleware's), then the checkout's, without a session.
    assert (trace.count("commit"), trace.count("rollback")) == (2, 0), trace.ends

    # The last seat is held: the next checkout is refused, and writes nothing.
    answer, trace = await as_update(
        stars_app, engine, 5001, "sales.pre_checkout", **checkout(5001, orders[1])
    )
    assert not answer.ok
    assert len(trace.of()) == 2, trace
    assert not any(s.startswith("UPDATE") for s in trace.of()), trace
    status = await session.scalar(select(Order.status).where(Order.id == orders[1].id))
    assert status == OrderStatus.CREATED


async def pay(
    app: AppContext,
    engine: AsyncEngine,
    session: AsyncSession,
    lapse: FakeClock | None = None,
    **webinar: Any,
) -> tuple[Any, Trace]:
    """A buyer's purchase; the payment is traced. ``lapse``: the hold lapses before it."""
    made = await world(session, **webinar)
    if made.access_mode == AccessMode.LINKS:
        await add_links(session, made, 3)
    await session.commit()
    invoice, _trace = await as_update(
        app, engine, 5000, "sales.create_invoice", 5000, made.id, PaymentMethod.STARS
    )
    order = invoice.order
    fields = {"payload": order.token, "total_amount": order.amount_minor, "currency": "XTR"}
    answer, _trace = await as_update(
        app, engine, 5000, "sales.pre_checkout", user_id=5000, **fields
    )
    assert answer.ok
    if lapse is not None:
        lapse.advance(minutes=30)
    return await as_update(
        app,
        engine,
        5000,
        "purchases.complete_payment",
        user_id=5000,
        telegram_charge_id=charge_id(),
        provider_charge_id="provider-charge-1",
        **fields,
    )


async def test_a_payment_is_five_statements_in_one_transaction(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    """Read the order with its webinar; record the charge; mark the order paid; issue the
    ticket; plan its access message and reminders."""
    outcome, trace = await pay(stars_app, engine, session)
    assert outcome.result == PaymentResult.ISSUED
    assert len(trace.of()) <= 5, trace
    one_transaction(trace)


async def test_a_payment_with_a_live_hold_takes_the_webinars_weakest_lock(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    """Its hold becomes its ticket: the seats taken stay as they were, so payments like it run
    side by side and beside the pre-checkouts; only the order is locked exclusively
    (PostgreSQL)."""
    outcome, trace = await pay(stars_app, engine, session)
    assert outcome.result == PaymentResult.ISSUED
    if BACKEND == "postgres":
        assert trace.of()[0].endswith("FOR UPDATE OF orders FOR KEY SHARE OF webinars"), trace
    one_transaction(trace)


async def test_a_late_payment_counts_the_seats_under_the_webinars_exclusive_lock(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine, clock: FakeClock
) -> None:
    """Its hold lapsed: the charge takes a seat only if one is free. On PostgreSQL the shared
    read's transaction ends (nothing of the payment was written) and the order is read again
    with the webinar locked for counting, then the seats counted; SQLite counts at once."""
    outcome, trace = await pay(stars_app, engine, session, lapse=clock)
    assert outcome.result == PaymentResult.ISSUED
    statements = trace.of()
    if BACKEND == "postgres":
        assert statements[0].endswith("FOR KEY SHARE OF webinars"), trace
        assert statements[1].endswith("FOR UPDATE OF orders FOR NO KEY UPDATE OF webinars"), trace
        assert len(statements) <= 7, trace
        assert [trace.count(what) for what in ("rollback", "begin", "commit")] == [0, 1, 2]
    else:
        assert len(statements) <= 6, trace
        one_transaction(trace)


async def test_a_payment_that_takes_a_link_adds_only_that_statement(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    outcome, trace = await pay(stars_app, engine, session, access_mode=AccessMode.LINKS)
    assert outcome.result == PaymentResult.ISSUED
    assert len(trace.of()) <= 6, trace
    one_transaction(trace)


# Through the real bot: the user (a read, and an insert the first time) plus the use case, one
# transaction per update, and nothing read again by the handler. The card, the invoice and the
# pre-checkout run in a transaction without a session (``storage.direct``, no ``begin`` event):
# the card's and the invoice's use cases store the user themselves, and the pre-checkout skips a
# user this process has just stored. The payment's is the session's.
PER_UPDATE = {"card": 3, "invoice": 3, "pre-checkout": 3, "payment": 7}
SESSION_TRANSACTIONS = {"card": 0, "invoice": 0, "pre-checkout": 0, "payment": 1}


async def test_each_update_of_a_purchase_is_one_transaction_of_a_few_statements(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession, engine: AsyncEngine
) -> None:
    org = await make_org(session, OWNER_ID)
    webinar = await make_webinar(session, org, price_stars=50, capacity=10)
    await session.commit()
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    with traced(engine) as trace:
        await bob.command("/start", f"w_{webinar.code}")
        card = await bob.next_message()
        await bob.press(card, callback_data=card.buttons[0]["callback_data"])
        invoice = await bob.next_message()
        assert (await bob.pay(invoice)).ok
        # The access message, which confirms the payment: the payment is in.
        assert "✅" in (await bob.next_message()).body
    updates = sorted({u for u, _s in trace.statements if u is not None})
    assert len(updates) == len(PER_UPDATE), trace
    for update_id, (step, most) in zip(updates, PER_UPDATE.items(), strict=True):
        assert len(trace.of(update_id)) <= most, f"{step}:\n{trace}"
        assert trace.count("commit", update_id) == 1, f"{step}:\n{trace}"
        assert trace.count("begin", update_id) == SESSION_TRANSACTIONS[step], f"{step}:\n{trace}"
    card = trace.of(updates[0])
    assert card[0].startswith("SELECT users.id"), trace  # Bob, stored by the card's use case
    assert card[1].startswith("INSERT INTO users"), trace
    stored = await session.get(User, 2001)
    assert stored is not None
    assert (stored.first_name, stored.language_code) == ("Bob", "en")


async def test_seats_are_counted_from_the_seat_index_alone(engine: AsyncEngine) -> None:
    """Every card and every hold counts the seats a webinar's tickets take: from the partial
    index of seat tickets (its condition matched by the query's), not by reading each ticket.
    On PostgreSQL, with sequential scans off, so that the plan shows the index is usable whatever
    the table's size."""
    count = select(_SeatTickets(literal(7)))
    async with engine.connect() as connection:
        sql = str(count.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if BACKEND == "postgres":
            await connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = (await connection.execute(text(f"EXPLAIN {sql}"))).scalars().all()
        else:
            plan = [row[3] for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    assert any("ix_tickets_seats" in line for line in plan), plan
    assert not any("ix_tickets_webinar_id" in line for line in plan), plan
