"""A sale and a reminder fan-out to run against the real bot, and the audit that follows it: what
the sandbox charged and sent, checked against the database. Shared by the multi-replica test
(``tests/cluster``), ``bench/rush.py --replicas`` and ``bench/chaos.py``.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, text

from bot.services.reminders import reminder_key
from storage.database import create_engine, create_session_factory, is_sqlite
from storage.enums import AccessMode, OutboxKind, Role, TicketStatus, WebinarStatus
from storage.models import (
    AccessLink,
    Base,
    Organization,
    OrgMember,
    OutboxMessage,
    Payment,
    Refund,
    Ticket,
    User,
    Webinar,
)
from storage.repositories.outbox import OutboxRepository

if TYPE_CHECKING:
    from bot.sandbox import SandboxServer, SimUser
    from bot.sandbox.yookassa import FakeYooKassa

OWNER_ID = 1000
PASSWORD = "rush-pass-7"  # in the Stars webinar's access message and its reminders only
LINK_HOST = "https://meet.example.org/seat/"  # the card webinar's per-buyer links
REMINDER_TITLE = "Reminded at once"


async def prepare_database(url: str) -> None:
    """A clean schema: a fresh SQLite file, or PostgreSQL tables emptied after migrating."""
    from storage.migrate import upgrade

    engine = create_engine(url)
    await upgrade(engine)
    if not is_sqlite(url):
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@dataclass
class Sale:
    stars_code: str
    card_code: str | None = None
    webinar_ids: dict[str, int] = field(default_factory=dict)
    capacity: dict[int, int] = field(default_factory=dict)
    reminder_chats: list[int] = field(default_factory=list)


async def create_sale(
    url: str,
    *,
    seats: int,
    card_seats: int = 0,
    reminder_chats: list[int] = (),  # type: ignore[assignment]
    reminders_due_in_s: float = 3.0,
) -> Sale:
    """A Stars webinar (password access), optionally a card webinar in RUB (one link per buyer,
    paid through YooKassa), and participants of a third webinar whose reminder is due in
    ``reminders_due_in_s`` seconds: the fan-out."""
    now = datetime.now(UTC)
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            session.add(User(id=OWNER_ID, first_name="Owner", created_at=now))
            await session.flush()
            org = Organization(
                name="Cluster Webinars",
                contact_email="team@example.org",
                language="en",
                currency="RUB",
                timezone="Europe/Rome",
                accept_stars=True,
                accept_yookassa=card_seats > 0,
                created_by=OWNER_ID,
                created_at=now,
            )
            session.add(org)
            await session.flush()
            session.add(OrgMember(org_id=org.id, user_id=OWNER_ID, role=Role.OWNER, created_at=now))

            def webinar(**fields: Any) -> Webinar:
                fields.setdefault("reminder_offsets", [])
                return Webinar(
                    org_id=org.id,
                    code=secrets.token_urlsafe(6),
                    description="Everyone at once.",
                    duration_minutes=60,
                    currency="RUB",
                    status=WebinarStatus.PUBLISHED,
                    created_by=OWNER_ID,
                    created_at=now,
                    **fields,
                )

            stars = webinar(
                title="The big rush",
                starts_at=now + timedelta(days=3),
                price_stars=1,
                capacity=seats,
                access_mode=AccessMode.PASSWORD,
                room_url="https://meet.example.org/rush",
                room_password=PASSWORD,
            )
            session.add(stars)
            sale = Sale(stars_code=stars.code)
            if card_seats:
                card = webinar(
                    title="The card rush",
                    starts_at=now + timedelta(days=3),
                    price_minor=10_000,
                    capacity=card_seats,
                    access_mode=AccessMode.LINKS,
                )
                session.add(card)
                await session.flush()
                session.add_all(
                    AccessLink(webinar_id=card.id, url=f"{LINK_HOST}{n}", created_at=now)
                    for n in range(card_seats + 5)
                )
                sale.card_code = card.code
                sale.webinar_ids["card"] = card.id
                sale.capacity[card.id] = card_seats
            await session.flush()
            sale.webinar_ids["stars"] = stars.id
            sale.capacity[stars.id] = seats
            if reminder_chats:
                await _plant_reminders(
                    session, org, webinar, list(reminder_chats), now, reminders_due_in_s
                )
                sale.reminder_chats = list(reminder_chats)
            await session.commit()
    finally:
        await engine.dispose()
    return sale


async def _plant_reminders(
    session: Any, org: Organization, webinar: Any, chats: list[int], now: datetime, due_in: float
) -> None:
    """Ticket holders of a webinar an hour away, each with the one-hour reminder due at once
    (rows as ``ReminderService`` plans them)."""
    reminded: Webinar = webinar(
        title=REMINDER_TITLE,
        starts_at=now + timedelta(hours=1, seconds=due_in),
        price_stars=1,
        access_mode=AccessMode.PASSWORD,
        room_url="https://meet.example.org/reminded",
        room_password="remind-pass",
        reminder_offsets=[60],
    )
    session.add(reminded)
    await session.flush()
    await session.execute(
        insert(User), [{"id": chat, "first_name": "P", "created_at": now} for chat in chats]
    )
    await session.execute(
        insert(Ticket),
        [
            {
                "webinar_id": reminded.id,
                "user_id": chat,
                "status": TicketStatus.ACTIVE,
                "created_at": now,
            }
            for chat in chats
        ],
    )
    tickets = (
        await session.execute(
            select(Ticket.id, Ticket.user_id).where(Ticket.webinar_id == reminded.id)
        )
    ).all()
    rows = [
        {
            "kind": OutboxKind.REMINDER,
            "dedupe_key": reminder_key(ticket_id, reminded.schedule_version or 0, 60),
            "chat_id": user_id,
            "due_at": now + timedelta(seconds=due_in),
            "payload": {
                "offset": 60,
                "version": reminded.schedule_version or 0,
                "starts_at": reminded.starts_at.isoformat(),
            },
            "org_id": org.id,
            "webinar_id": reminded.id,
            "ticket_id": ticket_id,
        }
        for ticket_id, user_id in tickets
    ]
    await OutboxRepository(session).enqueue_many(rows, now=now)


async def buy(
    sandbox: SandboxServer,
    user_id: int,
    code: str,
    *,
    card: bool = False,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> float | None:
    """One buyer: the webinar's link, the pay button, the invoice paid. Returns the pre-checkout
    latency; what the bot sends afterwards is checked by :func:`audit`."""
    user = sandbox.user(user_id, first_name=f"B{user_id}", language_code="en")
    await user.command("/start", f"w_{code}")
    card_message = await user.next_message(timeout=timeout)
    buttons = [b for b in card_message.buttons if "callback_data" in b]
    wanted = [b for b in buttons if ("⭐" in b["text"]) != card] or buttons
    await user.press(card_message, callback_data=wanted[0]["callback_data"], timeout=0)
    invoice = await _next_invoice(user, timeout)
    result = await user.pay(invoice, email="buyer@example.org" if card else None)
    if not result.ok:
        raise RuntimeError(f"buyer {user_id}: checkout refused: {result.error_message}")
    return result.precheckout_latency_s


async def _next_invoice(user: SimUser, timeout: float) -> Any:  # noqa: ASYNC109
    while True:
        message = await user.next_message(timeout=timeout)
        if message.invoice is not None:
            return message


@dataclass
class Audit:
    charges: int = 0
    lost: int = 0  # charges with no Payment row, or paid with neither ticket nor recorded refund
    double_payments: int = 0
    double_tickets: int = 0
    oversold: int = 0
    links_twice: int = 0
    dup_messages: int = 0  # access messages beyond one per ticket
    missing_access: int = 0
    reminders_due: int = 0
    reminders_missing: int = 0
    reminders_twice: int = 0
    refunds: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.double_payments
            or self.double_tickets
            or self.oversold
            or self.links_twice
            or self.missing_access
            or self.reminders_missing
            or self.reminders_twice
        )


def access_messages(sandbox: SandboxServer, chat_id: int) -> int:
    """Access messages in a buyer's chat: the password, or a seat link (reminders excluded)."""
    return sum(
        1
        for message in sandbox.messages(chat_id)
        if (PASSWORD in message.body or LINK_HOST in message.body)
        and "starts in" not in message.body
    )


def reminders_of(sandbox: SandboxServer, chat_id: int) -> int:
    return sum(1 for m in sandbox.messages(chat_id) if REMINDER_TITLE in m.body)


async def audit(
    url: str,
    sandbox: SandboxServer,
    sale: Sale,
    *,
    yookassa: FakeYooKassa | None = None,
) -> Audit:
    """The sandbox's own record of charges and messages, checked against the database."""
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            payments = list((await session.scalars(select(Payment))).all())
            tickets = list((await session.scalars(select(Ticket))).all())
            refunds = list((await session.scalars(select(Refund))).all())
            assigned = select(AccessLink).where(AccessLink.ticket_id.is_not(None))
            links = list((await session.scalars(assigned)).all())
            reminder_rows = list(
                (
                    await session.scalars(
                        select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.REMINDER)
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    result = Audit(charges=len(sandbox.charges), refunds=len(refunds))
    by_charge = Counter(p.telegram_payment_charge_id for p in payments)
    payment_of = {p.telegram_payment_charge_id: p for p in payments}
    refunded_ids = {r.payment_id for r in refunds}
    card_refunds = (
        {r["payment_id"] for r in yookassa.refunds.values() if r.get("status") == "succeeded"}
        if yookassa is not None
        else set()
    )
    sold = set(sale.capacity)
    active = [t for t in tickets if t.status == TicketStatus.ACTIVE and t.webinar_id in sold]
    ticket_of_payment = {t.payment_id: t for t in active}
    for charge in sandbox.charges:
        charge_id = charge.telegram_payment_charge_id
        count = by_charge.get(charge_id, 0)
        if count == 0:
            result.lost += 1
            result.details.append(f"charge {charge_id} has no payment row")
            continue
        result.double_payments += count - 1
        payment = payment_of[charge_id]
        if payment.id in ticket_of_payment:
            continue
        refunded_there = charge.refunded or charge.provider_payment_charge_id in card_refunds
        if payment.id in refunded_ids and refunded_there:
            continue
        result.lost += 1
        result.details.append(
            f"payment {payment.id} ({charge_id}): no active ticket and no refund the provider made"
        )
    per_buyer = Counter((t.webinar_id, t.user_id) for t in active)
    result.double_tickets = sum(n - 1 for n in per_buyer.values() if n > 1)
    per_webinar = Counter(t.webinar_id for t in active)
    result.oversold = sum(
        max(0, n - sale.capacity[webinar_id]) for webinar_id, n in per_webinar.items()
    )
    per_url = Counter(link.url for link in links)
    per_ticket = Counter(link.ticket_id for link in links)
    result.links_twice = sum(n - 1 for n in per_url.values() if n > 1) + sum(
        n - 1 for n in per_ticket.values() if n > 1
    )
    for ticket in active:
        got = access_messages(sandbox, ticket.user_id)
        if got == 0:
            result.missing_access += 1
            result.details.append(f"ticket {ticket.id} of {ticket.user_id}: no access message")
        result.dup_messages += max(0, got - 1)
    chats = set(sale.reminder_chats)
    result.reminders_due = sum(1 for row in reminder_rows if row.chat_id in chats)
    for chat in sale.reminder_chats:
        got = reminders_of(sandbox, chat)
        if got == 0:
            result.reminders_missing += 1
        result.reminders_twice += max(0, got - 1)
    return result
