"""A finished webinar's recording: added by an organizer, delivered to every ticket holder once,
shown in /my until it expires, and optionally sold after the event.

Delivery goes through the outbox (kind RECORDING), one row per ticket and recording version
(``recording:<ticket>:v<version>``): a replaced recording reaches everyone again, the same one
never twice. The row is rendered when it is sent, from the current state: a ticket refunded, a
recording replaced or expired meanwhile renders to nothing.

Selling the recording reuses the whole money path (:mod:`bot.services.orders`): an order and a
ticket of product ``recording`` (no seat, no room access, no reminders), with the same invoice,
pre-checkout, exactly-once payment and refund rules as a seat. A seat includes the recording, so
a buyer never needs both and "one active ticket per buyer and webinar" still holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.context import AppContext
from bot.formatting import escape, local_datetime
from bot.i18n import N_, _
from bot.services.admin_input import InvalidInput, NotAvailable
from bot.services.base import Service
from bot.services.outbox import Drop, OutboxService, Outgoing
from storage.enums import OutboxKind, TicketStatus, WebinarStatus
from storage.models import Organization, OutboxMessage, Ticket, Webinar
from storage.repositories.outbox import OutboxRepository
from storage.repositories.webinars import WebinarRepository

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

VIDEO = "video"
DOCUMENT = "document"


def recording_key(ticket_id: int, version: int) -> str:
    return f"recording:{ticket_id}:v{version}"


@dataclass(frozen=True)
class RecordingDraft:
    """What the organizer gives: a link or a Telegram file, an expiry, prices after the event."""

    url: str | None = None
    file_id: str | None = None
    file_kind: str | None = None  # VIDEO or DOCUMENT
    expires_at: datetime | None = None
    price_minor: int | None = None
    price_stars: int | None = None


@dataclass(frozen=True)
class RecordingOutcome:
    webinar: Webinar
    planned: int  # ticket holders the recording is on its way to


class RecordingService(Service):
    def __init__(self, session, app: AppContext, *, outbox: OutboxService) -> None:
        super().__init__(session, app)
        self.outbox = outbox

    @property
    def repo(self) -> WebinarRepository:
        return WebinarRepository(self.session)

    async def check_can_add(self, org_id: int, webinar_id: int) -> Webinar:
        """The caller's finished, not cancelled webinar; refused up front, before the
        organizer uploads a file for nothing."""
        webinar = await self.repo.in_org(org_id, webinar_id)
        if webinar is None:
            raise NotAvailable
        await self.session.commit()
        self._check(webinar)
        return webinar

    def _check(self, webinar: Webinar) -> None:
        if webinar.status == WebinarStatus.CANCELLED:
            raise InvalidInput(N_("This webinar is cancelled and can no longer be changed."))
        ends = webinar.starts_at + timedelta(minutes=webinar.duration_minutes)
        if self.clock.now() < ends:
            raise InvalidInput(N_("A recording can be added once the webinar is over, not before."))

    async def set_recording(
        self, org_id: int, webinar_id: int, draft: RecordingDraft
    ) -> RecordingOutcome:
        """Save the recording and plan its delivery to every ticket holder, in one transaction."""
        if bool(draft.url) == bool(draft.file_id):
            raise InvalidInput(N_("Send a link to the recording, or the video file itself."))
        webinar = await self.repo.in_org(org_id, webinar_id, lock=True)
        if webinar is None:
            raise NotAvailable
        self._check(webinar)
        now = self.clock.now()
        if draft.expires_at is not None and draft.expires_at <= now:
            raise InvalidInput(N_("This moment has already passed. Send a future date and time."))
        webinar.recording_url = draft.url
        webinar.recording_file_id = draft.file_id
        webinar.recording_file_kind = draft.file_kind if draft.file_id else None
        webinar.recording_expires_at = draft.expires_at
        webinar.recording_price_minor = draft.price_minor
        webinar.recording_price_stars = draft.price_stars
        webinar.recording_version = (webinar.recording_version or 0) + 1
        webinar.updated_at = now
        # An older recording still queued is replaced by this one: never send both.
        await OutboxRepository(self.session).drop_open(
            reason="recording replaced", kinds=[OutboxKind.RECORDING], webinar_id=webinar.id
        )
        planned = 0
        for ticket in await self.repo.active_tickets(webinar.id):
            planned += await self.plan(ticket, webinar)
        await self.session.commit()
        log.info("webinar %s: recording v%s for %s", webinar.id, webinar.recording_version, planned)
        if planned:
            self.app.wake.outbox()
        return RecordingOutcome(webinar, planned)

    async def plan(self, ticket: Ticket, webinar: Webinar) -> bool:
        """Plan the delivery of the current recording to one ticket, in the caller's
        transaction; once per ticket and recording, whatever happens."""
        if not webinar.has_recording:
            return False
        return await self.outbox.enqueue(
            OutboxKind.RECORDING,
            dedupe_key=recording_key(ticket.id, webinar.recording_version),
            chat_id=ticket.user_id,
            ticket_id=ticket.id,
            webinar_id=webinar.id,
            org_id=webinar.org_id,
            payload={"version": webinar.recording_version},
        )

    async def render(self, row: OutboxMessage) -> list[Outgoing]:
        ticket = await self.session.get(Ticket, row.ticket_id) if row.ticket_id else None
        if ticket is None or ticket.status != TicketStatus.ACTIVE:
            raise Drop("ticket no longer active")
        webinar = await self.session.get(Webinar, ticket.webinar_id)
        if webinar is None or webinar.status == WebinarStatus.CANCELLED:
            raise Drop("webinar cancelled")
        if row.payload.get("version") != webinar.recording_version:
            raise Drop("recording replaced")
        if not webinar.recording_available(self.clock.now()):
            raise Drop("recording expired")
        org = await self.session.get(Organization, webinar.org_id)
        if org is None:
            raise Drop("organization deleted")
        text = recording_text(webinar, org, delivered=True)
        if webinar.recording_file_id is None:
            return [Outgoing(text=text)]
        if webinar.recording_file_kind == VIDEO:
            return [Outgoing(video_file_id=webinar.recording_file_id, caption=text)]
        return [Outgoing(document_file_id=webinar.recording_file_id, caption=text)]


def recording_text(webinar: Webinar, org: Organization, *, delivered: bool = False) -> str:
    """The recording as its holders read it (message or /my line), in the org's language."""
    lang = org.language
    title = escape(webinar.title)
    if webinar.recording_url:
        if delivered:
            text = _(
                "🎬 The recording of «{title}» is ready: {url}",
                locale=lang,
                title=title,
                url=escape(webinar.recording_url),
            )
        else:
            text = _("🎬 Recording: {url}", locale=lang, url=escape(webinar.recording_url))
    elif delivered:
        text = _("🎬 The recording of «{title}».", locale=lang, title=title)
    else:
        text = _("🎬 Recording: the video is in this chat.", locale=lang)
    if webinar.recording_expires_at is not None:
        text += "\n" + _(
            "Available until {when}.",
            locale=lang,
            when=local_datetime(webinar.recording_expires_at, org.timezone, lang),
        )
    return text


async def render_recording(services: Services, row: OutboxMessage) -> list[Outgoing]:
    """The outbox renderer of :attr:`OutboxKind.RECORDING`."""
    return await services.recordings.render(row)
