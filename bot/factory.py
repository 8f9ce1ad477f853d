"""Factories: nothing here runs at import time, and everything built here is closed on shutdown."""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import Clock, SystemClock
from bot.context import AppContext
from bot.i18n import Translator
from bot.inline_filters import resolve_pure_filters_inline
from bot.intake import IntakeErrorMiddleware
from bot.metrics import UpdateMetricsMiddleware
from bot.middlewares import (
    DatabaseMiddleware,
    EndTransactionMiddleware,
    LateCallbackAnswerMiddleware,
    LogContextMiddleware,
    UserMiddleware,
)
from bot.services.send_budget import LocalBudget, RedisBudget, SendBudget
from bot.services.sender import PacedSender
from bot.settings import Settings
from bot.telegram_session import BotSession
from payments.base import PaymentMethod
from payments.registry import RefunderRegistry
from storage.database import create_engine, create_session_factory

# Every message is HTML (texts escape what users typed) and shows no link preview.
BOT_DEFAULTS = DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True)


def create_bot(settings: Settings, token: str) -> Bot:
    session = (
        BotSession()
        if settings.uses_official_api
        else BotSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    )
    session.middleware(EndTransactionMiddleware())
    session.middleware(LateCallbackAnswerMiddleware())
    return Bot(
        token=token,
        session=session,
        default=BOT_DEFAULTS,
    )


def create_refunders(settings: Settings, bot: Bot | None) -> RefunderRegistry:
    """One refunder per payment method this deployment can refund, built once, closed on stop.

    A method left out answers ``not_configured`` (the refund is then recorded as failed and
    people are told), never an exception. The card SDKs are imported only when configured.
    """
    registry = RefunderRegistry()
    if bot is not None:
        from payments.stars import StarsRefunder

        registry.register(PaymentMethod.STARS, StarsRefunder(bot))
    if settings.stripe_api_key is not None:
        from payments.stripe_refunds import StripeRefunder

        registry.register(
            PaymentMethod.STRIPE,
            StripeRefunder(settings.stripe_api_key.get_secret_value(), settings.stripe_api_base),
        )
    if settings.yookassa_shop_id and settings.yookassa_secret_key is not None:
        from payments.yookassa_refunds import YooKassaRefunder

        registry.register(
            PaymentMethod.YOOKASSA,
            YooKassaRefunder(
                settings.yookassa_shop_id,
                settings.yookassa_secret_key.get_secret_value(),
                settings.yookassa_api_url,
            ),
        )
    return registry


def create_send_budget(settings: Settings, bot_id: int) -> SendBudget:
    """Telegram's send limits: shared by every replica through Redis, else this process's own."""
    if settings.redis_url:
        return RedisBudget.from_url(
            settings.redis_url,
            bot_id=bot_id,
            rate_per_s=settings.send_rate_per_s,
            chat_interval_s=1.0 / settings.send_rate_per_chat_s,
        )
    return LocalBudget(settings.send_rate_per_s, 1.0 / settings.send_rate_per_chat_s)


def create_sender(settings: Settings, bot: Bot) -> PacedSender:
    return PacedSender(bot, budget=create_send_budget(settings, bot.id))


def create_fsm_storage(settings: Settings) -> BaseStorage:
    """Wizard state: in memory for one process, in Redis when replicas share the work."""
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis_url)
    return MemoryStorage()


def create_dispatcher(app: AppContext, storage: BaseStorage | None = None) -> Dispatcher:
    from handlers import get_routers
    from handlers.errors import on_error
    from handlers.participant import stores_its_user

    dispatcher = Dispatcher(storage=storage or MemoryStorage(), app=app)
    # Updates come from the intake (bot/intake.py), which stores them first, de-duplicates them
    # and bounds how many are handled at once, urgent first.
    dispatcher.update.outer_middleware(IntakeErrorMiddleware())
    dispatcher.update.outer_middleware(UpdateMetricsMiddleware())
    dispatcher.update.outer_middleware(LogContextMiddleware())
    dispatcher.update.outer_middleware(DatabaseMiddleware(app))
    dispatcher.update.outer_middleware(UserMiddleware(app, stored_by_handler=stores_its_user))
    dispatcher.include_routers(*get_routers())
    resolve_pure_filters_inline(dispatcher)
    dispatcher.errors.register(on_error)
    return dispatcher


def create_app_context(
    settings: Settings,
    *,
    clock: Clock | None = None,
    translator: Translator | None = None,
    engine: AsyncEngine | None = None,
    refunders: RefunderRegistry | None = None,
) -> tuple[AppContext, AsyncEngine]:
    """Build the shared context and return it with the engine (the caller disposes of it)."""
    engine = engine or create_engine(settings.database_url)
    app = AppContext(
        settings=settings,
        clock=clock or SystemClock(),
        translator=translator or Translator(),
        session_factory=create_session_factory(engine),
        refunders=refunders or RefunderRegistry(),
    )
    return app, engine
