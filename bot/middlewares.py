"""Outer middlewares on ``dp.update``: every update kind (payments and callbacks included) gets
one database session, the stored user, and the user's locale."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update
from aiogram.types import User as TelegramUser

from bot.context import AppContext
from bot.services import Services
from storage.repositories.users import ProcessedUpdateRepository

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
log = logging.getLogger(__name__)


class DatabaseMiddleware(BaseMiddleware):
    """One session per update; services commit, the session is closed when the update is done."""

    def __init__(self, app: AppContext) -> None:
        self.app = app

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        async with self.app.session_factory() as session:
            data["session"] = session
            data["services"] = Services(session, self.app)
            return await handler(event, data)


class DeduplicateMiddleware(BaseMiddleware):
    """Handle each update id once across webhook replicas (Telegram redelivers on slow answers)."""

    def __init__(self, app: AppContext) -> None:
        self.app = app

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if isinstance(event, Update):
            services: Services = data["services"]
            repo = ProcessedUpdateRepository(services.session)
            bot_id = data["bot"].id
            fresh = await repo.claim(bot_id, event.update_id, self.app.clock.now())
            await services.session.commit()
            if not fresh:
                log.info("update %s already handled, skipped", event.update_id)
                return None
        return await handler(event, data)


class UserMiddleware(BaseMiddleware):
    """Store the user behind the update and use their locale for organizer-facing replies."""

    def __init__(self, app: AppContext) -> None:
        self.app = app

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        telegram_user: TelegramUser | None = data.get("event_from_user")
        services: Services = data["services"]
        translator = self.app.translator
        user = None
        if telegram_user is not None and not telegram_user.is_bot:
            user = await services.users.touch(
                telegram_user.id,
                first_name=telegram_user.first_name,
                last_name=telegram_user.last_name,
                username=telegram_user.username,
                language_code=telegram_user.language_code,
                # "The bot was blocked" comes as an update from the user; it is no sign of life.
                reachable=not (isinstance(event, Update) and event.my_chat_member is not None),
            )
        data["user"] = user
        locale = services.users.locale_of(user)
        data["locale"] = locale
        with translator.context(), translator.use_locale(locale):
            return await handler(event, data)
