"""Webinars as organizers manage them: create, list with sales, edit, publish, cancel."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ChatMemberAdministrator

from bot.context import AppContext
from bot.i18n import N_
from bot.services.access import AccessService
from bot.services.admin_input import (
    DEFAULT_OFFSETS,
    InvalidInput,
    NotAvailable,
    is_empty_mark,
    parse_capacity,
    parse_description,
    parse_duration,
    parse_offsets,
    parse_price,
    parse_room_password,
    parse_stars,
    parse_start,
    parse_title,
    parse_url,
)
from bot.services.base import Service
from bot.services.link_templates import parse_link_template
from bot.services.organizations import Membership
from bot.services.outbox import OutboxService
from bot.services.refunds import RefundService, WebinarRefunds
from bot.services.reminders import ReminderService
from storage.enums import AccessMode, OutboxKind, WebinarStatus
from storage.models import Organization, Webinar
from storage.repositories.links import LinkRepository
from storage.repositories.outbox import OutboxRepository
from storage.repositories.webinars import WebinarRepository

log = logging.getLogger(__name__)
SHARE_PREFIX = "w_"


class DisplayStatus(StrEnum):
    """What the organizer sees: the stored status refined by seats and time."""

    DRAFT = "draft"
    ON_SALE = "on_sale"
    SOLD_OUT = "sold_out"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class WebinarField(StrEnum):
    TITLE = "title"
    DESCRIPTION = "description"
    START = "start"
    DURATION = "duration"
    PRICE = "price"
    STARS = "stars"
    SEATS = "seats"
    ROOM_URL = "room_url"
    PASSWORD = "password"
    REMINDERS = "reminders"
    TEMPLATE = "template"  # the link template of template mode


# Fields whose change a participant who already paid must hear about.
ACCESS_FIELDS = frozenset({WebinarField.ROOM_URL, WebinarField.PASSWORD})


@dataclass(frozen=True)
class PoolStats:
    free: int = 0
    assigned: int = 0
    revoked: int = 0


@dataclass
class WebinarDraft:
    """Everything the creation wizard collects."""

    title: str
    starts_at: datetime
    access_mode: AccessMode
    description: str = ""
    duration_minutes: int = 60
    price_minor: int | None = None
    price_stars: int | None = None
    capacity: int | None = None
    room_url: str | None = None
    room_password: str | None = None
    group_chat_id: int | None = None
    link_template: str | None = None
    reminder_offsets: list[int] = field(default_factory=lambda: list(DEFAULT_OFFSETS))


@dataclass(frozen=True)
class WebinarSummary:
    webinar: Webinar
    status: DisplayStatus
    sold: int
    held: int
    revenue: dict[str, int]
    pool: PoolStats | None  # unique-links webinars only

    @property
    def seats_left(self) -> int | None:
        capacity = self.webinar.capacity
        return None if capacity is None else max(capacity - self.sold - self.held, 0)


@dataclass(frozen=True)
class EditOutcome:
    webinar: Webinar
    # Participants holding a ticket when the room link or password changed: offer to re-send.
    to_notify: int = 0


@dataclass(frozen=True)
class CancelOutcome:
    webinar: Webinar
    tickets: int
    refunds: WebinarRefunds


@dataclass(frozen=True)
class GroupCheck:
    chat_id: int
    title: str


class WebinarService(Service):
    def __init__(
        self,
        session,
        app: AppContext,
        *,
        reminders: ReminderService,
        refunds: RefundService,
        outbox: OutboxService,
        access: AccessService,
    ) -> None:
        super().__init__(session, app)
        self.access = access
        self.reminders = reminders
        self.refunds = refunds
        self.outbox = outbox

    @property
    def repo(self) -> WebinarRepository:
        return WebinarRepository(self.session)

    def share_link(self, webinar: Webinar) -> str:
        return f"https://t.me/{self.app.bot_username}?start={SHARE_PREFIX}{webinar.code}"

    async def get(self, org_id: int, webinar_id: int, *, lock: bool = False) -> Webinar:
        """The webinar if it belongs to ``org_id``; a forged or stale id gets NotAvailable."""
        webinar = await self.repo.in_org(org_id, webinar_id, lock=lock)
        if webinar is None:
            raise NotAvailable
        return webinar

    def parse(self, field: WebinarField, raw: str, org: Organization) -> Any:
        """Turn what the organizer typed for ``field`` into its value, or refuse with why."""
        text = raw.strip()
        if field == WebinarField.TITLE:
            return parse_title(text)
        if field == WebinarField.DESCRIPTION:
            return parse_description(text)
        if field == WebinarField.START:
            return parse_start(text, org.timezone, self.clock.now())
        if field == WebinarField.DURATION:
            return parse_duration(text)
        if field == WebinarField.PRICE:
            return None if is_empty_mark(text) else parse_price(text, org.currency)
        if field == WebinarField.STARS:
            return None if is_empty_mark(text) else parse_stars(text)
        if field == WebinarField.SEATS:
            return None if is_empty_mark(text) else parse_capacity(text)
        if field == WebinarField.ROOM_URL:
            return parse_url(text)
        if field == WebinarField.PASSWORD:
            return parse_room_password(text)
        if field == WebinarField.TEMPLATE:
            return parse_link_template(text)
        return parse_offsets(text)

    async def create(self, membership: Membership, draft: WebinarDraft, created_by: int) -> Webinar:
        """Save a new webinar as a draft: nothing is sold until it is published."""
        org = membership.org
        if draft.starts_at <= self.clock.now():
            raise InvalidInput(N_("This moment has already passed. Send a future date and time."))
        now = self.clock.now()
        webinar = await self.repo.add(
            Webinar(
                org_id=org.id,
                code=secrets.token_urlsafe(12),
                title=draft.title,
                description=draft.description,
                starts_at=draft.starts_at,
                duration_minutes=draft.duration_minutes,
                currency=org.currency,
                price_minor=draft.price_minor,
                price_stars=draft.price_stars,
                capacity=draft.capacity,
                access_mode=draft.access_mode,
                room_url=draft.room_url,
                room_password=draft.room_password,
                group_chat_id=draft.group_chat_id,
                link_template=draft.link_template
                if draft.access_mode == AccessMode.TEMPLATE
                else None,
                reminder_offsets=list(draft.reminder_offsets),
                status=WebinarStatus.DRAFT,
                schedule_version=1,
                created_by=created_by,
                created_at=now,
            )
        )
        await self.session.commit()
        return webinar

    async def summaries(self, org_id: int) -> list[WebinarSummary]:
        """The organization's webinars: upcoming first (soonest first), then past and cancelled."""
        webinars = await self.repo.for_org(org_id)
        summaries = await self._summarize(webinars)
        live = [s for s in summaries if s.status not in _CLOSED]
        closed = [s for s in summaries if s.status in _CLOSED]
        live.sort(key=lambda s: s.webinar.starts_at)
        return live + closed

    async def summary(self, org_id: int, webinar_id: int) -> WebinarSummary:
        return (await self._summarize([await self.get(org_id, webinar_id)]))[0]

    async def _summarize(self, webinars: list[Webinar]) -> list[WebinarSummary]:
        ids = [w.id for w in webinars]
        now = self.clock.now()
        sold = await self.repo.sold(ids)
        held = await self.repo.held(ids, now)
        revenue = await self.repo.revenue(ids)
        link_ids = [w.id for w in webinars if w.access_mode == AccessMode.LINKS]
        pools = await LinkRepository(self.session).stats(link_ids)
        result = []
        for webinar in webinars:
            pool = None
            if webinar.access_mode == AccessMode.LINKS:
                pool = PoolStats(*pools.get(webinar.id, (0, 0, 0)))
            n_sold, n_held = sold.get(webinar.id, 0), held.get(webinar.id, 0)
            result.append(
                WebinarSummary(
                    webinar=webinar,
                    status=self.display_status(webinar, n_sold + n_held, now),
                    sold=n_sold,
                    held=n_held,
                    revenue=revenue.get(webinar.id, {}),
                    pool=pool,
                )
            )
        return result

    @staticmethod
    def display_status(webinar: Webinar, taken: int, now: datetime) -> DisplayStatus:
        if webinar.status == WebinarStatus.CANCELLED:
            return DisplayStatus.CANCELLED
        if now >= webinar.starts_at + timedelta(minutes=webinar.duration_minutes):
            return DisplayStatus.FINISHED
        if webinar.status == WebinarStatus.DRAFT:
            return DisplayStatus.DRAFT
        if webinar.capacity is not None and taken >= webinar.capacity:
            return DisplayStatus.SOLD_OUT
        return DisplayStatus.ON_SALE

    def _editable(self, webinar: Webinar) -> None:
        if webinar.status == WebinarStatus.CANCELLED:
            raise InvalidInput(N_("This webinar is cancelled and can no longer be changed."))

    async def edit(
        self, org_id: int, webinar_id: int, field: WebinarField, value: Any
    ) -> EditOutcome:
        """Set one field (already parsed with :meth:`parse`) and apply what follows from it."""
        webinar = await self.get(org_id, webinar_id, lock=True)
        self._editable(webinar)
        tickets = len(await self.repo.active_tickets(webinar.id))
        to_notify = 0
        if field == WebinarField.TITLE:
            webinar.title = value
        elif field == WebinarField.DESCRIPTION:
            webinar.description = value
        elif field == WebinarField.DURATION:
            webinar.duration_minutes = value
        elif field == WebinarField.PRICE:
            org = await self._org(org_id)
            webinar.price_minor, webinar.currency = value, org.currency
        elif field == WebinarField.STARS:
            webinar.price_stars = value
        elif field == WebinarField.SEATS:
            if value is not None and value < tickets:
                raise InvalidInput(
                    N_("Seats already sold: {sold}. The webinar needs at least that many."),
                    sold=tickets,
                )
            webinar.capacity = value
        elif field == WebinarField.REMINDERS:
            webinar.reminder_offsets = list(value)
        elif field == WebinarField.START:
            if value != webinar.starts_at:
                previous, webinar.starts_at = webinar.starts_at, value
                await self._replan(webinar, previous_start=previous)
        elif field in ACCESS_FIELDS:
            if webinar.access_mode != AccessMode.PASSWORD:
                raise InvalidInput(N_("This webinar does not use a room link and password."))
            old = (webinar.room_url, webinar.room_password)
            if field == WebinarField.ROOM_URL:
                webinar.room_url = value
            else:
                webinar.room_password = value
            if (webinar.room_url, webinar.room_password) != old:
                to_notify = tickets
        if field == WebinarField.REMINDERS and tickets:
            await self._replan(webinar, previous_start=webinar.starts_at)
        webinar.updated_at = self.clock.now()
        await self.session.commit()
        return EditOutcome(webinar, to_notify)

    async def _replan(self, webinar: Webinar, *, previous_start: datetime) -> None:
        """Reminders planned for the old time are told apart by the version and planned anew
        (participants hear about a moved start from the reminders service)."""
        webinar.schedule_version += 1
        await self.session.flush()
        await self.reminders.replan_webinar(webinar, previous_start=previous_start)

    async def _org(self, org_id: int) -> Organization:
        org = await self.session.get(Organization, org_id)
        if org is None:
            raise NotAvailable
        return org

    async def check_access_change(self, org_id: int, webinar_id: int) -> Webinar:
        """Refuse up front, before the organizer types a new room link for nothing."""
        webinar = await self.get(org_id, webinar_id)
        self._editable(webinar)
        if await self.repo.active_tickets(webinar.id):
            raise InvalidInput(
                N_("Participants already have access: the access mode can no longer change.")
            )
        return webinar

    async def set_access(
        self,
        org_id: int,
        webinar_id: int,
        mode: AccessMode,
        *,
        room_url: str | None = None,
        room_password: str | None = None,
        group_chat_id: int | None = None,
        link_template: str | None = None,
    ) -> Webinar:
        """Switch the access mode; only before anyone holds a ticket, whose access would break.

        The webinar's row is taken ``FOR UPDATE`` before the tickets are counted: a payment
        issuing a ticket holds it ``FOR KEY SHARE``, which an update of the row alone would not
        wait for, so the count would miss the ticket of a payment in flight.
        """
        webinar = await self.get(org_id, webinar_id, lock=True)
        self._editable(webinar)
        if mode != webinar.access_mode and await self.repo.active_tickets(webinar.id):
            raise InvalidInput(
                N_("Participants already have access: the access mode can no longer change.")
            )
        if mode == AccessMode.TEMPLATE and link_template is not None:
            link_template = parse_link_template(link_template)  # never store an unchecked one
        _check_access(mode, room_url, group_chat_id, link_template)
        old_group = webinar.group_chat_id if webinar.access_mode == AccessMode.GROUP else None
        webinar.access_mode = mode
        webinar.room_url = room_url if mode == AccessMode.PASSWORD else None
        webinar.room_password = room_password if mode == AccessMode.PASSWORD else None
        webinar.group_chat_id = group_chat_id if mode == AccessMode.GROUP else None
        webinar.link_template = link_template if mode == AccessMode.TEMPLATE else None
        webinar.updated_at = self.clock.now()
        stale: list[str] = []
        moved = old_group is not None and webinar.group_chat_id not in (None, old_group)
        if moved:
            # Ticket holders' invites point at the old group: new ones, and they are told.
            stale = await self.access.move_group(webinar, await self._org(org_id))
        await self.session.commit()
        if moved and old_group is not None:
            await self.access.revoke_invites(old_group, stale)
        return webinar

    async def check_group(self, chat_ref: int | str, organizer_id: int) -> GroupCheck:
        """A group or channel the bot can admit payers to, and that the organizer runs.

        The second check is what keeps organizations apart: the bot is admin of many groups, and
        only someone who administers a group may sell access to it.
        """
        bot = self.app.bot
        if bot is None:  # pragma: no cover - the running bot always sets it
            raise InvalidInput(N_("I can't check the group right now. Try again in a minute."))
        try:
            chat = await bot.get_chat(chat_ref)
            if chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP, ChatType.CHANNEL):
                raise InvalidInput(N_("This is not a group or a channel."))
            me = await bot.get_chat_member(chat.id, bot.id)
            organizer = await bot.get_chat_member(chat.id, organizer_id)
        except TelegramAPIError:
            log.info("group %s could not be checked", chat_ref, exc_info=True)
            raise InvalidInput(
                N_(
                    "I can't see this group. Add me to it as an administrator, then send its "
                    "@username or id again."
                )
            ) from None
        if not isinstance(me, ChatMemberAdministrator):
            raise InvalidInput(
                N_(
                    "I'm not an administrator there. Make me an admin who can invite users "
                    "and ban users."
                )
            )
        # Inviting admits payers; banning (then unbanning, so they may buy again) removes a
        # refunded participant. Without either right, access would be sold but not kept.
        if not me.can_invite_users and not me.can_restrict_members:
            raise InvalidInput(
                N_(
                    "I need two admin rights there: to invite users via links, and to ban users "
                    "(I remove refunded participants). Turn them on and try again."
                )
            )
        if not me.can_invite_users:
            raise InvalidInput(
                N_("I need the admin right to invite users via links. Turn it on and try again.")
            )
        if not me.can_restrict_members:
            raise InvalidInput(
                N_(
                    "I need the admin right to ban users: I remove refunded participants from "
                    "the group (and let them back if they buy again). Turn it on and try again."
                )
            )
        if organizer.status not in (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR):
            raise InvalidInput(
                N_(
                    "Only an administrator of this group can sell access to it, "
                    "and you are not one."
                )
            )
        return GroupCheck(chat_id=chat.id, title=chat.title or str(chat.id))

    async def publish(self, org_id: int, webinar_id: int) -> Webinar:
        """Put a draft on sale once it can really be sold and attended."""
        webinar = await self.get(org_id, webinar_id, lock=True)
        self._editable(webinar)
        org = await self._org(org_id)
        if webinar.starts_at <= self.clock.now():
            raise InvalidInput(N_("This webinar has already started: move its start time first."))
        _check_access(
            webinar.access_mode, webinar.room_url, webinar.group_chat_id, webinar.link_template
        )
        if not webinar.is_free and not _can_pay(webinar, org):
            raise InvalidInput(
                N_(
                    "Nobody could pay for it: turn on Stars in /org for the Stars price, "
                    "or Stripe or YooKassa for the card price."
                )
            )
        webinar.status = WebinarStatus.PUBLISHED
        webinar.updated_at = self.clock.now()
        await self.session.commit()
        return webinar

    async def unpublish(self, org_id: int, webinar_id: int) -> Webinar:
        """Stop selling; tickets already sold stay valid."""
        webinar = await self.get(org_id, webinar_id, lock=True)
        self._editable(webinar)
        webinar.status = WebinarStatus.DRAFT
        webinar.updated_at = self.clock.now()
        await self.session.commit()
        return webinar

    async def cancel(self, org_id: int, webinar_id: int, requested_by: int) -> CancelOutcome:
        """Cancel for good: stop sales, drop planned messages, queue every refund, in one
        transaction under the webinar's lock (see :mod:`bot.services.purchases`): a payment
        either bought its ticket before this snapshot, or finds the webinar cancelled and is
        refunded automatically. The refund worker pays everyone back and tells each participant.
        """
        webinar = await self.get(org_id, webinar_id, lock=True)
        self._editable(webinar)
        org = await self._org(org_id)
        now = self.clock.now()
        webinar.status = WebinarStatus.CANCELLED
        webinar.cancelled_at = now
        webinar.updated_at = now
        # Reminders, "new start time" notices, access and broadcasts all go: what each
        # participant hears now is the cancellation, with their refund.
        await self.reminders.drop_for_webinar(webinar)
        await OutboxRepository(self.session).drop_open(
            reason="webinar cancelled",
            kinds=(OutboxKind.ACCESS, OutboxKind.BROADCAST),
            webinar_id=webinar.id,
        )
        refunds = await self.refunds.cancel_webinar_tickets(webinar, org)
        await self.session.commit()
        log.info(
            "webinar %s cancelled by %s: %s refunds queued, %s free tickets withdrawn",
            webinar.id,
            requested_by,
            refunds.queued,
            refunds.withdrawn,
        )
        self.app.wake.refunds()
        self.app.wake.outbox()
        return CancelOutcome(
            webinar=webinar, tickets=refunds.queued + refunds.withdrawn, refunds=refunds
        )

    async def resend_access(self, org_id: int, webinar_id: int) -> int:
        """Send the current access again to every participant; a repeated press sends nothing."""
        webinar = await self.get(org_id, webinar_id)
        self._editable(webinar)
        # The version is the moment of the last change: one delivery per ticket per change.
        version = int((webinar.updated_at or webinar.created_at).timestamp())
        outbox = self.outbox
        planned = 0
        for ticket in await self.repo.active_tickets(webinar.id):
            planned += await outbox.enqueue(
                OutboxKind.ACCESS,
                dedupe_key=f"access:{ticket.id}:v{version}",
                chat_id=ticket.user_id,
                ticket_id=ticket.id,
                webinar_id=webinar.id,
                org_id=org_id,
            )
        await self.session.commit()
        return planned


_CLOSED = (DisplayStatus.FINISHED, DisplayStatus.CANCELLED)


def _check_access(
    mode: AccessMode,
    room_url: str | None,
    group_chat_id: int | None,
    link_template: str | None = None,
) -> None:
    if mode == AccessMode.TEMPLATE and not link_template:
        raise InvalidInput(N_("Set the link template first: participants' links are made from it."))
    if mode == AccessMode.PASSWORD and not room_url:
        raise InvalidInput(N_("Set the room link first: participants need it to join."))
    if mode == AccessMode.GROUP and group_chat_id is None:
        raise InvalidInput(N_("Connect the Telegram group first: participants join through it."))


def _can_pay(webinar: Webinar, org: Organization) -> bool:
    stars = bool(webinar.price_stars) and org.accept_stars
    card = bool(webinar.price_minor) and (org.accept_stripe or org.accept_yookassa)
    return stars or card
