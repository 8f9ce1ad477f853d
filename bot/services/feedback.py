"""Feedback: after a webinar ends, each participant is asked once for a rating and a comment.

Planning is a job (:func:`plan_feedback`): when a webinar's end plus its organization's delay
has passed, one outbox row per active ticket is written, keyed by the ticket, in the same
transaction that marks the webinar planned. Replicas and restarts may run the job at the same
moment: the conditional mark lets one of them plan, and the keys would stop a double anyway.

A rating is one row per ticket. A second press *changes* the rating rather than being ignored:
the buttons stay under the question, a mis-tap on a phone is common, and the latest choice is
the one the participant meant; a replayed or doubled press writes the same value again, so it
can never count twice. A press for a ticket that is not the presser's (a forged callback), or
no longer active, changes nothing and says nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.context import AppContext
from bot.formatting import escape
from bot.i18n import N_, _
from bot.services.admin_input import InvalidInput
from bot.services.base import Service
from bot.services.organizations import FEEDBACK_DELAYS
from bot.services.outbox import Drop, OutboxService, Outgoing
from storage.enums import OutboxKind, TicketStatus, WebinarStatus
from storage.models import Organization, OutboxMessage, Ticket, Webinar
from storage.repositories.insights import InsightsRepository
from storage.repositories.sales import SalesRepository

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

# A webinar whose feedback moment passed longer ago than this (the bot was down for days, or the
# setting was switched on long after) is not asked about: the question would come out of the blue.
TOO_LATE = timedelta(days=2)
# Webinars that started this long ago at most can still be due (the longest delay, a long
# webinar, then TOO_LATE).
LOOKBACK = TOO_LATE + timedelta(minutes=max(d for d in FEEDBACK_DELAYS if d) + 24 * 60)
COMMENT_MAX = 1000
TICKET_CHUNK = 500
STARS = "⭐"


class FeedbackCallback(CallbackData, prefix="fb"):
    ticket_id: int
    rating: int


def feedback_key(ticket_id: int) -> str:
    return f"feedback:{ticket_id}"


@dataclass(frozen=True)
class Rated:
    """A recorded rating, and the language to answer in (the organization's)."""

    locale: str
    rating: int
    ticket_id: int
    changed: bool  # an earlier rating was replaced
    question: str  # the question as it was asked, to show again with the choice marked


@dataclass(frozen=True)
class Commented:
    locale: str


class FeedbackService(Service):
    def __init__(self, session, app: AppContext, *, outbox: OutboxService) -> None:
        super().__init__(session, app)
        self.outbox = outbox

    @property
    def repo(self) -> InsightsRepository:
        return InsightsRepository(self.session)

    async def plan_due(self) -> int:
        """Plan the questions of every webinar whose feedback moment has come; returns how many
        rows were written. Commits per webinar, so a big webinar does not hold up the others."""
        now = self.clock.now()
        planned = 0
        candidates = await self.repo.webinars_to_ask(started_after=now - LOOKBACK, now=now)
        delays: dict[int, int | None] = {}
        due: list[tuple[int, int, datetime]] = []
        for webinar in candidates:
            if webinar.org_id not in delays:
                org = await self.session.get(Organization, webinar.org_id)
                delays[webinar.org_id] = org.feedback_delay_minutes if org else None
            delay = delays[webinar.org_id]
            if delay is None:
                continue  # the organizer does not want it: looked at again if they change that
            moment = webinar.starts_at + timedelta(minutes=webinar.duration_minutes + delay)
            if moment <= now:
                due.append((webinar.id, webinar.org_id, moment))
        await self.session.commit()
        for webinar_id, org_id, moment in due:
            if not await self.repo.claim_feedback_planning(webinar_id, now):
                continue  # another replica planned it
            if now - moment <= TOO_LATE:
                planned += await self._plan(webinar_id, org_id, now)
            await self.session.commit()
        return planned

    async def _plan(self, webinar_id: int, org_id: int, now: datetime) -> int:
        planned = 0
        async for tickets in SalesRepository(self.session).active_ticket_chunks(
            webinar_id, TICKET_CHUNK
        ):
            rows: list[dict[str, Any]] = [
                {
                    "kind": OutboxKind.FEEDBACK,
                    "dedupe_key": feedback_key(ticket_id),
                    "chat_id": user_id,
                    "due_at": now,
                    "org_id": org_id,
                    "webinar_id": webinar_id,
                    "ticket_id": ticket_id,
                }
                for ticket_id, user_id in tickets
            ]
            planned += await self.outbox.repo.enqueue_many(rows, now=now)
        return planned

    async def _own_ticket(
        self, user_id: int, ticket_id: int
    ) -> tuple[Ticket, Webinar, Organization] | None:
        """The caller's own active ticket; anyone else's looks exactly like a missing one."""
        ticket = await self.session.get(Ticket, ticket_id)
        if ticket is None or ticket.user_id != user_id or ticket.status != TicketStatus.ACTIVE:
            return None
        webinar = await self.session.get(Webinar, ticket.webinar_id)
        org = await self.session.get(Organization, webinar.org_id) if webinar else None
        if webinar is None or org is None:
            return None
        return ticket, webinar, org

    async def rate(self, user_id: int, ticket_id: int, rating: int) -> Rated | None:
        """Record (or change) the rating of the caller's own ticket; None: refused."""
        if rating not in range(1, 6):
            return None
        found = await self._own_ticket(user_id, ticket_id)
        if found is None:
            await self.session.rollback()
            return None
        ticket, webinar, org = found
        before = await self.repo.feedback_of(ticket.id)
        changed = before is not None and before.rating != rating
        await self.repo.rate(
            ticket_id=ticket.id,
            webinar_id=ticket.webinar_id,
            user_id=user_id,
            rating=rating,
            now=self.clock.now(),
        )
        await self.session.commit()
        return Rated(
            locale=org.language,
            rating=rating,
            ticket_id=ticket.id,
            changed=changed,
            question=question_text(webinar, org.language),
        )

    async def comment(self, user_id: int, ticket_id: int, text: str) -> Commented | None:
        """Attach a comment to the caller's rating; None: refused (not theirs, not rated).

        Too long a comment is refused with why (:class:`InvalidInput`), nothing stored."""
        comment = text.strip()
        if len(comment) > COMMENT_MAX:
            raise InvalidInput(
                N_("Please keep your comment under {limit} characters and send it again."),
                limit=COMMENT_MAX,
            )
        found = await self._own_ticket(user_id, ticket_id)
        if found is None or not comment:
            await self.session.rollback()
            return None
        ticket, _webinar, org = found
        stored = await self.repo.set_comment(ticket.id, comment, self.clock.now())
        await self.session.commit()
        return Commented(locale=org.language) if stored else None

    async def locale_of_ticket(self, ticket_id: int) -> str | None:
        """The organization's language for a ticket (answers about its feedback)."""
        ticket = await self.session.get(Ticket, ticket_id)
        webinar = await self.session.get(Webinar, ticket.webinar_id) if ticket else None
        org = await self.session.get(Organization, webinar.org_id) if webinar else None
        await self.session.commit()
        return org.language if org else None


def rating_keyboard(ticket_id: int, chosen: int | None = None) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(
            text=f"✅ {stars}" if stars == chosen else f"{stars} {STARS}",
            callback_data=FeedbackCallback(ticket_id=ticket_id, rating=stars).pack(),
        )
        for stars in range(1, 6)
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


def question_text(webinar: Webinar, locale: str) -> str:
    return _(
        "🙏 How was <b>{title}</b>?\n\n"
        "Rate it from 1 (poor) to 5 (excellent): the organizer reads every answer.",
        locale=locale,
        title=escape(webinar.title),
    )


async def render_feedback(services: Services, row: OutboxMessage) -> list[Outgoing]:
    """The question, in the organization's language, or :class:`Drop` if it no longer fits."""
    ticket = await services.session.get(Ticket, row.ticket_id) if row.ticket_id else None
    if ticket is None or ticket.status != TicketStatus.ACTIVE:
        raise Drop("ticket no longer active")
    webinar = await services.session.get(Webinar, ticket.webinar_id)
    if webinar is None or webinar.status == WebinarStatus.CANCELLED:
        raise Drop("webinar cancelled")
    org = await services.session.get(Organization, webinar.org_id)
    if org is None:
        raise Drop("organization deleted")
    if org.feedback_delay_minutes is None:
        raise Drop("ratings switched off")
    if await InsightsRepository(services.session).feedback_of(ticket.id) is not None:
        raise Drop("already rated")
    return [
        Outgoing(
            text=question_text(webinar, org.language),
            reply_markup=rating_keyboard(ticket.id),
        )
    ]
