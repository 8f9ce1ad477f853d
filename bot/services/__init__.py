"""Use cases as plain async services. Each use case owns its transaction and commits.

Handlers and jobs reach them through :class:`Services`, built around one session: the one place
where services are wired to each other, each given what it needs in its constructor, so a missing
piece fails when the bot starts (:meth:`Services.check_wiring`), not at refund time::

    services = Services(session, app)
    user = await services.users.touch(...)
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.services.access import AccessService
from bot.services.broadcasts import BroadcastService
from bot.services.feedback import FeedbackService
from bot.services.links import LinkService
from bot.services.organizations import OrganizationService
from bot.services.outbox import OutboxService
from bot.services.participants import ParticipantService
from bot.services.purchases import PurchaseService
from bot.services.reconcile import ReconcileService
from bot.services.recordings import RecordingService
from bot.services.refunds import RefundService
from bot.services.reminders import ReminderService
from bot.services.sales import SalesService
from bot.services.stats import StatsService
from bot.services.summaries import SummaryService
from bot.services.timezones import TimezoneService
from bot.services.users import UserService
from bot.services.webinars import WebinarService


class Services:
    """Per-session access to every service; each is built on first use."""

    def __init__(self, session: AsyncSession, app: AppContext) -> None:
        self.session = session
        self.app = app

    @cached_property
    def users(self) -> UserService:
        return UserService(self.session, self.app)

    @cached_property
    def outbox(self) -> OutboxService:
        return OutboxService(self.session, self.app)

    @cached_property
    def organizations(self) -> OrganizationService:
        return OrganizationService(self.session, self.app)

    @cached_property
    def reminders(self) -> ReminderService:
        return ReminderService(self.session, self.app)

    @cached_property
    def access(self) -> AccessService:
        return AccessService(self.session, self.app)

    @cached_property
    def refunds(self) -> RefundService:
        return RefundService(self.session, self.app, outbox=self.outbox, users=self.users)

    @cached_property
    def sales(self) -> SalesService:
        return SalesService(self.session, self.app, users=self.users)

    @cached_property
    def purchases(self) -> PurchaseService:
        return PurchaseService(
            self.session,
            self.app,
            sales=self.sales,
            access=self.access,
            reminders=self.reminders,
            refunds=self.refunds,
            outbox=self.outbox,
            users=self.users,
            recordings=self.recordings,
        )

    @cached_property
    def reconcile(self) -> ReconcileService:
        return ReconcileService(
            self.session,
            self.app,
            purchases=self.purchases,
            refunds=self.refunds,
            outbox=self.outbox,
        )

    @cached_property
    def recordings(self) -> RecordingService:
        return RecordingService(self.session, self.app, outbox=self.outbox)

    @cached_property
    def timezones(self) -> TimezoneService:
        return TimezoneService(self.session, self.app)

    @cached_property
    def webinars(self) -> WebinarService:
        return WebinarService(
            self.session,
            self.app,
            reminders=self.reminders,
            refunds=self.refunds,
            outbox=self.outbox,
            access=self.access,
        )

    @cached_property
    def links(self) -> LinkService:
        return LinkService(self.session, self.app, webinars=self.webinars, access=self.access)

    @cached_property
    def participants(self) -> ParticipantService:
        return ParticipantService(self.session, self.app, webinars=self.webinars)

    @cached_property
    def broadcasts(self) -> BroadcastService:
        return BroadcastService(self.session, self.app)

    @cached_property
    def stats(self) -> StatsService:
        return StatsService(self.session, self.app, webinars=self.webinars)

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.session, self.app, outbox=self.outbox)

    @cached_property
    def summaries(self) -> SummaryService:
        return SummaryService(
            self.session, self.app, outbox=self.outbox, stats=self.stats, users=self.users
        )

    def check_wiring(self) -> None:
        """Build every service once: a constructor missing a dependency fails here, at start."""
        for name, value in vars(type(self)).items():
            if isinstance(value, cached_property):
                getattr(self, name)
