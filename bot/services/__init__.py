"""Use cases as plain async services. Each use case owns its transaction and commits once.

Handlers and jobs reach them through :class:`Services`, built around one session::

    services = Services(session, app)
    user = await services.users.touch(...)
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext

if TYPE_CHECKING:
    from bot.services.access import AccessService
    from bot.services.broadcasts import BroadcastService
    from bot.services.links import LinkService
    from bot.services.organizations import OrganizationService
    from bot.services.outbox import OutboxService
    from bot.services.participants import ParticipantService
    from bot.services.refunds import RefundService
    from bot.services.reminders import ReminderService
    from bot.services.sales import SalesService
    from bot.services.stats import StatsService
    from bot.services.users import UserService
    from bot.services.webinars import WebinarService


class Services:
    """Per-session access to every service; each is built on first use."""

    def __init__(self, session: AsyncSession, app: AppContext) -> None:
        self.session = session
        self.app = app

    @cached_property
    def users(self) -> UserService:
        from bot.services.users import UserService

        return UserService(self.session, self.app)

    @cached_property
    def organizations(self) -> OrganizationService:
        from bot.services.organizations import OrganizationService

        return OrganizationService(self.session, self.app)

    @cached_property
    def webinars(self) -> WebinarService:
        from bot.services.webinars import WebinarService

        return WebinarService(self.session, self.app)

    @cached_property
    def links(self) -> LinkService:
        from bot.services.links import LinkService

        return LinkService(self.session, self.app)

    @cached_property
    def participants(self) -> ParticipantService:
        from bot.services.participants import ParticipantService

        return ParticipantService(self.session, self.app)

    @cached_property
    def outbox(self) -> OutboxService:
        from bot.services.outbox import OutboxService

        return OutboxService(self.session, self.app)

    @cached_property
    def reminders(self) -> ReminderService:
        from bot.services.reminders import ReminderService

        return ReminderService(self.session, self.app)

    @cached_property
    def broadcasts(self) -> BroadcastService:
        from bot.services.broadcasts import BroadcastService

        return BroadcastService(self.session, self.app)

    @cached_property
    def sales(self) -> SalesService:
        from bot.services.sales import SalesService

        return SalesService(self.session, self.app)

    @cached_property
    def access(self) -> AccessService:
        from bot.services.access import AccessService

        return AccessService(self.session, self.app)

    @cached_property
    def refunds(self) -> RefundService:
        from bot.services.refunds import RefundService

        return RefundService(self.session, self.app)

    @cached_property
    def stats(self) -> StatsService:
        from bot.services.stats import StatsService

        return StatsService(self.session, self.app)
