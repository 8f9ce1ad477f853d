"""Test data written straight through the models, for tests that need a world to act in."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage.enums import AccessMode, Role, WebinarStatus
from storage.models import AccessLink, Organization, OrgMember, User, Webinar

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # FakeClock's default start


async def make_user(
    session: AsyncSession,
    user_id: int,
    *,
    first_name: str = "User",
    username: str | None = None,
    language_code: str | None = "en",
) -> User:
    user = await session.get(User, user_id)
    if user is None:
        user = User(
            id=user_id,
            first_name=first_name,
            username=username,
            language_code=language_code,
            created_at=NOW,
        )
        session.add(user)
        await session.flush()
    return user


async def make_org(
    session: AsyncSession,
    owner_id: int,
    *,
    name: str = "Acme Webinars",
    language: str = "en",
    currency: str = "USD",
    timezone: str = "Europe/Rome",
    accept_stars: bool = True,
    accept_stripe: bool = False,
    accept_yookassa: bool = False,
    **fields: object,
) -> Organization:
    owner = await make_user(session, owner_id, first_name="Owner")
    org = Organization(
        name=name,
        contact_email="team@example.org",
        language=language,
        currency=currency,
        timezone=timezone,
        accept_stars=accept_stars,
        accept_stripe=accept_stripe,
        accept_yookassa=accept_yookassa,
        created_by=owner_id,
        created_at=NOW,
        **fields,
    )
    session.add(org)
    await session.flush()
    session.add(OrgMember(org_id=org.id, user_id=owner_id, role=Role.OWNER, created_at=NOW))
    owner.active_org_id = org.id
    await session.flush()
    return org


async def make_webinar(
    session: AsyncSession,
    org: Organization,
    *,
    title: str = "Pricing for founders",
    starts_at: datetime | None = None,
    price_stars: int | None = 100,
    price_minor: int | None = None,
    capacity: int | None = None,
    access_mode: AccessMode = AccessMode.PASSWORD,
    status: WebinarStatus = WebinarStatus.PUBLISHED,
    reminder_offsets: list[int] | None = None,
    **fields: object,
) -> Webinar:
    defaults: dict[str, object] = {}
    if access_mode == AccessMode.PASSWORD:
        defaults = {"room_url": "https://meet.example.org/room/42", "room_password": "s3cret"}
    defaults.update(fields)
    webinar = Webinar(
        org_id=org.id,
        code=secrets.token_urlsafe(9),
        title=title,
        description="How to set prices that sell.",
        starts_at=starts_at or NOW + timedelta(days=7),
        duration_minutes=90,
        currency=org.currency,
        price_minor=price_minor,
        price_stars=price_stars,
        capacity=capacity,
        access_mode=access_mode,
        status=status,
        reminder_offsets=[1440, 60, 10] if reminder_offsets is None else reminder_offsets,
        created_by=org.created_by,
        created_at=NOW,
        **defaults,
    )
    session.add(webinar)
    await session.flush()
    return webinar


async def add_links(session: AsyncSession, webinar: Webinar, count: int) -> list[AccessLink]:
    links = [
        AccessLink(
            webinar_id=webinar.id,
            url=f"https://meet.example.org/j/{webinar.id}-{i}",
            created_at=NOW,
        )
        for i in range(count)
    ]
    session.add_all(links)
    await session.flush()
    return links


async def make_every_kind_of_row(session: AsyncSession) -> None:
    """A world with at least one row in every table: an organization with its team and an
    invite, a password webinar and a link webinar, an order paid and refunded, a payment that
    matched no order, a broadcast, outbox rows, a processed update."""
    from storage.enums import (
        OrderStatus,
        OutboxKind,
        OutboxStatus,
        PaymentMethod,
        PaymentStatus,
        RefundReason,
        RefundStatus,
        TicketStatus,
    )
    from storage.models import (
        Broadcast,
        Feedback,
        JobLease,
        Order,
        OrgInvite,
        OutboxMessage,
        Payment,
        Refund,
        Ticket,
    )

    org = await make_org(session, 1000, name="Académie «Prix»")
    await make_user(session, 1001, first_name="Co-organizer", language_code="it")
    buyer = await make_user(session, 2001, first_name="Bob", username="bob")
    session.add(
        OrgInvite(
            org_id=org.id,
            code=secrets.token_hex(8),
            role=Role.ADMIN,
            created_by=1000,
            expires_at=NOW + timedelta(days=1),
            created_at=NOW,
        )
    )
    webinar = await make_webinar(session, org)
    linked = await make_webinar(session, org, title="Links", access_mode=AccessMode.LINKS)
    links = await add_links(session, linked, 3)
    order = Order(
        token=secrets.token_hex(16),
        webinar_id=linked.id,
        user_id=buyer.id,
        method=PaymentMethod.STARS,
        amount_minor=100,
        currency="XTR",
        status=OrderStatus.PAID,
        paid_at=NOW,
        created_at=NOW,
    )
    session.add(order)
    await session.flush()
    ticket = Ticket(
        order_id=order.id,
        webinar_id=linked.id,
        user_id=buyer.id,
        status=TicketStatus.REFUNDED,
        access_delivered_at=NOW,
        revoked_at=NOW + timedelta(hours=1),
        created_at=NOW,
    )
    session.add(ticket)
    await session.flush()
    links[0].ticket_id = ticket.id
    payment = Payment(
        order_id=order.id,
        user_id=buyer.id,
        method=PaymentMethod.STARS,
        telegram_payment_charge_id="charge-1",
        amount_minor=100,
        currency="XTR",
        status=PaymentStatus.REFUNDED,
        refunded_at=NOW + timedelta(hours=1),
        created_at=NOW,
    )
    unmatched = Payment(
        order_id=None,
        user_id=buyer.id,
        method=PaymentMethod.STARS,
        telegram_payment_charge_id="charge-2",
        amount_minor=50,
        currency="XTR",
        status=PaymentStatus.REFUND_PENDING,
        created_at=NOW,
    )
    session.add_all([payment, unmatched])
    await session.flush()
    session.add_all(
        [
            Refund(
                payment_id=payment.id,
                status=RefundStatus.SUCCEEDED,
                reason=RefundReason.ORGANIZER,
                idempotency_key=secrets.token_hex(8),
                requested_by=1000,
                completed_at=NOW + timedelta(hours=1),
                created_at=NOW,
            ),
            Refund(
                payment_id=unmatched.id,
                status=RefundStatus.PROCESSING,
                reason=RefundReason.UNMATCHED,
                idempotency_key=secrets.token_hex(8),
                next_check_at=NOW + timedelta(minutes=5),
                checks=2,
                created_at=NOW,
            ),
        ]
    )
    broadcast = Broadcast(
        org_id=org.id, webinar_id=webinar.id, created_by=1000, text="Ciao a tutti", created_at=NOW
    )
    session.add(broadcast)
    await session.flush()
    session.add_all(
        [
            OutboxMessage(
                kind=OutboxKind.ACCESS,
                dedupe_key=f"access:{ticket.id}",
                chat_id=buyer.id,
                ticket_id=ticket.id,
                webinar_id=linked.id,
                payload={"parts_sent": 1, "note": "ünïcödé"},
                due_at=NOW,
                status=OutboxStatus.SENT,
                attempts=1,
                sent_at=NOW,
                created_at=NOW,
            ),
            OutboxMessage(
                kind=OutboxKind.BROADCAST,
                dedupe_key=f"broadcast:{broadcast.id}:{buyer.id}",
                chat_id=buyer.id,
                broadcast_id=broadcast.id,
                webinar_id=webinar.id,
                due_at=NOW + timedelta(minutes=1),
                created_at=NOW,
            ),
        ]
    )
    session.add(inbound_update(bot_id=123456789, update_id=42))
    session.add(JobLease(name="reconcile", holder="replica-1", lease_until=NOW))
    session.add(
        Feedback(
            ticket_id=ticket.id,
            webinar_id=linked.id,
            user_id=buyer.id,
            rating=4,
            comment="Clear, «merci»",
            created_at=NOW,
        )
    )
    await session.flush()


def inbound_update(*, bot_id: int, update_id: int) -> Any:
    """A handled update, as the intake leaves it."""
    from storage.enums import InboundStatus
    from storage.models import InboundUpdate

    return InboundUpdate(
        bot_id=bot_id,
        update_id=update_id,
        kind="message",
        priority=2,
        payload={"update_id": update_id},
        status=InboundStatus.DONE,
        attempts=1,
        next_attempt_at=NOW,
        received_at=NOW,
        finished_at=NOW,
    )
