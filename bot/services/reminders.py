"""Reminders: outbox rows, one per ticket and offset, due before the start; and their renderer.

Nothing lives in memory per reminder: the dispatcher claims due rows in batches, so memory does
not grow with the number of planned reminders, and any number of bot processes share the work.

What a reminder becomes is decided when it is sent, not when it is planned: the participant's
own link (or the room and password) as they are now, the time in the organization's time zone
and language. A reminder that no longer makes sense is dropped at that moment: ticket refunded,
webinar cancelled, start moved (a newer plan exists), or its moment passed while the bot was down.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.formatting import escape, local_datetime
from bot.i18n import _, _n
from bot.services.base import Service
from bot.services.outbox import Drop, Outgoing
from bot.services.timezones import show_time
from storage.enums import AccessMode, OutboxKind, OutboxStatus, TicketStatus, WebinarStatus
from storage.models import Organization, OutboxMessage, Ticket, User, Webinar
from storage.repositories.outbox import OutboxRepository
from storage.repositories.sales import SalesRepository

if TYPE_CHECKING:
    from bot.services import Services

START_OFFSET = 0  # "starting now": planned for every ticket, whatever the offsets
# The start reminder goes out on the dispatcher's next tick; this much lateness (a slow tick, a
# quick restart) still counts as "starting now". Later than that it is dropped as past the start.
START_GRACE = timedelta(minutes=2)
# A reminder due less than this after the purchase would arrive on the heels of the access
# message: it is folded into that message instead ("it starts in 3 minutes"). Any later reminder
# is sent, however close to the purchase: a buyer who pays 4 minutes before the start still gets
# the "2 minutes before" one.
FOLD_GAP = timedelta(minutes=1)


def folded_offsets(webinar: Webinar, bought_at: datetime) -> list[int]:
    """The reminder offsets of a ticket bought at ``bought_at`` that its access message carries."""
    if webinar.starts_at <= bought_at:
        return []
    return [
        offset
        for offset in webinar.reminder_offsets or ()
        if offset != START_OFFSET
        and webinar.starts_at - timedelta(minutes=offset) < bought_at + FOLD_GAP
    ]


TICKET_CHUNK = 500  # tickets re-planned per query: memory stays flat for big webinars


def reminder_key(ticket_id: int, version: int, offset_minutes: int) -> str:
    return f"reminder:{ticket_id}:v{version}:{offset_minutes}"


def moved_key_prefix(webinar_id: int) -> str:
    return f"moved:{webinar_id}:"


def moved_key(webinar_id: int, version: int, ticket_id: int) -> str:
    return f"{moved_key_prefix(webinar_id)}v{version}:{ticket_id}"


@dataclass(frozen=True)
class Replan:
    """What :meth:`ReminderService.replan_webinar` did."""

    dropped: int  # unsent reminders of the older schedule
    planned: int  # reminders of the new schedule
    notified: int  # participants told about the new time


class ReminderService(Service):
    @property
    def repo(self) -> OutboxRepository:
        return OutboxRepository(self.session)

    def _rows_for(self, ticket_id: int, user_id: int, webinar: Webinar) -> list[dict[str, Any]]:
        """The reminder rows of one ticket under the webinar's current schedule.

        Offsets already past (or about to pass) when planning are skipped: no burst of stale
        reminders for late buyers. The start-time reminder is kept while the start is ahead.
        """
        now = self.clock.now()
        if webinar.status == WebinarStatus.CANCELLED or webinar.starts_at < now:
            return []
        rows = []
        offsets = sorted({*(webinar.reminder_offsets or ()), START_OFFSET}, reverse=True)
        for offset in offsets:
            due = webinar.starts_at - timedelta(minutes=offset)
            if offset != START_OFFSET and due < now + FOLD_GAP:
                continue
            rows.append(
                {
                    "kind": OutboxKind.REMINDER,
                    "dedupe_key": reminder_key(ticket_id, webinar.schedule_version, offset),
                    "chat_id": user_id,
                    "due_at": max(due, now),
                    "payload": {
                        "offset": offset,
                        "version": webinar.schedule_version,
                        "starts_at": webinar.starts_at.isoformat(),
                    },
                    "org_id": webinar.org_id,
                    "webinar_id": webinar.id,
                    "ticket_id": ticket_id,
                }
            )
        return rows

    def rows_for_ticket(self, ticket: Ticket, webinar: Webinar) -> list[dict[str, Any]]:
        """The outbox rows of the ticket's reminders, for a caller that plans them with other
        rows in one statement (a new ticket's access message: ``PurchaseService.issue_access``).
        """
        return self._rows_for(ticket.id, ticket.user_id, webinar)

    async def plan_for_ticket(self, ticket: Ticket, webinar: Webinar) -> int:
        """Plan the ticket's reminders in the caller's transaction; returns how many.

        Idempotent: planning the same ticket twice plans nothing the second time.
        """
        rows = self.rows_for_ticket(ticket, webinar)
        return await self.repo.enqueue_many(rows, now=self.clock.now())

    async def replan_webinar(
        self,
        webinar: Webinar,
        *,
        previous_start: datetime | None = None,
        notify: bool | None = None,
    ) -> Replan:
        """Re-plan every active ticket's reminders after ``webinar.schedule_version`` was bumped.

        Runs in the caller's transaction (no commit). Unsent reminders of older versions are
        dropped; the new ones are planned. When the start moved, each participant gets one
        message with the new time (a pending one about an earlier move is dropped first).
        ``notify`` forces that message on or off; by default it is sent when the start differs
        from ``previous_start``, or, when that is not given, from the start the older reminders
        were planned for.
        """
        now = self.clock.now()
        if notify is None:
            before = previous_start or await self._planned_start(webinar)
            notify = before is None or before != webinar.starts_at
        dropped = await self.repo.drop_open(
            reason="start time moved",
            kinds=(OutboxKind.REMINDER,),
            webinar_id=webinar.id,
        )
        if notify:
            await self.repo.drop_open(
                reason="start time moved again",
                kinds=(OutboxKind.NOTICE,),
                webinar_id=webinar.id,
                key_prefix=moved_key_prefix(webinar.id),
            )
        org = await self.session.get(Organization, webinar.org_id)
        planned = notified = 0
        sales = SalesRepository(self.session)
        async for tickets in sales.active_ticket_chunks(webinar.id, TICKET_CHUNK):
            rows: list[dict[str, Any]] = []
            for ticket_id, user_id in tickets:
                rows.extend(self._rows_for(ticket_id, user_id, webinar))
            if notify and org is not None and webinar.starts_at > now:
                text = moved_text(webinar, org)
                for ticket_id, user_id in tickets:
                    rows.append(
                        {
                            "kind": OutboxKind.NOTICE,
                            "dedupe_key": moved_key(
                                webinar.id, webinar.schedule_version, ticket_id
                            ),
                            "chat_id": user_id,
                            "due_at": now,
                            "payload": {"text": text},
                            "org_id": webinar.org_id,
                            "webinar_id": webinar.id,
                            "ticket_id": ticket_id,
                        }
                    )
                    notified += 1
            planned += await self.repo.enqueue_many(rows, now=now)
        return Replan(dropped=dropped, planned=planned - notified, notified=notified)

    async def _planned_start(self, webinar: Webinar) -> datetime | None:
        """The start the newest older plan was made for (None if there was none)."""
        payload = await self.repo.latest_payload(webinar_id=webinar.id, kind=OutboxKind.REMINDER)
        if not payload or "starts_at" not in payload:
            return None
        if payload.get("version") == webinar.schedule_version:
            return webinar.starts_at
        return datetime.fromisoformat(payload["starts_at"])

    async def drop_for_webinar(self, webinar: Webinar, reason: str = "webinar cancelled") -> int:
        """Drop the webinar's unsent reminders (cancelled); caller's transaction, no commit."""
        dropped = await self.repo.drop_open(
            reason=reason, kinds=(OutboxKind.REMINDER,), webinar_id=webinar.id
        )
        await self.repo.drop_open(
            reason=reason,
            kinds=(OutboxKind.NOTICE,),
            webinar_id=webinar.id,
            key_prefix=moved_key_prefix(webinar.id),
        )
        return dropped

    async def drop_for_ticket(self, ticket: Ticket, reason: str = "ticket refunded") -> int:
        """Drop a ticket's unsent reminders and broadcasts (refunded); no commit."""
        return await self.repo.drop_open(
            reason=reason,
            kinds=(OutboxKind.REMINDER, OutboxKind.BROADCAST),
            ticket_id=ticket.id,
        )


def moved_text(webinar: Webinar, org: Organization) -> str:
    return _(
        "🕑 <b>{title}</b> has a new start time: {when}.\n\n"
        "Your ticket is still valid, and I will remind you before the start.",
        locale=org.language,
        title=escape(webinar.title),
        when=local_datetime(webinar.starts_at, org.timezone, org.language),
    )


def time_left(delta: timedelta, locale: str) -> str:
    """``1 hour``, ``24 hours``, ``10 minutes``, ``90 minutes``; rounded to whole minutes."""
    minutes = max(1, round(delta.total_seconds() / 60))
    if minutes % 60 == 0 or minutes >= 120:
        hours = round(minutes / 60)
        return _n("{n} hour", "{n} hours", hours, locale=locale)
    return _n("{n} minute", "{n} minutes", minutes, locale=locale)


async def access_text(
    services: Services, webinar: Webinar, ticket: Ticket, locale: str
) -> str | None:
    """How this participant gets in, as it is now."""
    if webinar.access_mode == AccessMode.PASSWORD and webinar.room_url:
        text = _("🔗 Room: {url}", locale=locale, url=escape(webinar.room_url))
        if webinar.room_password:
            text += "\n" + _(
                "🔑 Password: <code>{password}</code>",
                locale=locale,
                password=escape(webinar.room_password),
            )
        return text
    if webinar.access_mode in (AccessMode.LINKS, AccessMode.TEMPLATE):
        link = await SalesRepository(services.session).link_of(ticket.id)
        url = link.url if link is not None and link.revoked_at is None else None
        if url:
            return _(
                "🔗 Your personal link: {url}\nIt is yours alone: please do not share it.",
                locale=locale,
                url=escape(url),
            )
    if webinar.access_mode == AccessMode.GROUP:
        return _("👥 The webinar takes place in the organizer's private group.", locale=locale)
    return None


async def _superseded(services: Services, row: OutboxMessage, now: datetime) -> bool:
    """A later reminder of the same plan is also due: send only that one (after downtime)."""
    return await OutboxRepository(services.session).later_due_exists(
        ticket_id=row.ticket_id,
        kind=OutboxKind.REMINDER,
        key_prefix=f"reminder:{row.ticket_id}:v{row.payload.get('version')}:",
        other_than=row.id,
        after=row.due_at,
        until=now,
        statuses=(OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.SENT),
    )


async def render_reminder(services: Services, row: OutboxMessage) -> list[Outgoing]:
    """The reminder as the participant should read it now, or :class:`Drop` with the reason."""
    now = services.app.clock.now()
    ticket = await services.session.get(Ticket, row.ticket_id) if row.ticket_id else None
    if ticket is None or ticket.status != TicketStatus.ACTIVE:
        raise Drop("ticket no longer active")
    webinar = await services.session.get(Webinar, ticket.webinar_id)
    if webinar is None or webinar.status == WebinarStatus.CANCELLED:
        raise Drop("webinar cancelled")
    if row.payload.get("version") != webinar.schedule_version:
        raise Drop("start time moved")
    offset = int(row.payload.get("offset", START_OFFSET))
    started = now >= webinar.starts_at
    if now > webinar.starts_at + START_GRACE or (offset != START_OFFSET and started):
        raise Drop("past the start", stale=True)
    if await _superseded(services, row, now):
        raise Drop("a later reminder is due too")
    org = await services.session.get(Organization, webinar.org_id)
    if org is None:
        raise Drop("organization deleted")
    locale = org.language
    title = escape(webinar.title)
    holder = await services.session.get(User, ticket.user_id)
    when = show_time(webinar.starts_at, org, holder.timezone if holder else None)
    if offset == START_OFFSET:
        head = _("▶️ <b>{title}</b> is starting now.", locale=locale, title=title)
    else:
        head = _(
            "⏰ <b>{title}</b> starts in {left}: {when}.",
            locale=locale,
            title=title,
            left=time_left(webinar.starts_at - now, locale),
            when=when,
        )
    parts = [head]
    access = await access_text(services, webinar, ticket, locale)
    parts.append(access or _("Your access details are in /my.", locale=locale))
    return [Outgoing(text="\n\n".join(parts))]
