"""Access to a webinar: the access message (outbox kind ACCESS), its calendar file, the link pool
waiting list, and group-mode invite links and join requests.

The access message is rendered when the dispatcher sends it, from the ticket's current state:
a ticket refunded before its access went out renders to nothing and the row is dropped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from bot.formatting import CAPTION_LIMIT, escape, visible_length
from bot.i18n import _, _n
from bot.services.base import Service
from bot.services.outbox import OutboxService, Outgoing
from bot.services.recordings import recording_text
from bot.services.reminders import folded_offsets
from bot.services.timezones import show_time
from storage.database import holds_connection
from storage.enums import AccessMode, OutboxKind, Product, TicketStatus
from storage.models import AccessLink, Organization, OutboxMessage, Ticket, Webinar
from storage.repositories.access import AccessRepository
from storage.repositories.sales import SalesRepository

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

INVITE_NAME_MAX = 32  # Telegram's limit for an invite link's name
# In an ACCESS row's payload: the payment that bought the ticket has no confirmation of its own.
# Its access message opens with it: one message instead of two, so a purchase costs one Bot
# API call and one of Telegram's 30 messages a second less, and the buyer's first answer to
# paying is the access itself.
PAID_ACCESS = "paid"


def access_key(ticket_id: int) -> str:
    return f"access:{ticket_id}"


@dataclass
class TicketAccess:
    """One ticket with everything needed to show its access."""

    ticket: Ticket
    webinar: Webinar
    org: Organization
    link: AccessLink | None
    own_zone: str | None = None  # the holder's own time zone (/timezone), if set


class AccessService(Service):
    @property
    def repo(self) -> SalesRepository:
        return SalesRepository(self.session)

    # -- planning (in the caller's transaction) ------------------------------------------------

    async def enqueue(self, ticket: Ticket, webinar: Webinar) -> bool:
        """Plan the ticket's access message; once per ticket, whatever happens."""
        return await OutboxService(self.session, self.app).enqueue(
            OutboxKind.ACCESS,
            dedupe_key=access_key(ticket.id),
            chat_id=ticket.user_id,
            ticket_id=ticket.id,
            webinar_id=webinar.id,
            org_id=webinar.org_id,
        )

    def access_row(self, ticket: Ticket, webinar: Webinar, *, paid: bool = False) -> dict[str, Any]:
        """The outbox row :meth:`enqueue` writes, for a caller that plans it with other rows
        in one statement (``OutboxRepository.enqueue_many``, idempotent by the same key).

        ``paid``: the access message of a payment that just bought the ticket, which is also
        the payment's confirmation (``PAID_ACCESS``)."""
        row = {
            "kind": OutboxKind.ACCESS,
            "dedupe_key": access_key(ticket.id),
            "chat_id": ticket.user_id,
            "due_at": self.clock.now(),
            "ticket_id": ticket.id,
            "webinar_id": webinar.id,
            "org_id": webinar.org_id,
        }
        if paid:
            row["payload"] = {PAID_ACCESS: True}
        return row

    async def tell_waiting(self, ticket: Ticket, webinar: Webinar, org: Organization) -> None:
        """The pool is empty: tell the buyer the link follows, and alert the organizers."""
        outbox = OutboxService(self.session, self.app)
        await outbox.notice(
            dedupe_key=f"waiting:{ticket.id}",
            chat_id=ticket.user_id,
            text=_(
                "✅ Payment received: your ticket for «{title}» is confirmed. "
                "Your personal link will follow shortly: the organizers are adding links "
                "right now.",
                locale=org.language,
                title=escape(webinar.title),
            ),
            org_id=org.id,
            webinar_id=webinar.id,
            ticket_id=ticket.id,
        )
        await self.alert_pool_empty(webinar)

    async def alert_pool_empty(self, webinar: Webinar) -> None:
        """One alert per organizer each time the pool runs dry (not one per waiting buyer)."""
        generation = await self.repo.count_links(webinar.id)
        await OutboxService(self.session, self.app).notice_each(
            await self.repo.member_ids(webinar.org_id),
            dedupe_key=f"pool-empty:{webinar.id}:{generation}",
            render=lambda locale: _(
                "⚠️ «{title}» has no free participant links left, and paid participants "
                "are waiting for one. Import more links: everyone waiting gets theirs at once.",
                locale=locale,
                title=escape(webinar.title),
            ),
            org_id=webinar.org_id,
            webinar_id=webinar.id,
        )

    # -- the link pool -------------------------------------------------------------------------

    async def assign_waiting(self, webinar_id: int) -> int:
        """Give free links to tickets waiting for one and plan their access; returns how many.

        Called after links are imported (commits, then wakes the dispatcher). Under the
        webinar's row lock (PostgreSQL): two imports at once would both serve the same waiting
        tickets, and the second's link for a ticket the first had just served is refused by the
        one-link-per-ticket constraint, failing that import. The waiting tickets are listed
        after the lock, so the second sees what the first assigned.
        """
        webinar = await self.repo.webinar(webinar_id, lock=True)
        if webinar is None or webinar.access_mode != AccessMode.LINKS:
            await self.session.commit()
            return 0
        now = self.clock.now()
        assigned = 0
        waiting = await self.repo.tickets_waiting_for_link(webinar.id)
        for ticket in waiting:
            if await self.repo.take_link(webinar.id, ticket.id, now) is None:
                break
            await self.enqueue(ticket, webinar)
            assigned += 1
        if assigned < len(waiting):
            await self.alert_pool_empty(webinar)
        await self.session.commit()
        if assigned:
            self.app.wake.outbox()
        return assigned

    # -- group mode ----------------------------------------------------------------------------

    async def group_invite(self, ticket: Ticket, webinar: Webinar) -> AccessLink | None:
        """The ticket's own join-request link to the webinar's group, created on first need.

        Stored as the ticket's access link, so it is shown again by /my and revoked on refund.
        Needs a network call: the caller must not hold a transaction it cares about.
        """
        link = await self.repo.link_of(ticket.id)
        if link is not None or webinar.group_chat_id is None or self.app.bot is None:
            return link
        await self.session.commit()  # never hold the database across a network call
        invite = await self.app.bot.create_chat_invite_link(
            chat_id=webinar.group_chat_id,
            name=f"ticket {ticket.id}"[:INVITE_NAME_MAX],
            creates_join_request=True,
        )
        link = AccessLink(
            webinar_id=webinar.id,
            url=invite.invite_link,
            label=invite.name,
            ticket_id=ticket.id,
            assigned_at=self.clock.now(),
            created_at=self.clock.now(),
        )
        try:
            await self.repo.add(link)
            await self.session.commit()
        except IntegrityError:
            # Another worker made one for this ticket meanwhile: keep theirs, drop ours.
            await self.session.rollback()
            await self._revoke_invite(webinar, invite.invite_link)
            link = await self.repo.link_of(ticket.id)
            await self.session.commit()
        return link

    async def _revoke_invite(self, webinar: Webinar, url: str) -> None:
        if self.app.bot is None or webinar.group_chat_id is None:
            return
        try:
            await self.app.bot.revoke_chat_invite_link(webinar.group_chat_id, url)
        except Exception:
            log.warning("could not revoke invite link of webinar %s", webinar.id, exc_info=True)

    async def move_group(self, webinar: Webinar, org: Organization) -> list[str]:
        """The webinar now admits to another group (``webinar.group_chat_id``, already set):
        every active ticket's invite to the old group is detached and marked revoked, and its
        holder is told and sent a fresh access message, whose invite is made for the new group
        when it is rendered. In the caller's transaction; returns the old invite links, which
        the caller revokes on Telegram once it has committed (:meth:`revoke_invites`)."""
        now = self.clock.now()
        version = int(now.timestamp())
        outbox = OutboxService(self.session, self.app)
        stale: list[str] = []
        tickets = await self.repo.active_tickets(webinar.id)
        links = await self.repo.links_of([ticket.id for ticket in tickets])
        for ticket in tickets:
            link = links.get(ticket.id)
            if link is not None:
                if link.revoked_at is None:
                    stale.append(link.url)
                # Detached, so the ticket can hold the new group's invite (one link a ticket).
                link.ticket_id = None
                link.revoked_at = link.revoked_at or now
            await outbox.notice(
                dedupe_key=f"group-moved:{ticket.id}:v{version}",
                chat_id=ticket.user_id,
                text=_(
                    "👥 The participants' group of «{title}» has changed. Your invitation to "
                    "the new group follows; the old invitation no longer works.",
                    locale=org.language,
                    title=escape(webinar.title),
                ),
                org_id=org.id,
                webinar_id=webinar.id,
                ticket_id=ticket.id,
            )
            await outbox.enqueue(
                OutboxKind.ACCESS,
                dedupe_key=f"{access_key(ticket.id)}:g{webinar.group_chat_id}:v{version}",
                chat_id=ticket.user_id,
                ticket_id=ticket.id,
                webinar_id=webinar.id,
                org_id=org.id,
            )
        await self.session.flush()
        return stale

    async def revoke_invites(self, chat_id: int, urls: list[str]) -> None:
        """Revoke invite links on Telegram, best effort: a link that fails stays usable only
        for a join request, which the bot no longer approves for that chat."""
        if self.app.bot is None:
            return
        for url in urls:
            try:
                await self.app.bot.revoke_chat_invite_link(chat_id, url)
            except Exception:
                log.warning("could not revoke an invite link of chat %s", chat_id, exc_info=True)
        self.app.wake.outbox()

    async def may_join(self, chat_id: int, user_id: int) -> bool | None:
        """A join request to a webinar's group: approved for a holder of an active ticket of
        that group, declined for anyone else. ``None`` for a chat that is no webinar's group:
        the bot may administer other chats of the organizer, whose requests are not ours."""
        if not await self.repo.webinar_by_group(chat_id):
            await self.session.commit()
            return None
        allowed = await self.repo.has_active_ticket_in_group(chat_id, user_id)
        await self.session.commit()
        return allowed

    # -- reading -------------------------------------------------------------------------------

    async def my_tickets(self, user_id: int) -> list[TicketAccess]:
        """The user's active tickets with their access; group invites are created if missing."""
        rows = await self.repo.user_tickets(user_id)
        links = await self.repo.links_of([ticket.id for ticket, _w, _o in rows])
        user = await self.repo.user(user_id)
        zone = user.timezone if user is not None else None
        result = [
            TicketAccess(ticket, webinar, org, links.get(ticket.id), zone)
            for ticket, webinar, org in rows
        ]
        await self.session.commit()
        for item in result:
            if item.webinar.access_mode == AccessMode.GROUP and item.link is None:
                try:
                    item.link = await self.group_invite(item.ticket, item.webinar)
                except Exception:
                    log.warning("no invite link for ticket %s yet", item.ticket.id, exc_info=True)
        return result

    async def ticket_access(self, ticket_id: int) -> TicketAccess | None:
        """An active ticket with its access, in one statement (the render runs once per ticket
        sold: see ``storage.repositories.access``); None once the ticket is refunded.

        A session that holds no connection yet (the outbox's render, whose session is its own)
        is not begun for it: the read runs on its own, without the session's transaction and
        its cost (``storage.direct``), where a connection would otherwise be taken and a
        transaction begun and committed around one statement. On PostgreSQL it commits on its
        own."""
        if holds_connection(self.session):
            view = await AccessRepository(self.session).access_view(ticket_id)
        else:
            async with self.app.transaction(autocommit=True) as transaction:
                view = await AccessRepository(transaction).access_view(ticket_id)
        if view is None or view.ticket.status != TicketStatus.ACTIVE:
            return None
        return TicketAccess(view.ticket, view.webinar, view.org, view.link, view.own_zone)

    # -- rendering -----------------------------------------------------------------------------

    def access_text(self, item: TicketAccess) -> str:
        """The access details of one ticket, in the organization's language."""
        webinar, org, link = item.webinar, item.org, item.link
        lang = org.language
        lines = [
            _("🎟 <b>{title}</b>", locale=lang, title=escape(webinar.title)),
            _n(
                "🗓 {starts}, {n} minute",
                "🗓 {starts}, {n} minutes",
                webinar.duration_minutes,
                locale=lang,
                starts=show_time(webinar.starts_at, org, item.own_zone),
            ),
        ]
        recording = webinar.recording_available(self.clock.now())
        if item.ticket.product == Product.RECORDING:
            lines.append(
                recording_text(webinar, org)
                if recording
                else _("🎬 The recording is no longer available.", locale=lang)
            )
            return "\n".join(lines)
        if recording and self.clock.now() >= webinar.starts_at:
            # After the event the recording is what matters; the room access stays below.
            lines.append(recording_text(webinar, org))
        mode = webinar.access_mode
        if mode == AccessMode.PASSWORD:
            if webinar.room_url:
                lines.append(_("🔗 Room link: {url}", locale=lang, url=escape(webinar.room_url)))
            if webinar.room_password:
                lines.append(
                    _(
                        "🔑 Room password: <code>{password}</code>",
                        locale=lang,
                        password=escape(webinar.room_password),
                    )
                )
        elif mode in (AccessMode.LINKS, AccessMode.TEMPLATE):
            if link is not None and link.revoked_at is None:
                lines.append(
                    _(
                        "🔗 Your personal link: {url}\nIt is for you alone: please don't share it.",
                        locale=lang,
                        url=escape(link.url),
                    )
                )
            else:
                lines.append(
                    _(
                        "⏳ Your personal link will follow shortly: the organizers are adding "
                        "links.",
                        locale=lang,
                    )
                )
        elif link is not None and link.revoked_at is None:
            lines.append(
                _(
                    "👥 Join the participants' group: {url}\n"
                    "Telegram asks to approve your request: I approve it at once.",
                    locale=lang,
                    url=escape(link.url),
                )
            )
        else:
            lines.append(
                _("👥 Your invitation to the participants' group follows shortly.", locale=lang)
            )
        return "\n".join(lines)

    def access_url(self, item: TicketAccess) -> str | None:
        if item.webinar.access_mode == AccessMode.PASSWORD:
            return item.webinar.room_url
        if item.link is not None and item.link.revoked_at is None:
            return item.link.url
        return None

    def calendar(self, item: TicketAccess) -> bytes:
        """An .ics file with one event; re-sent files update it (same UID, higher SEQUENCE).

        Written by hand (see :func:`_ics`), the same bytes the icalendar package wrote: one file
        goes with every ticket sold, and the package took some 200 us of CPU for each, more than
        the rest of the render together; this takes some 15."""
        webinar, org = item.webinar, item.org
        url = self.access_url(item)
        description = [webinar.description or "", org.name]
        if url:
            description.append(url)
        if webinar.access_mode == AccessMode.PASSWORD and webinar.room_password:
            description.append(
                _("Password: {password}", locale=org.language, password=webinar.room_password)
            )
        event = [
            ("SUMMARY", _ics_text(webinar.title)),
            ("DTSTART", _ics_time(webinar.starts_at)),
            (
                "DTEND",
                _ics_time(webinar.starts_at + timedelta(minutes=webinar.duration_minutes)),
            ),
            ("DTSTAMP", _ics_time(self.clock.now())),
            ("UID", _ics_text(f"webinar-{webinar.id}-ticket-{item.ticket.id}@webinarpass")),
            ("SEQUENCE", str(max(webinar.schedule_version - 1, 0))),
            ("DESCRIPTION", _ics_text("\n\n".join(part for part in description if part))),
        ]
        if url:
            event.append(("LOCATION", _ics_text(url)))
        event.append((f"ORGANIZER;CN={_ics_param(org.name)}", f"mailto:{org.contact_email}"))
        if url:
            event.append(("URL", url))
        return _ics(event)

    async def render(self, row: OutboxMessage) -> list[Outgoing] | None:
        """Render an ACCESS row: the calendar file with the access text as its caption, or,
        when the text is too long for a caption (Telegram's 1024 characters, counted after
        HTML parsing), the text, then the calendar file."""
        if row.ticket_id is None:
            return None
        item = await self.ticket_access(row.ticket_id)
        if item is None or item.ticket.product == Product.RECORDING:
            return None  # refunded or cancelled meanwhile (or no room to enter): nothing to send
        if item.webinar.access_mode == AccessMode.GROUP and item.link is None:
            item.link = await self.group_invite(item.ticket, item.webinar)
        if item.webinar.access_mode == AccessMode.LINKS and item.link is None:
            return None  # no link yet: assign_waiting plans the access when one arrives
        lang = item.org.language
        if (row.payload or {}).get(PAID_ACCESS):
            heading = _(
                "✅ Payment received: your ticket is confirmed. Here is your access:", locale=lang
            )
        else:
            heading = _("Here is your access:", locale=lang)
        parts = [heading, self.access_text(item)]
        if folded_offsets(item.webinar, item.ticket.created_at):
            # A reminder that was due within a minute of the purchase is this very message.
            minutes = max(
                1, math.ceil((item.webinar.starts_at - self.clock.now()).total_seconds() / 60)
            )
            if item.webinar.starts_at > self.clock.now():
                parts.append(
                    _n(
                        "⏰ It starts in {n} minute: this message is also your reminder.",
                        "⏰ It starts in {n} minutes: this message is also your reminder.",
                        minutes,
                        locale=lang,
                    )
                )
        text = "\n\n".join(parts)
        calendar = (f"webinar-{item.webinar.id}.ics", self.calendar(item))
        hint = _("Add the webinar to your calendar.", locale=lang)
        # One message when the access fits in the calendar file's caption: one Bot API call,
        # and no progress mark between two parts. Without the hint if only that overflows:
        # the access is what the participant needs, and an .ics file explains itself. A row
        # whose text already went (a crash between the two parts, by this or an older version)
        # keeps the two parts, so that its retry sends the calendar file that is still owed,
        # however long the text is now.
        if not (row.payload or {}).get("parts_sent"):
            for caption in (f"{text}\n\n{hint}", text):
                if visible_length(caption) <= CAPTION_LIMIT:
                    return [Outgoing(document=calendar, caption=caption)]
        return [Outgoing(text=text), Outgoing(document=calendar, caption=hint)]


async def render_access(services: Services, row: OutboxMessage) -> list[Outgoing] | None:
    """The outbox renderer of :attr:`OutboxKind.ACCESS`."""
    return await services.access.render(row)


# -- the calendar file (RFC 5545), written without the icalendar package ------------------------

_ICS_HEAD = (
    ("BEGIN", "VCALENDAR"),
    ("VERSION", "2.0"),
    ("PRODID", "-//webinarpass//webinarpass//EN"),
    ("METHOD", "PUBLISH"),
    ("BEGIN", "VEVENT"),
)
_ICS_TAIL = (("END", "VEVENT"), ("END", "VCALENDAR"))


def _ics(event: list[tuple[str, str]]) -> bytes:
    """A calendar of one event, its lines folded at 75 octets and ended by CRLF."""
    lines = (_ics_fold(f"{name}:{value}") for name, value in (*_ICS_HEAD, *event, *_ICS_TAIL))
    return "".join(f"{line}\r\n" for line in lines).encode()


def _ics_text(value: str) -> str:
    """A TEXT value: backslash, semicolon, comma and line breaks escaped."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def _ics_param(value: str) -> str:
    """A common name as a parameter value: RFC 6868's escapes (a parameter holds no DQUOTE),
    quoted when it holds a separator or a space or an apostrophe (as the icalendar package did:
    its files and these are the same bytes)."""
    quoted = any(char in value for char in " ',;:\u2019")
    value = value.replace("^", "^^").replace("\r\n", "^n").replace("\n", "^n")
    value = value.replace("\r", "^n").replace('"', "^'")
    return f'"{value}"' if quoted else value


def _ics_time(moment: datetime) -> str:
    """A moment in UTC (the form every calendar reads the same way)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _ics_fold(line: str, limit: int = 75) -> str:
    """Fold a content line at ``limit`` octets, never inside a UTF-8 character or an escape."""
    if len(line) < limit and line.isascii():
        return line
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = len(char.encode())
        if current and size + width >= limit:
            # An escape (backslash or caret) stays with the character it escapes.
            carried = current.pop() if len(current) > 1 and current[-1] in "\\^" else ""
            parts.append("".join(current))
            current = [carried] if carried else []
            size = len(carried)
        current.append(char)
        size += width
    parts.append("".join(current))
    return "\r\n ".join(parts)
