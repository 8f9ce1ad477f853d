"""The running bot: engine, migrations, Bot, Dispatcher, scheduler, polling or webhook.

``python -m bot``, ``python -m bot demo``, the tests and the benchmarks all start it the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import timedelta

import orjson
from aiogram import Bot, Dispatcher
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import Clock
from bot.commands import set_commands
from bot.context import AppContext, Wakeups
from bot.factory import (
    create_app_context,
    create_bot,
    create_dispatcher,
    create_fsm_storage,
    create_refunders,
    create_sender,
)
from bot.i18n import Translator
from bot.intake import Intake
from bot.jobs import create_scheduler
from bot.ops_routes import add_ops_routes
from bot.priority import prefer_replies
from bot.services import Services
from bot.services.dispatcher import SQLITE_CLAIM_INTERVAL_S, OutboxDispatcher
from bot.services.refund_worker import RefundWorker
from bot.services.sender import ReplyBudgetMiddleware
from bot.settings import Settings, require_token, require_webhook_secret
from payments.registry import RefunderRegistry
from storage.migrate import upgrade_if_behind

log = logging.getLogger(__name__)

# On SQLite every batch the intake stores is a write transaction of its own (its commit writes
# the WAL): asking for updates at most this often lets a rush's updates arrive three or four to
# a batch instead of one or two.
SQLITE_BATCH_WAIT_MS = 8.0


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
        refunders: RefunderRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.token = require_token(settings)
        self._clock = clock
        self._translator = translator
        self.run_scheduler = run_scheduler
        self.migrate = migrate
        self._shared_engine = engine
        self._given_refunders = refunders
        self.outbox: OutboxDispatcher
        self.refund_worker: RefundWorker
        self.app: AppContext
        self.engine: AsyncEngine
        self.bot: Bot
        self.dispatcher: Dispatcher
        self.scheduler: AsyncIOScheduler | None = None
        self.intake: Intake
        self._polling: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._webhook_secret = b""

    async def setup(self) -> None:
        """Build everything and migrate; does not start receiving updates."""
        self.app, self.engine = create_app_context(
            self.settings,
            clock=self._clock,
            translator=self._translator,
            engine=self._shared_engine,
        )
        if self.migrate:
            await upgrade_if_behind(self.engine)
        # Replies ahead of each turn's other work where statements are network round trips.
        prefer_replies(self.engine.dialect.name != "sqlite")
        self.bot = create_bot(self.settings, self.token)
        me = await self.bot.get_me()
        self.app.bot = self.bot
        self.app.bot_username = me.username or self.app.bot_username
        self.app.refunders = self._given_refunders or create_refunders(self.settings, self.bot)
        # The running parts, wired here and handed to whoever needs them.
        self.outbox = OutboxDispatcher(
            self.app,
            create_sender(self.settings, self.bot),
            batch_size=self.settings.outbox_batch_size,
            lease=timedelta(seconds=self.settings.outbox_lease_s),
            claim_interval_s=SQLITE_CLAIM_INTERVAL_S if self.engine.dialect.name == "sqlite" else 0,
        )
        # Replies count against Telegram's limits too: they draw from the outbox's budget.
        self.bot.session.middleware(ReplyBudgetMiddleware(self.outbox.sender.budget))
        self.refund_worker = RefundWorker(self.app)
        self.app.wake = Wakeups(outbox=self.outbox.kick, refunds=self.refund_worker.kick)
        async with self.app.session_factory() as session:
            Services(session, self.app).check_wiring()
        self.dispatcher = create_dispatcher(self.app, create_fsm_storage(self.settings))
        self.intake = Intake(
            self.app,
            self.dispatcher,
            self.bot,
            slots=self.settings.update_slots,
            lease_s=self.settings.intake_lease_s,
            max_attempts=self.settings.intake_max_attempts,
            batch_wait_s=self._batch_wait_s(),
        )
        # The outbox's calls take update slots too (``PacedSender._in_slot``).
        self.outbox.sender.slots = self.intake.slots
        with self.app.translator.context():
            await set_commands(self.bot)
        if self.run_scheduler:
            self.scheduler = create_scheduler(self.app)
            self.scheduler.start()
        log.info("webinarpass is up as @%s", self.app.bot_username)

    def _batch_wait_s(self) -> float:
        """Polling's shortest interval between two ``getUpdates`` while updates keep coming
        (``Intake.poll``): ``INTAKE_BATCH_WAIT_MS``, else 3 ms on SQLite and none on
        PostgreSQL, as measured (see the README's benchmarks)."""
        wait_ms = self.settings.intake_batch_wait_ms
        if wait_ms is None:
            wait_ms = SQLITE_BATCH_WAIT_MS if self.engine.dialect.name == "sqlite" else 0.0
        return wait_ms / 1000

    async def start_polling(self) -> None:
        """Poll in a background task (tests, demo, ``python -m bot``); :meth:`stop` ends it."""
        await self.bot.delete_webhook(drop_pending_updates=False)
        # Telegram lets one process poll a bot: rows a previous process held are ours now.
        await self.intake.start(take_over=True)
        if self.settings.ops_port is not None:
            await self._serve_ops()
        self._polling = self.intake.start_polling(
            timeout_s=10, allowed_updates=self.dispatcher.resolve_used_update_types()
        )

    async def _serve_ops(self) -> None:
        """``/healthz``, ``/readyz`` and ``/metrics`` on OPS_HOST:OPS_PORT, for polling mode."""
        web_app = web.Application()
        add_ops_routes(web_app, self.app, self.engine)
        self._runner = web.AppRunner(web_app, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.ops_host, self.settings.ops_port).start()

    async def run_polling(self) -> None:
        """Poll in the foreground until :meth:`stop` (from another task) ends it."""
        await self.start_polling()
        assert self._polling is not None
        await asyncio.shield(self._polling)

    async def start_webhook(self) -> web.AppRunner:
        """Serve Telegram's webhook pushes on WEBHOOK_HOST:WEBHOOK_PORT and register the URL.

        Refuses to start without a strong ``WEBHOOK_SECRET``: the webhook's URL is all a stranger
        would need to push forged updates (a fake payment, say) otherwise.
        """
        settings = self.settings
        secret = require_webhook_secret(settings)
        self._webhook_secret = secret.encode()
        web_app = web.Application()
        web_app.router.add_post(settings.webhook_path, self._on_webhook)
        add_ops_routes(web_app, self.app, self.engine)
        await self.intake.start()
        self._runner = web.AppRunner(web_app, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.webhook_host, settings.webhook_port)
        await site.start()
        url = settings.webhook_url or ""
        if not url.endswith(settings.webhook_path):
            url = url.rstrip("/") + settings.webhook_path
        await self.bot.set_webhook(
            url,
            secret_token=secret,
            allowed_updates=self.dispatcher.resolve_used_update_types(),
            drop_pending_updates=False,
        )
        return self._runner

    async def _on_webhook(self, request: web.Request) -> web.Response:
        """Store the update and commit, then answer 200; 500 if it could not be stored, so
        Telegram sends it again."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
        if not hmac.compare_digest(given, self._webhook_secret):
            log.warning("webhook call with a wrong secret token from %s refused", request.remote)
            return web.Response(status=401)
        if self.intake.stopping:
            return web.Response(status=503)  # shutting down: Telegram retries, another replica
        try:
            update = orjson.loads(await request.read())
            if not isinstance(update, dict):
                raise TypeError("an update is a JSON object")
        except (ValueError, TypeError):
            return web.Response(status=400)
        try:
            await self.intake.accept([update])
        except (KeyError, TypeError):
            return web.Response(status=400)
        except Exception:
            log.exception("could not store a webhook update; Telegram will send it again")
            return web.Response(status=500)
        return web.Response(status=200)

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stop receiving, finish the updates in hand within ``timeout_s``, release the rest,
        then close everything."""
        if self._runner is not None:
            # Stop listening; requests in flight finish storing (and are answered) first.
            await self._runner.cleanup()
            self._runner = None
        if hasattr(self, "intake"):
            await self.intake.stop(timeout_s)
        self._polling = None
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await self.outbox.idle()
        await self.outbox.sender.budget.close()
        await self.refund_worker.idle()
        self.app.wake = Wakeups()
        if self._given_refunders is None:
            await self.app.refunders.aclose()
        await self.dispatcher.storage.close()
        await self.bot.session.close()
        if self._shared_engine is None:
            await self.engine.dispose()
