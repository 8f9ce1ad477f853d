"""Organizations, their settings and their team: who organizes what, and with which role."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.i18n import LOCALES, N_
from bot.services.admin_input import (
    InvalidInput,
    NotAllowed,
    NotAvailable,
    parse_currency,
    parse_email,
    parse_org_name,
    parse_support,
    parse_terms,
    parse_timezone,
)
from bot.services.base import Service
from storage.enums import PaymentMethod, Role
from storage.models import Organization, OrgInvite, User
from storage.repositories.organizations import OrganizationRepository
from storage.repositories.users import UserRepository

INVITE_TTL = timedelta(hours=24)
# How long after a webinar's end participants are asked for a rating; None: never.
FEEDBACK_DELAYS: tuple[int | None, ...] = (60, 180, 1440, None)
# The hours of the organization's day the daily summary can come at (9:00 unless changed).
SUMMARY_HOURS: tuple[int, ...] = (7, 8, 9, 10, 12, 18, 21)
INVITE_PREFIX = "inv_"


@dataclass(frozen=True)
class Membership:
    """The organization a user is acting for right now, and their role in it."""

    org: Organization
    role: Role

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


@dataclass(frozen=True)
class OrgDraft:
    name: str
    contact_email: str
    language: str
    currency: str
    timezone: str


@dataclass(frozen=True)
class TeamMember:
    user: User
    role: Role


@dataclass(frozen=True)
class Removal:
    user: User
    still_organizer: bool  # belongs to another organization: keep their organizer menu


class OrgField(StrEnum):
    NAME = "name"
    EMAIL = "email"
    LANGUAGE = "language"
    CURRENCY = "currency"
    TIMEZONE = "timezone"
    TERMS = "terms"
    SUPPORT = "support"


class OrganizationService(Service):
    def __init__(self, session: AsyncSession, app: AppContext) -> None:
        super().__init__(session, app)
        self._current: dict[int, Membership | None] = {}

    @property
    def repo(self) -> OrganizationRepository:
        return OrganizationRepository(self.session)

    def can_create(self, user_id: int) -> bool:
        settings = self.settings
        return settings.open_registration or user_id in settings.bot_owner_ids

    def configured_methods(self) -> tuple[PaymentMethod, ...]:
        """Methods this deployment can take: Stars always, card providers once configured."""
        methods = [PaymentMethod.STARS]
        if self.settings.stripe_provider_token is not None:
            methods.append(PaymentMethod.STRIPE)
        if self.settings.yookassa_provider_token is not None:
            methods.append(PaymentMethod.YOOKASSA)
        return tuple(methods)

    async def create(self, user: User, draft: OrgDraft) -> Organization:
        """Create an organization owned by ``user`` and make it their active one."""
        if not self.can_create(user.id):
            raise NotAllowed(N_("Creating organizations is not open on this bot."))
        now = self.clock.now()
        org = await self.repo.add(
            Organization(
                name=parse_org_name(draft.name),
                contact_email=parse_email(draft.contact_email),
                language=self.check_language(draft.language),
                currency=parse_currency(draft.currency),
                timezone=parse_timezone(draft.timezone),
                accept_stars=True,
                accept_stripe=False,
                accept_yookassa=False,
                created_by=user.id,
                created_at=now,
            )
        )
        await self.repo.add_member(org.id, user.id, Role.OWNER, now)
        user.active_org_id = org.id
        await self.session.commit()
        self._forget(user.id)
        return org

    @staticmethod
    def check_language(locale: str) -> str:
        if locale not in LOCALES:
            raise InvalidInput(N_("Choose one of the languages on the buttons."))
        return locale

    async def current(self, user: User | None) -> Membership | None:
        """The organization ``user`` acts for, or None for a non-organizer.

        Asked by the organizer filter on every update that reaches the admin routers, so it is
        remembered for the rest of the update, and users who never organized cost no query.
        """
        if user is None or user.active_org_id is None:
            return None
        if user.id not in self._current:
            found = await self.repo.membership(user.id, user.active_org_id)
            self._current[user.id] = Membership(*found) if found else None
        return self._current[user.id]

    def _forget(self, user_id: int) -> None:
        self._current.pop(user_id, None)

    async def manages_ticket(self, user: User | None, ticket_id: int) -> bool:
        """Whether ``user`` organizes the organization that sold the ticket (any of theirs,
        not only the active one: a refund confirmation stays valid after a switch)."""
        if user is None:
            return False
        allowed = await self.repo.is_ticket_member(user.id, ticket_id)
        await self.session.commit()
        return allowed

    async def memberships(self, user_id: int) -> list[Membership]:
        return [Membership(org, role) for org, role in await self.repo.memberships(user_id)]

    async def switch(self, user: User, org_id: int) -> Membership:
        """Act for another organization the user belongs to."""
        found = await self.repo.membership(user.id, org_id)
        if found is None:
            raise NotAvailable
        user.active_org_id = org_id
        await self.session.commit()
        self._forget(user.id)
        return Membership(*found)

    async def update(self, membership: Membership, field: OrgField, raw: str) -> Organization:
        """Change one setting of the caller's organization from what they typed or chose."""
        org = membership.org
        if field == OrgField.NAME:
            org.name = parse_org_name(raw)
        elif field == OrgField.EMAIL:
            org.contact_email = parse_email(raw)
        elif field == OrgField.LANGUAGE:
            org.language = self.check_language(raw)
        elif field == OrgField.CURRENCY:
            org.currency = parse_currency(raw)
            if org.currency != "RUB" and org.accept_yookassa:
                # YooKassa takes roubles only: keeping it on would break every card checkout.
                org.accept_yookassa = False
        elif field == OrgField.TIMEZONE:
            org.timezone = parse_timezone(raw)
        elif field == OrgField.TERMS:
            org.terms_text = parse_terms(raw)
        elif field == OrgField.SUPPORT:
            org.support_contact = parse_support(raw)
        org.updated_at = self.clock.now()
        await self.session.commit()
        return org

    async def toggle_method(self, membership: Membership, method: PaymentMethod) -> Organization:
        """Switch a payment method on or off; only methods this deployment configured."""
        org = membership.org
        if method not in self.configured_methods():
            raise InvalidInput(N_("This payment method is not configured on this bot."))
        if method == PaymentMethod.STARS:
            org.accept_stars = not org.accept_stars
        elif method == PaymentMethod.STRIPE:
            org.accept_stripe = not org.accept_stripe
        else:
            if not org.accept_yookassa and org.currency != "RUB":
                raise InvalidInput(
                    N_("YooKassa accepts payments in roubles only: set the currency to RUB first.")
                )
            org.accept_yookassa = not org.accept_yookassa
        org.updated_at = self.clock.now()
        await self.session.commit()
        return org

    async def set_daily_summary(self, membership: Membership, raw: str) -> Organization:
        """The organizers' summary of yesterday: ``off``, or on from one of
        :data:`SUMMARY_HOURS` of the organization's day."""
        org = membership.org
        if raw == "off":
            org.daily_summary = False
        elif raw.isdigit() and int(raw) in SUMMARY_HOURS:
            org.daily_summary, org.summary_hour = True, int(raw)
        else:
            raise InvalidInput(N_("Choose one of the options on the buttons."))
        org.updated_at = self.clock.now()
        await self.session.commit()
        return org

    async def set_feedback_delay(self, membership: Membership, raw: str) -> Organization:
        """How long after a webinar's end participants are asked for a rating (or never)."""
        choices = {str(minutes) if minutes else "off": minutes for minutes in FEEDBACK_DELAYS}
        if raw not in choices:
            raise InvalidInput(N_("Choose one of the options on the buttons."))
        org = membership.org
        org.feedback_delay_minutes = choices[raw]
        org.updated_at = self.clock.now()
        await self.session.commit()
        return org

    async def team(self, org_id: int) -> list[TeamMember]:
        return [TeamMember(user, member.role) for member, user in await self.repo.members(org_id)]

    async def create_invite(self, membership: Membership, created_by: int) -> OrgInvite:
        """A one-time co-organizer invite that expires after a day."""
        now = self.clock.now()
        invite = await self.repo.add_invite(
            OrgInvite(
                org_id=membership.org.id,
                code=secrets.token_urlsafe(16),
                role=Role.ADMIN,
                created_by=created_by,
                expires_at=now + INVITE_TTL,
                created_at=now,
            )
        )
        await self.session.commit()
        return invite

    def invite_link(self, invite: OrgInvite) -> str:
        return f"https://t.me/{self.app.bot_username}?start={INVITE_PREFIX}{invite.code}"

    async def accept_invite(self, user: User, code: str) -> Membership:
        """Join the inviting organization; the invite is spent, whoever uses it."""
        now = self.clock.now()
        invite = await self.repo.invite_by_code(code)
        if invite is None:
            raise InvalidInput(N_("This invite link is not valid. Ask for a new one."))
        found = await self.repo.membership(user.id, invite.org_id)
        if found is not None:
            user.active_org_id = invite.org_id
            await self.session.commit()
            self._forget(user.id)
            raise InvalidInput(N_("You are already in this organization's team."))
        if invite.used_by is not None:
            raise InvalidInput(N_("This invite link has already been used. Ask for a new one."))
        if invite.expires_at <= now:
            raise InvalidInput(N_("This invite link has expired. Ask for a new one."))
        if not await self.repo.claim_invite(invite.id, user.id, now):
            await self.session.rollback()
            raise InvalidInput(N_("This invite link has already been used. Ask for a new one."))
        await self.repo.add_member(invite.org_id, user.id, invite.role, now)
        user.active_org_id = invite.org_id
        await self.session.commit()
        self._forget(user.id)
        org = await self.repo.get(invite.org_id)
        assert org is not None  # the invite row cascades with its organization
        return Membership(org, invite.role)

    async def remove_member(self, membership: Membership, user_id: int) -> Removal:
        """The owner removes a co-organizer; the owner cannot be removed."""
        if not membership.is_owner:
            raise NotAllowed(N_("Only the owner can remove team members."))
        found = await self.repo.membership(user_id, membership.org.id)
        if found is None:
            raise NotAvailable
        if found[1] == Role.OWNER:
            raise NotAllowed(N_("The owner cannot be removed."))
        return await self._drop(membership.org.id, user_id)

    async def leave(self, membership: Membership, user: User) -> Removal:
        """A co-organizer leaves the team; the owner stays (an organization needs one)."""
        if membership.is_owner:
            raise NotAllowed(N_("The owner cannot leave the organization."))
        return await self._drop(membership.org.id, user.id)

    async def _drop(self, org_id: int, user_id: int) -> Removal:
        await self.repo.remove_member(org_id, user_id)
        users = UserRepository(self.session)
        user = await users.get(user_id)
        assert user is not None  # a member row references an existing user
        remaining = await self.repo.memberships(user_id)
        if user.active_org_id == org_id or user.active_org_id is None:
            # Keep the invariant the organizer filter relies on: active org is one of theirs.
            user.active_org_id = remaining[0][0].id if remaining else None
        await self.session.commit()
        self._forget(user_id)
        return Removal(user=user, still_organizer=bool(remaining))
