from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select

from storage.enums import OrderStatus, PaymentStatus, Product, TicketStatus, WebinarStatus
from storage.models import AccessLink, Order, Payment, Ticket, User, Webinar
from storage.repositories.base import Repository

# Money the organizer keeps: refunded (or being refunded) payments are not revenue.
KEPT = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUND_FAILED)


class WebinarRepository(Repository):
    async def add(self, webinar: Webinar) -> Webinar:
        self.session.add(webinar)
        await self.session.flush()
        return webinar

    async def in_org(self, org_id: int, webinar_id: int, *, lock: bool = False) -> Webinar | None:
        """The webinar only if it belongs to ``org_id``: the one way handlers reach a webinar.

        ``lock``: a change of seats or state takes the webinar's row lock (PostgreSQL), the
        same lock a payment takes after its order's, so the two are never interleaved."""
        statement = select(Webinar).where(Webinar.id == webinar_id, Webinar.org_id == org_id)
        if lock and self.dialect == "postgresql":
            statement = statement.with_for_update()
        return await self.session.scalar(statement)

    async def for_org(
        self, org_id: int, *, cancelled: bool = True, limit: int | None = None
    ) -> list[Webinar]:
        """The organization's webinars, latest start first; ``cancelled=False`` leaves those out."""
        statement = (
            select(Webinar).where(Webinar.org_id == org_id).order_by(Webinar.starts_at.desc())
        )
        if not cancelled:
            statement = statement.where(Webinar.status != WebinarStatus.CANCELLED)
        if limit is not None:
            statement = statement.limit(limit)
        return list(await self.session.scalars(statement))

    async def sold(self, webinar_ids: Iterable[int]) -> dict[int, int]:
        """Active seat tickets per webinar (recordings sold after the event take no seat)."""
        ids = list(webinar_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(Ticket.webinar_id, func.count())
            .where(
                Ticket.webinar_id.in_(ids),
                Ticket.status == TicketStatus.ACTIVE,
                Ticket.product == Product.SEAT,
            )
            .group_by(Ticket.webinar_id)
        )
        return {webinar_id: int(count) for webinar_id, count in rows}

    async def held(self, webinar_ids: Iterable[int], now: datetime) -> dict[int, int]:
        """Seats held by live checkouts per webinar."""
        ids = list(webinar_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(Order.webinar_id, func.count())
            .where(
                Order.webinar_id.in_(ids),
                Order.status == OrderStatus.HELD,
                Order.hold_expires_at > now,
            )
            .group_by(Order.webinar_id)
        )
        return {webinar_id: int(count) for webinar_id, count in rows}

    async def revenue(self, webinar_ids: Iterable[int]) -> dict[int, dict[str, int]]:
        """Kept payments per webinar and currency, in minor units."""
        ids = list(webinar_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(Order.webinar_id, Payment.currency, func.sum(Payment.amount_minor))
            .join(Order, Order.id == Payment.order_id)
            .where(
                Order.webinar_id.in_(ids),
                Payment.status.in_(KEPT),
                Payment.is_duplicate.is_(False),
            )
            .group_by(Order.webinar_id, Payment.currency)
        )
        revenue: dict[int, dict[str, int]] = {}
        for webinar_id, currency, amount in rows:
            revenue.setdefault(webinar_id, {})[currency] = int(amount or 0)
        return revenue

    async def payment_totals(
        self, org_id: int
    ) -> list[tuple[int, str, str, PaymentStatus, int, int]]:
        """Charges of an organization's webinars, duplicates left out: one row per webinar,
        method, currency and status, with the number of payments and their sum."""
        rows = await self.session.execute(
            select(
                Order.webinar_id,
                Payment.method,
                Payment.currency,
                Payment.status,
                func.count(Payment.id),
                func.sum(Payment.amount_minor),
            )
            .join(Order, Order.id == Payment.order_id)
            .join(Webinar, Webinar.id == Order.webinar_id)
            .where(Webinar.org_id == org_id, Payment.is_duplicate.is_(False))
            .group_by(Order.webinar_id, Payment.method, Payment.currency, Payment.status)
        )
        return [
            (webinar_id, str(method), currency, PaymentStatus(status), int(n), int(total or 0))
            for webinar_id, method, currency, status, n, total in rows
        ]

    async def active_tickets(self, webinar_id: int) -> list[Ticket]:
        rows = await self.session.scalars(
            select(Ticket)
            .where(Ticket.webinar_id == webinar_id, Ticket.status == TicketStatus.ACTIVE)
            .order_by(Ticket.id)
        )
        return list(rows)

    async def waiting_for_link(self, webinar_id: int) -> int:
        """Active tickets that have no link yet (the pool ran dry when they paid)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(Ticket)
            .outerjoin(AccessLink, AccessLink.ticket_id == Ticket.id)
            .where(
                Ticket.webinar_id == webinar_id,
                Ticket.status == TicketStatus.ACTIVE,
                AccessLink.id.is_(None),
            )
        )
        return int(count or 0)

    async def participants(
        self, webinar_id: int
    ) -> list[tuple[Ticket, User, Order | None, Payment | None, AccessLink | None]]:
        """Every ticket with its holder and, for paid tickets, the order and its kept payment,
        and the ticket's access link (pool, template or group invite) if it has one."""
        rows = await self.session.execute(
            select(Ticket, User, Order, Payment, AccessLink)
            .join(User, User.id == Ticket.user_id)
            .outerjoin(Order, Order.id == Ticket.order_id)
            .outerjoin(Payment, Payment.id == Ticket.payment_id)
            .outerjoin(AccessLink, AccessLink.ticket_id == Ticket.id)
            .where(Ticket.webinar_id == webinar_id)
            .order_by(Ticket.created_at, Ticket.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]
