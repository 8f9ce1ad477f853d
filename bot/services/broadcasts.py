"""Broadcasts: an organizer's message to every paid participant of a webinar, through the outbox.

A broadcast is a row (``draft`` while the organizer looks at the preview, ``sending`` once
confirmed, ``done`` when every delivery has an answer). Confirming writes one outbox row per
active ticket, keyed by broadcast and ticket, so a double press or a retry never sends twice;
the dispatcher delivers them at the paced rate. Progress is counted from those rows, never
stored twice, so any process (or a restarted one) can show it and finish the report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.context import AppContext
from bot.formatting import escape, visible_length
from bot.i18n import _, _n
from bot.services.base import Service
from bot.services.outbox import Drop, Outgoing
from bot.services.users import UserService
from storage.enums import BroadcastStatus, OutboxKind, OutboxStatus, TicketStatus, WebinarStatus
from storage.models import Broadcast, Organization, OutboxMessage, Ticket, User, Webinar
from storage.repositories.broadcasts import BroadcastRepository
from storage.repositories.organizations import OrganizationRepository
from storage.repositories.outbox import OutboxRepository
from storage.repositories.sales import SalesRepository
from storage.repositories.webinars import WebinarRepository

if TYPE_CHECKING:
    from bot.services import Services
    from bot.services.sender import PacedSender

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096  # Telegram's limits, counted on the text as participants receive it
CAPTION_LIMIT = 1024
PICKER_SIZE = 10  # webinars offered by /broadcast: the most recent ones
PROGRESS_EVERY_S = 3.0  # edits of the progress message: often enough to see it move
RECIPIENT_CHUNK = 500


@dataclass(frozen=True)
class BroadcastCounts:
    total: int = 0
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    skipped: int = 0  # dropped: the ticket was refunded (or the webinar cancelled) meanwhile
    pending: int = 0

    @classmethod
    def of(cls, by_status: dict[OutboxStatus, int]) -> BroadcastCounts:
        return cls(
            total=sum(by_status.values()),
            sent=by_status.get(OutboxStatus.SENT, 0),
            blocked=by_status.get(OutboxStatus.BLOCKED, 0),
            failed=by_status.get(OutboxStatus.FAILED, 0),
            skipped=by_status.get(OutboxStatus.DROPPED, 0),
            pending=by_status.get(OutboxStatus.PENDING, 0) + by_status.get(OutboxStatus.SENDING, 0),
        )

    @property
    def finished(self) -> bool:
        return self.pending == 0


@dataclass(frozen=True)
class WebinarChoice:
    webinar: Webinar
    participants: int


def header(webinar: Webinar) -> str:
    """What every broadcast starts with, so participants know which webinar it is about."""
    return f"📣 <b>{escape(webinar.title)}</b>\n\n"


def outgoing(broadcast: Broadcast, webinar: Webinar) -> Outgoing:
    """The message exactly as participants (and the organizer's preview) receive it."""
    body = header(webinar) + (broadcast.text or "")
    if broadcast.photo_file_id:
        return Outgoing(photo_file_id=broadcast.photo_file_id, caption=body)
    if broadcast.document_file_id:
        return Outgoing(document_file_id=broadcast.document_file_id, caption=body)
    return Outgoing(text=body)


def too_long_by(webinar: Webinar, html_text: str, *, media: bool) -> int:
    """How many characters over Telegram's limit the message would be (0 if it fits).

    Telegram counts the text after parsing, so tags are not counted; entities are.
    """
    limit = CAPTION_LIMIT if media else TEXT_LIMIT
    return max(0, visible_length(header(webinar) + html_text) - limit)


class BroadcastService(Service):
    @property
    def repo(self) -> BroadcastRepository:
        return BroadcastRepository(self.session)

    @property
    def outbox(self) -> OutboxRepository:
        return OutboxRepository(self.session)

    @property
    def webinars(self) -> WebinarRepository:
        return WebinarRepository(self.session)

    async def organizer_org(self, user: User | None) -> Organization | None:
        """The organization ``user`` acts for, if they are a member of it; else None."""
        if user is None or user.active_org_id is None:
            return None
        found = await OrganizationRepository(self.session).membership(user.id, user.active_org_id)
        return found[0] if found else None

    async def choices(self, org_id: int) -> list[WebinarChoice]:
        """Webinars an organizer can write to: not cancelled, most recent first."""
        webinars = await self.webinars.for_org(org_id, cancelled=False, limit=PICKER_SIZE)
        counts = await self.webinars.sold(webinar.id for webinar in webinars)
        return [WebinarChoice(webinar, counts.get(webinar.id, 0)) for webinar in webinars]

    async def choice(self, org_id: int, webinar_id: int) -> WebinarChoice | None:
        webinar = await self.webinars.in_org(org_id, webinar_id)
        if webinar is None or webinar.status == WebinarStatus.CANCELLED:
            return None
        counts = await self.webinars.sold([webinar.id])
        return WebinarChoice(webinar, counts.get(webinar.id, 0))

    async def create_draft(
        self,
        webinar: Webinar,
        created_by: int,
        *,
        text: str | None,
        photo_file_id: str | None = None,
        document_file_id: str | None = None,
    ) -> Broadcast:
        """Keep what the organizer wrote while they look at the preview."""
        broadcast = Broadcast(
            org_id=webinar.org_id,
            webinar_id=webinar.id,
            created_by=created_by,
            text=text,
            photo_file_id=photo_file_id,
            document_file_id=document_file_id,
            status=BroadcastStatus.DRAFT,
            created_at=self.clock.now(),
        )
        await self.repo.add(broadcast)
        await self.session.commit()
        return broadcast

    async def get(self, org_id: int, broadcast_id: int) -> tuple[Broadcast, Webinar] | None:
        """The broadcast and its webinar, only within ``org_id``."""
        return await self.repo.with_webinar(broadcast_id, org_id=org_id)

    async def discard(self, org_id: int, broadcast_id: int) -> bool:
        """Cancel a draft; False if it was already sent or cancelled."""
        discarded = await self.repo.move(
            broadcast_id,
            from_status=BroadcastStatus.DRAFT,
            org_id=org_id,
            status=BroadcastStatus.CANCELLED,
            finished_at=self.clock.now(),
        )
        await self.session.commit()
        return discarded

    async def start(
        self,
        org_id: int,
        broadcast_id: int,
        *,
        progress_chat_id: int,
        progress_message_id: int,
    ) -> int | None:
        """Confirm a draft: one outbox row per paid participant, in one transaction.

        Returns how many were planned, or None if the draft was already confirmed or cancelled
        (a second press of the button sends nothing).
        """
        confirmed = await self.repo.move(
            broadcast_id,
            from_status=BroadcastStatus.DRAFT,
            org_id=org_id,
            status=BroadcastStatus.SENDING,
            progress_chat_id=progress_chat_id,
            progress_message_id=progress_message_id,
        )
        if not confirmed:
            # Nothing was written; commit rather than roll back, which would expire the
            # caller's loaded objects.
            await self.session.commit()
            return None
        broadcast = await self.repo.get(broadcast_id)
        assert broadcast is not None
        now = self.clock.now()
        planned = 0
        tickets = SalesRepository(self.session)
        async for chunk in tickets.active_ticket_chunks(broadcast.webinar_id, RECIPIENT_CHUNK):
            planned += await self.outbox.enqueue_many(
                [
                    {
                        "kind": OutboxKind.BROADCAST,
                        "dedupe_key": f"broadcast:{broadcast.id}:{ticket_id}",
                        "chat_id": user_id,
                        "due_at": now,
                        "org_id": broadcast.org_id,
                        "webinar_id": broadcast.webinar_id,
                        "ticket_id": ticket_id,
                        "broadcast_id": broadcast.id,
                    }
                    for ticket_id, user_id in chunk
                ],
                now=now,
            )
        await self.session.commit()
        return planned

    async def counts(self, broadcast_id: int) -> BroadcastCounts:
        return BroadcastCounts.of(await self.outbox.count_by_status(broadcast_id=broadcast_id))

    async def organizer_locale(self, user_id: int) -> str:
        user = await self.session.get(User, user_id)
        return UserService(self.session, self.app).locale_of(user)

    async def get_any(self, broadcast_id: int) -> tuple[Broadcast, Webinar] | None:
        """The broadcast and its webinar, whatever the organization (jobs, not handlers)."""
        return await self.repo.with_webinar(broadcast_id)

    async def finish(
        self, broadcast: Broadcast, webinar: Webinar, counts: BroadcastCounts, locale: str
    ) -> bool:
        """Mark the broadcast done and plan the final report, once across all processes."""
        now = self.clock.now()
        done = await self.repo.move(
            broadcast.id,
            from_status=BroadcastStatus.SENDING,
            status=BroadcastStatus.DONE,
            finished_at=now,
        )
        if not done:
            await self.session.commit()
            return False
        await self.outbox.enqueue(
            kind=OutboxKind.NOTICE,
            dedupe_key=f"broadcast:{broadcast.id}:report",
            chat_id=broadcast.progress_chat_id or broadcast.created_by,
            due_at=now,
            now=now,
            payload={"text": report_text(webinar, counts, locale)},
            org_id=broadcast.org_id,
            webinar_id=broadcast.webinar_id,
        )
        await self.session.commit()
        return True


def progress_text(webinar: Webinar, counts: BroadcastCounts, locale: str) -> str:
    """The one message the organizer watches: sent / blocked / failed of the total."""
    lines = [
        _("📣 Broadcast to «{title}»", locale=locale, title=escape(webinar.title)),
        _("Sent: {sent} of {total}", locale=locale, sent=counts.sent, total=counts.total),
        _("Blocked the bot: {blocked}", locale=locale, blocked=counts.blocked),
        _("Failed: {failed}", locale=locale, failed=counts.failed),
    ]
    if counts.skipped:
        lines.append(
            _("Skipped (refunded meanwhile): {skipped}", locale=locale, skipped=counts.skipped)
        )
    lines.append("")
    if counts.finished:
        lines.append(_("✅ Done.", locale=locale))
    else:
        lines.append(_("⏳ Sending…", locale=locale))
    return "\n".join(lines)


def report_text(webinar: Webinar, counts: BroadcastCounts, locale: str) -> str:
    """The final report, a new message so that the organizer is notified."""
    lines = [
        _n(
            "✅ Your broadcast to «{title}» is finished: delivered to {sent} of {n} participant.",
            "✅ Your broadcast to «{title}» is finished: delivered to {sent} of {n} participants.",
            counts.total,
            locale=locale,
            title=escape(webinar.title),
            sent=counts.sent,
        )
    ]
    if counts.blocked:
        lines.append(
            _n(
                "{n} participant has blocked the bot and cannot be reached.",
                "{n} participants have blocked the bot and cannot be reached.",
                counts.blocked,
                locale=locale,
            )
        )
    if counts.failed:
        lines.append(
            _n(
                "{n} message could not be delivered.",
                "{n} messages could not be delivered.",
                counts.failed,
                locale=locale,
            )
        )
    if counts.skipped:
        lines.append(
            _n(
                "{n} participant was skipped: their ticket was refunded meanwhile.",
                "{n} participants were skipped: their tickets were refunded meanwhile.",
                counts.skipped,
                locale=locale,
            )
        )
    return "\n".join(lines)


async def render_broadcast(services: Services, row: OutboxMessage) -> list[Outgoing]:
    broadcast = (
        await BroadcastRepository(services.session).get(row.broadcast_id)
        if row.broadcast_id
        else None
    )
    if broadcast is None or broadcast.status == BroadcastStatus.CANCELLED:
        raise Drop("broadcast cancelled")
    ticket = await services.session.get(Ticket, row.ticket_id) if row.ticket_id else None
    if ticket is None or ticket.status != TicketStatus.ACTIVE:
        raise Drop("ticket no longer active")
    webinar = await services.session.get(Webinar, broadcast.webinar_id)
    if webinar is None:
        raise Drop("webinar deleted")
    return [outgoing(broadcast, webinar)]


class BroadcastProgress:
    """Keeps the organizers' progress messages moving and closes finished broadcasts.

    One per process (throttling is per process; several processes editing the same message now
    and then is harmless). Finishing is a conditional update, so exactly one process sends the
    final report.
    """

    def __init__(self, app: AppContext) -> None:
        self.app = app
        self._edited: dict[int, float] = {}

    async def update(
        self, sender: PacedSender, touched: set[int], *, final_only: bool = False
    ) -> int:
        """Edit the progress of ``touched`` broadcasts (throttled) and finish those that are
        done; returns how many were finished (their report is now in the outbox)."""
        finished = 0
        async with self.app.session_factory() as session:
            open_ids = await BroadcastRepository(session).ids_with_status(BroadcastStatus.SENDING)
        for broadcast_id in open_ids:
            edit: tuple[Any, ...] | None = None
            async with self.app.session_factory() as session:
                service = BroadcastService(session, self.app)
                counts = await service.counts(broadcast_id)
                loaded = await service.get_any(broadcast_id)
                if loaded is None:
                    continue
                broadcast, webinar = loaded
                locale = await service.organizer_locale(broadcast.created_by)
                if counts.finished:
                    if not await service.finish(broadcast, webinar, counts, locale):
                        continue
                    finished += 1
                    edit = (broadcast, progress_text(webinar, counts, locale))
                elif broadcast_id in touched and not final_only:
                    last = self._edited.get(broadcast_id, 0.0)
                    if time.monotonic() - last >= PROGRESS_EVERY_S:
                        edit = (broadcast, progress_text(webinar, counts, locale))
            if edit is not None:
                broadcast, text = edit
                self._edited[broadcast_id] = time.monotonic()
                if counts.finished:
                    self._edited.pop(broadcast_id, None)
                await self._edit(sender, broadcast, text)
        return finished

    async def _edit(self, sender: PacedSender, broadcast: Broadcast, text: str) -> None:
        if broadcast.progress_chat_id is None or broadcast.progress_message_id is None:
            return
        try:
            await sender.edit_text(broadcast.progress_chat_id, broadcast.progress_message_id, text)
        except Exception as error:
            # Deleted by the organizer, say: the final report still arrives as its own message.
            log.info("progress of broadcast %s not shown: %s", broadcast.id, error)
