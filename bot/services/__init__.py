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
    from bot.services.outbox import OutboxService
    from bot.services.reminders import ReminderService
    from bot.services.users import UserService


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
    def outbox(self) -> OutboxService:
        from bot.services.outbox import OutboxService

        return OutboxService(self.session, self.app)

    @cached_property
    def reminders(self) -> ReminderService:
        from bot.services.reminders import ReminderService

        return ReminderService(self.session, self.app)
