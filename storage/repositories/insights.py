"""What organizers learn about their sales and their webinars: the rows behind charts, daily
summaries and participants' feedback."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.enums import PaymentStatus, RefundStatus, TicketStatus, WebinarStatus
from storage.models import Feedback, Order, Organization, Payment, Refund, Ticket, Webinar
from storage.repositories.base import Repository
from storage.repositories.webinars import KEPT


class InsightsRepository(Repository):
    # -- sales over time ---------------------------------------------------------------------

    async def ticket_times(
        self,
        *,
        org_id: int,
        webinar_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[datetime]:
        """When each ticket of the organization (or of one of its webinars) was issued, refunded
        ones included: a sale that day is a sale, whatever happened to it later."""
        statement = (
            select(Ticket.created_at)
            .join(Webinar, Webinar.id == Ticket.webinar_id)
            .where(Webinar.org_id == org_id)
        )
        if webinar_id is not None:
            statement = statement.where(Ticket.webinar_id == webinar_id)
        if since is not None:
            statement = statement.where(Ticket.created_at >= since)
        if until is not None:
            statement = statement.where(Ticket.created_at < until)
        return list(await self.session.scalars(statement))

    async def kept_payments(
        self,
        *,
        org_id: int,
        webinar_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[datetime, str, int]]:
        """``(paid at, currency, amount)`` of the money the organization keeps (refunded and
        duplicate charges left out, as in /stats)."""
        statement = (
            select(Payment.created_at, Payment.currency, Payment.amount_minor)
            .join(Order, Order.id == Payment.order_id)
            .join(Webinar, Webinar.id == Order.webinar_id)
            .where(
                Webinar.org_id == org_id,
                Payment.status.in_(KEPT),
                Payment.is_duplicate.is_(False),
            )
        )
        if webinar_id is not None:
            statement = statement.where(Order.webinar_id == webinar_id)
        if since is not None:
            statement = statement.where(Payment.created_at >= since)
        if until is not None:
            statement = statement.where(Payment.created_at < until)
        rows = await self.session.execute(statement)
        return [(paid_at, currency, int(amount)) for paid_at, currency, amount in rows]

    async def refunds_completed(
        self, *, org_id: int, since: datetime, until: datetime
    ) -> list[tuple[str, int]]:
        """``(currency, amount)`` of every refund that reached the buyer in the window."""
        rows = await self.session.execute(
            select(Payment.currency, Payment.amount_minor)
            .join(Refund, Refund.payment_id == Payment.id)
            .join(Order, Order.id == Payment.order_id)
            .join(Webinar, Webinar.id == Order.webinar_id)
            .where(
                Webinar.org_id == org_id,
                Refund.status == RefundStatus.SUCCEEDED,
                Payment.status == PaymentStatus.REFUNDED,
                Refund.completed_at >= since,
                Refund.completed_at < until,
            )
        )
        return [(currency, int(amount)) for currency, amount in rows]

    async def upcoming(self, org_id: int, *, now: datetime, until: datetime) -> list[Webinar]:
        """The organization's published webinars starting between ``now`` and ``until``."""
        return list(
            await self.session.scalars(
                select(Webinar)
                .where(
                    Webinar.org_id == org_id,
                    Webinar.status == WebinarStatus.PUBLISHED,
                    Webinar.starts_at >= now,
                    Webinar.starts_at < until,
                )
                .order_by(Webinar.starts_at, Webinar.id)
            )
        )

    async def orgs_with_daily_summary(self) -> list[Organization]:
        return list(
            await self.session.scalars(
                select(Organization)
                .where(Organization.daily_summary.is_(True))
                .order_by(Organization.id)
            )
        )

    # -- feedback ------------------------------------------------------------------------------

    async def webinars_to_ask(self, *, started_after: datetime, now: datetime) -> list[Webinar]:
        """Webinars that started in the window and whose feedback is not planned yet (the
        caller decides, with each organization's delay, which are due)."""
        return list(
            await self.session.scalars(
                select(Webinar)
                .where(
                    Webinar.feedback_planned_at.is_(None),
                    # Unpublished only stops sales: the webinar still took place.
                    Webinar.status != WebinarStatus.CANCELLED,
                    Webinar.starts_at <= now,
                    Webinar.starts_at >= started_after,
                )
                .order_by(Webinar.starts_at, Webinar.id)
            )
        )

    async def claim_feedback_planning(self, webinar_id: int, now: datetime) -> bool:
        """Take the webinar's feedback planning once: a conditional write, so two replicas
        planning at the same moment cannot both win (the outbox keys would stop a double
        anyway; this spares the second one the work)."""
        result = await self.session.execute(
            update(Webinar)
            .where(Webinar.id == webinar_id, Webinar.feedback_planned_at.is_(None))
            .values(feedback_planned_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    async def feedback_of(self, ticket_id: int) -> Feedback | None:
        return await self.session.scalar(select(Feedback).where(Feedback.ticket_id == ticket_id))

    async def rate(
        self, *, ticket_id: int, webinar_id: int, user_id: int, rating: int, now: datetime
    ) -> None:
        """Record or change the ticket's rating in one statement: a double press or a replayed
        update races on the ticket's unique key, never into a second row."""
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        statement = insert(Feedback).values(
            ticket_id=ticket_id,
            webinar_id=webinar_id,
            user_id=user_id,
            rating=rating,
            created_at=now,
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["ticket_id"], set_={"rating": rating, "updated_at": now}
            )
        )

    async def set_comment(self, ticket_id: int, comment: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(Feedback)
            .where(Feedback.ticket_id == ticket_id)
            .values(comment=comment, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    async def rating_counts(self, webinar_id: int) -> dict[int, int]:
        """Ratings given by holders of active tickets, ``{stars: how many}``."""
        rows = await self.session.execute(
            select(Feedback.rating, func.count())
            .join(Ticket, Ticket.id == Feedback.ticket_id)
            .where(Feedback.webinar_id == webinar_id, Ticket.status == TicketStatus.ACTIVE)
            .group_by(Feedback.rating)
        )
        return {int(rating): int(count) for rating, count in rows}

    async def comments(self, webinar_id: int, limit: int) -> list[Feedback]:
        """The newest comments of holders of active tickets."""
        return list(
            await self.session.scalars(
                select(Feedback)
                .join(Ticket, Ticket.id == Feedback.ticket_id)
                .where(
                    Feedback.webinar_id == webinar_id,
                    Ticket.status == TicketStatus.ACTIVE,
                    Feedback.comment.is_not(None),
                )
                .order_by(func.coalesce(Feedback.updated_at, Feedback.created_at).desc())
                .limit(limit)
            )
        )

    async def feedback_by_ticket(self, webinar_id: int) -> dict[int, Feedback]:
        """Every rating of the webinar, by ticket (for the participants' list and its CSV)."""
        rows = await self.session.scalars(select(Feedback).where(Feedback.webinar_id == webinar_id))
        return {row.ticket_id: row for row in rows}
