"""What the application shares between updates and jobs, built once by the factories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.i18n import Translator
from bot.settings import Settings

if TYPE_CHECKING:
    from aiogram import Bot

    from bot.services.dispatcher import OutboxDispatcher


@dataclass
class AppContext:
    settings: Settings
    clock: Clock
    translator: Translator
    session_factory: async_sessionmaker[AsyncSession]
    bot: Bot | None = None
    bot_username: str = "webinarpass_bot"
    dispatcher: OutboxDispatcher | None = None
    extras: dict[str, Any] = field(default_factory=dict)
