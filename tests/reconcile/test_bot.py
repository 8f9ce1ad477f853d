"""``/reconcile`` end to end: the real bot polling the sandbox, a Stars payment whose update was
lost while the bot was down, the owners' command, the buyer's access message."""

from __future__ import annotations

from datetime import timedelta

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.context import AppContext
from bot.i18n import Translator
from bot.sandbox import SandboxServer
from bot.settings import Settings
from storage.enums import PaymentMethod, TicketStatus
from storage.models import Ticket
from tests.conftest import TEST_TOKEN
from tests.reconcile.conftest import OWNER_ID, SECOND_OWNER_ID, all_rows, lost_stars_payment
from tests.reconcile.test_service import ANN, CAT, held_order, shop


async def test_owners_reconcile_on_command_and_the_lost_buyer_gets_access(
    sandbox: SandboxServer,
    settings: Settings,
    clock: FakeClock,
    translator: Translator,
    engine: AsyncEngine,
    session: AsyncSession,
    app_context: AppContext,
) -> None:
    webinar = await shop(session, clock)
    # While the bot is down, Ann pays; her successful_payment never reaches the bot.
    ann = sandbox.user(ANN, "Ann")
    await ann.start()
    order = await held_order(app_context, ANN, webinar, PaymentMethod.STARS)
    raw = Bot(TEST_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
    try:
        await lost_stars_payment(raw, ann, order)
    finally:
        await raw.session.close()
    ann.drain()
    clock.advance(hours=2)

    application = BotApplication(
        settings.model_copy(update={"telegram_api_url": sandbox.url}),
        clock=clock,
        translator=translator,
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    await application.start_polling()
    try:
        second_owner = sandbox.user(SECOND_OWNER_ID, "Second", language_code="ru")
        await second_owner.start()
        await second_owner.next_message()  # the greeting

        stranger = sandbox.user(CAT, "Cat")
        await stranger.command("reconcile")
        refusal = await stranger.next_message()
        assert refusal.text == "This command is for the bot's owners."
        assert sandbox.calls_of("getStarTransactions") == []  # nothing was checked

        owner = sandbox.user(OWNER_ID, "Owner", language_code="en")
        await owner.command("reconcile", "999")
        usage = await owner.next_message()
        assert "from 1 to 90" in (usage.text or "")
        assert sandbox.calls_of("getStarTransactions") == []

        await owner.command("reconcile", "7")
        report = await owner.next_message(timeout=30)
        text = report.text or ""
        assert "Reconciliation with the payment providers" in text
        since = (clock.now() - timedelta(days=7)).strftime("%Y-%m-%d %H:%M")
        assert since in text
        assert (
            "<b>Telegram Stars</b>: checked 1, missing 1 (recorded: delivered 1, refunded 0), "
            "refunds recorded 0." in text
        )
        assert "<b>Stripe</b>: checked 0, missing 0" in text

        # Ann is served as if her payment had just arrived: the access message, in the
        # organization's language.
        access = await ann.next_message(timeout=10)
        assert "https://meet.example.org/room/42" in access.body  # the calendar file's caption
        [ticket] = await all_rows(session, Ticket)
        assert (ticket.user_id, ticket.status) == (ANN, TicketStatus.ACTIVE)
        # The other owner hears of it too, in Russian; the one who asked got the answer.
        told = await second_owner.next_message(timeout=10)
        assert "Сверка с платёжными провайдерами" in (told.text or "")
        await owner.expect_silence()

        # Asked again: the answer says everything matches, and nobody else is told.
        await owner.command("reconcile")
        again = await owner.next_message(timeout=30)
        assert "Everything matches" in (again.text or "")
        await second_owner.expect_silence()
    finally:
        await application.stop()
