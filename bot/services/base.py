from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext


class Service:
    """Base for services: one session, the shared app context, the injected clock."""

    def __init__(self, session: AsyncSession, app: AppContext) -> None:
        self.session = session
        self.app = app

    @property
    def clock(self):
        return self.app.clock

    @property
    def settings(self):
        return self.app.settings
