"""Who holds a ticket for a webinar, what they paid, whether access reached them; CSV export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from bot.context import AppContext
from bot.formatting import minor_to_decimal
from bot.i18n import _
from bot.services.base import Service
from bot.services.webinars import WebinarService
from storage.enums import PaymentMethod, PaymentStatus, Product, TicketStatus
from storage.models import Webinar
from storage.repositories.insights import InsightsRepository
from storage.repositories.webinars import WebinarRepository


@dataclass(frozen=True)
class Participant:
    ticket_id: int
    user_id: int
    name: str
    username: str | None
    status: TicketStatus
    amount_minor: int  # 0 for a free ticket
    currency: str | None
    method: PaymentMethod | None  # None for a free ticket
    paid_at: datetime | None
    access_delivered_at: datetime | None
    refund_pending: bool = False  # a refund was asked for and the money is not back yet
    refund_failed: bool = False  # the provider refused it: owed, /refund tries again
    rating: int | None = None  # 1-5, given after the webinar
    comment: str | None = None
    product: Product = Product.SEAT
    link_token: str | None = None  # template mode: the token in the participant's link
    link_revoked: bool = False


@dataclass(frozen=True)
class ParticipantList:
    webinar: Webinar
    participants: list[Participant]

    @property
    def active(self) -> list[Participant]:
        return [p for p in self.participants if p.status == TicketStatus.ACTIVE]


class ParticipantService(Service):
    def __init__(self, session, app: AppContext, *, webinars: WebinarService) -> None:
        super().__init__(session, app)
        self.webinars = webinars

    async def list(self, org_id: int, webinar_id: int) -> ParticipantList:
        """Every ticket of the caller's webinar, oldest first (refunded ones included)."""
        webinar = await self.webinars.get(org_id, webinar_id)
        rows = await WebinarRepository(self.session).participants(webinar.id)
        feedback = await InsightsRepository(self.session).feedback_by_ticket(webinar.id)
        participants = []
        for ticket, user, order, payment, link in rows:
            given = feedback.get(ticket.id)
            participants.append(
                Participant(
                    ticket_id=ticket.id,
                    user_id=user.id,
                    name=user.full_name,
                    username=user.username,
                    status=ticket.status,
                    amount_minor=payment.amount_minor if payment else 0,
                    currency=payment.currency if payment else None,
                    method=payment.method if payment else (order.method if order else None),
                    paid_at=payment.created_at if payment else None,
                    access_delivered_at=ticket.access_delivered_at,
                    refund_pending=bool(payment and payment.status == PaymentStatus.REFUND_PENDING),
                    refund_failed=bool(payment and payment.status == PaymentStatus.REFUND_FAILED),
                    rating=given.rating if given else None,
                    comment=given.comment if given else None,
                    product=Product(ticket.product),
                    link_token=link.token if link is not None else None,
                    link_revoked=link is not None and link.revoked_at is not None,
                )
            )
        return ParticipantList(webinar, participants)

    def csv(self, listing: ParticipantList, locale: str) -> bytes:
        """One row per ticket, UTF-8 with a BOM so spreadsheet apps read non-Latin names."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                _("Ticket", locale=locale),
                _("Telegram ID", locale=locale),
                _("Name", locale=locale),
                _("Username", locale=locale),
                _("Status", locale=locale),
                _("Amount", locale=locale),
                _("Currency", locale=locale),
                _("Method", locale=locale),
                _("Paid at (UTC)", locale=locale),
                _("Access delivered at (UTC)", locale=locale),
                _("Product", locale=locale),
                _("Link token", locale=locale),
                _("Rating (1-5)", locale=locale),
                _("Comment", locale=locale),
            ]
        )
        for p in listing.participants:
            writer.writerow(
                [
                    p.ticket_id,
                    p.user_id,
                    _neutralize(p.name),
                    # Bare, not "@name": a cell starting with "@" is a formula to spreadsheets,
                    # and a Telegram username (letters, digits, "_") never needs the quote.
                    _neutralize(p.username or ""),
                    p.status.value,
                    str(minor_to_decimal(p.amount_minor, p.currency)) if p.currency else "0",
                    p.currency or "",
                    p.method.value if p.method else "free",
                    _iso(p.paid_at),
                    _iso(p.access_delivered_at),
                    p.product.value,
                    # The status column tells a refunded ticket's (revoked) token apart.
                    p.link_token or "",
                    p.rating or "",
                    _neutralize(p.comment or ""),
                ]
            )
        return buffer.getvalue().encode("utf-8-sig")


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


# What makes a spreadsheet read a cell as a formula (OWASP's list): a leading tab or CR is
# dropped by some importers, which then see the "=" behind it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def _neutralize(value: str) -> str:
    """Names are typed by participants: never let a spreadsheet run one as a formula."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value
