"""The running bot: engine, migrations, Bot, Dispatcher, scheduler, polling or webhook.

``python -m bot``, ``python -m bot demo``, the tests and the benchmarks all start it the same way.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import Clock
from bot.commands import set_commands
from bot.context import AppContext
from bot.factory import (
    create_app_context,
    create_bot,
    create_dispatcher,
    create_fsm_storage,
    create_sender,
)
from bot.i18n import Translator
from bot.jobs import create_scheduler
from bot.ops_routes import add_ops_routes
from bot.services.dispatcher import OutboxDispatcher
from bot.settings import Settings, require_token
from storage.migrate import upgrade

log = logging.getLogger(__name__)


class BotApplication:
    """Owns everything the bot builds, and closes it all in :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        translator: Translator | None = None,
        run_scheduler: bool = True,
        migrate: bool = True,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.settings = settings
        self.token = require_token(settings)
        self._clock = clock
        self._translator = translator
        self.run_scheduler = run_scheduler
        self.migrate = migrate
        self._shared_engine = engine
        self.app: AppContext
        self.engine: AsyncEngine
        self.bot: Bot
        self.dispatcher: Dispatcher
        self.scheduler: AsyncIOScheduler | None = None
        self._polling: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    async def setup(self) -> None:
        """Build everything and migrate; does not start receiving updates."""
        self.app, self.engine = create_app_context(
            self.settings,
            clock=self._clock,
            translator=self._translator,
            engine=self._shared_engine,
        )
        if self.migrate:
            await upgrade(self.engine)
        self.bot = create_bot(self.settings, self.token)
        me = await self.bot.get_me()
        self.app.bot = self.bot
        self.app.bot_username = me.username or self.app.bot_username
        self.app.dispatcher = OutboxDispatcher(
            self.app,
            create_sender(self.settings, self.bot),
            batch_size=self.settings.outbox_batch_size,
        )
        self.dispatcher = create_dispatcher(self.app, create_fsm_storage(self.settings))
        with self.app.translator.context():
            await set_commands(self.bot)
        if self.run_scheduler:
            self.scheduler = create_scheduler(self.app)
            self.scheduler.start()
        log.info("webinarpass is up as @%s", self.app.bot_username)

    async def start_polling(self) -> None:
        """Poll in a background task (tests, demo); :meth:`stop` ends it."""
        await self.bot.delete_webhook(drop_pending_updates=False)
        self._polling = asyncio.create_task(
            self.dispatcher.start_polling(
                self.bot, handle_signals=False, close_bot_session=False, polling_timeout=10
            )
        )
        # Wait until the dispatcher is really polling, so no update sent right after is missed.
        for _ in range(200):
            if self.dispatcher._running_lock.locked():
                break
            await asyncio.sleep(0.01)

    async def run_polling(self) -> None:
        """Poll in the foreground until interrupted (``python -m bot``)."""
        await self.bot.delete_webhook(drop_pending_updates=False)
        await self.dispatcher.start_polling(self.bot, close_bot_session=False)

    async def start_webhook(self) -> web.AppRunner:
        """Serve Telegram's webhook pushes on WEBHOOK_HOST:WEBHOOK_PORT and register the URL."""
        settings = self.settings
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        web_app = web.Application()
        SimpleRequestHandler(
            dispatcher=self.dispatcher, bot=self.bot, secret_token=secret
        ).register(web_app, path=settings.webhook_path)
        setup_application(web_app, self.dispatcher, bot=self.bot)
        add_ops_routes(web_app, self.app, self.engine)
        self._runner = web.AppRunner(web_app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.webhook_host, settings.webhook_port)
        await site.start()
        url = settings.webhook_url or ""
        if not url.endswith(settings.webhook_path):
            url = url.rstrip("/") + settings.webhook_path
        await self.bot.set_webhook(url, secret_token=secret, drop_pending_updates=False)
        return self._runner

    async def stop(self) -> None:
        if self._polling is not None:
            with suppress(RuntimeError):
                await self.dispatcher.stop_polling()
            with suppress(asyncio.CancelledError):
                await self._polling
            self._polling = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self.app.dispatcher is not None:
            await self.app.dispatcher.idle()
            await self.app.dispatcher.sender.budget.close()
        await self.dispatcher.storage.close()
        await self.bot.session.close()
        if self._shared_engine is None:
            await self.engine.dispose()
