"""End to end: the real bot (Dispatcher, outbox, paced sender) against the sandbox Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.i18n import Translator
from bot.sandbox import RateLimit, SandboxServer
from bot.services import Services
from bot.settings import Settings
from storage.database import create_engine
from storage.enums import BroadcastStatus, OutboxStatus
from storage.models import Broadcast, OutboxMessage, User
from tests.conftest import OWNER_ID, TEST_TOKEN
from tests.factories import NOW, make_org, make_webinar
from tests.reminders.conftest import make_ticket

START = NOW + timedelta(days=2)


@asynccontextmanager
async def running_bot(
    server: SandboxServer,
    settings: Settings,
    clock: FakeClock,
    translator: Translator,
    engine: AsyncEngine,
    **overrides: object,
) -> AsyncIterator[BotApplication]:
    application = BotApplication(
        settings.model_copy(update={"telegram_api_url": server.url, **overrides}),
        clock=clock,
        translator=translator,
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    try:
        yield application
    finally:
        await application.stop()


async def _participants(
    session_factory: async_sessionmaker[AsyncSession],
    server: SandboxServer,
    count: int,
    *,
    offsets: list[int] | None = None,
) -> list[int]:
    ids = [7000 + index for index in range(count)]
    async with session_factory() as session:
        org = await make_org(session, OWNER_ID, language="es", timezone="America/Mexico_City")
        webinar = await make_webinar(
            session, org, starts_at=START, reminder_offsets=[60] if offsets is None else offsets
        )
        services = Services(session, _app_of(session_factory, server))
        for user_id in ids:
            ticket = await make_ticket(session, webinar, user_id, language_code="es")
            await services.reminders.plan_for_ticket(ticket, webinar)
            server.user(user_id, f"P{user_id}", language_code="es").started = True
        await session.commit()
    return ids


def _app_of(session_factory: async_sessionmaker[AsyncSession], server: SandboxServer):
    from bot.context import AppContext

    return AppContext(
        settings=Settings(_env_file=None),
        clock=FakeClock(),
        translator=Translator(),
        session_factory=session_factory,
    )


def _received(server: SandboxServer, ids: list[int]) -> dict[int, int]:
    return {user_id: len(server.messages(user_id)) for user_id in ids}


async def test_with_the_sandbox_enforcing_429s_every_reminder_arrives_once(
    settings: Settings,
    clock: FakeClock,
    translator: Translator,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    limit = RateLimit(global_per_s=20, global_burst=5, per_chat_per_s=1, per_chat_burst=1)
    async with SandboxServer(rate_limit=limit) as server:
        server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
        ids = await _participants(session_factory, server, 20)
        # The bot is configured faster than the server allows: the server answers 429s.
        async with running_bot(
            server, settings, clock, translator, engine, send_rate_per_s=80.0
        ) as application:
            clock.set(START - timedelta(hours=1))
            assert application.outbox is not None
            stats = await application.outbox.run_until_idle()
            sender = application.outbox.sender
        assert stats.sent == 20
        assert server.stats.rate_limited > 0
        assert sender.stats.retry_after == server.stats.rate_limited
        assert _received(server, ids) == dict.fromkeys(ids, 1)
        text = server.messages(ids[0])[0].text or ""
        assert "empieza en 60 minutos" in text or "empieza en 1 hora" in text
        assert "(UTC-06:00)" in text


async def test_two_bot_processes_on_one_database_send_each_reminder_once(
    settings: Settings,
    clock: FakeClock,
    translator: Translator,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    database_url: str,
) -> None:
    limit = RateLimit(global_per_s=1000, global_burst=100, per_chat_per_s=1, per_chat_burst=1)
    second_engine = create_engine(database_url)
    try:
        async with SandboxServer(rate_limit=limit, record_calls=False) as server:
            server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
            ids = await _participants(session_factory, server, 80, offsets=[1440, 60])
            fast = {"send_rate_per_s": 150.0}
            async with (
                running_bot(server, settings, clock, translator, engine, **fast) as first,
                running_bot(server, settings, clock, translator, second_engine, **fast) as second,
            ):
                a, b = first.outbox, second.outbox
                assert a is not None
                assert b is not None
                a.batch_size = b.batch_size = 15
                for moment in (START - timedelta(days=1), START - timedelta(hours=1), START):
                    clock.set(moment)
                    stats = await asyncio.gather(a.run_until_idle(), b.run_until_idle())
                    assert sum(item.sent for item in stats) == len(ids)
                    assert all(item.sent for item in stats)  # both processes took part
            assert _received(server, ids) == dict.fromkeys(ids, 3)
    finally:
        await second_engine.dispose()


async def test_an_organizer_broadcasts_to_paid_participants_and_sees_the_report(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        org = await make_org(session, OWNER_ID, language="it")
        webinar = await make_webinar(session, org, title="Prezzi & margini", starts_at=START)
        for user_id in (8001, 8002, 8003):
            await make_ticket(session, webinar, user_id)
        await session.commit()
        webinar_id = webinar.id
    for user_id in (8001, 8002, 8003):
        sandbox.user(user_id, f"P{user_id}").started = True
    sandbox.user(8003).block()
    owner = sandbox.user(OWNER_ID, "Olga", language_code="en")

    await owner.command("/broadcast")
    menu = await owner.next_message()
    assert any("Prezzi & margini" in text and "👥 3" in text for text in menu.button_texts)
    await owner.press(menu, callback_data=f"bcast:pick:{webinar_id}")
    prompt = await owner.next_message()
    assert "3 participants" in (prompt.text or "")
    await owner.send("Slides are <b>ready</b> & waiting")
    assert "Preview" in (await owner.next_message()).text
    preview = await owner.next_message()
    # What the organizer typed is their text, not markup: it is escaped, never interpreted.
    assert preview.text == (
        "📣 <b>Prezzi &amp; margini</b>\n\nSlides are &lt;b&gt;ready&lt;/b&gt; &amp; waiting"
    )
    confirm = await owner.next_message()
    assert "✅ Send to 3 participants" in confirm.button_texts

    async with session_factory() as session:
        draft = await session.scalar(select(Broadcast))
        assert draft is not None
        assert draft.status == BroadcastStatus.DRAFT
        broadcast_id = draft.id
    await owner.press(confirm, callback_data=f"bcast:send:{broadcast_id}")
    for user_id in (8001, 8002):
        received = await sandbox.user(user_id).next_message()
        assert received.text == preview.text
    report = await sandbox.wait_until(
        lambda: next((m for m in owner.messages if "finished" in (m.text or "")), None),
        timeout=10,
    )
    assert "delivered to 2 of 3 participants" in report.text
    assert "1 participant has blocked the bot" in report.text
    progress = next(m for m in owner.messages if m.message_id == confirm.message_id)
    assert "Sent: 2 of 3" in (progress.text or "")
    assert "Blocked the bot: 1" in (progress.text or "")
    assert "Done" in (progress.text or "")
    assert progress.button_texts == []  # nothing left to press twice
    async with session_factory() as session:
        blocked = await session.get(User, 8003)
        assert blocked is not None
        assert blocked.blocked_at is not None
        rows = list(await session.scalars(select(OutboxMessage.status)))
        assert sorted(rows).count(OutboxStatus.SENT) >= 2
        done = await session.get(Broadcast, broadcast_id)
        assert done is not None
        assert done.status == BroadcastStatus.DONE
    assert len(sandbox.messages(8001)) == 1


async def test_someone_who_organizes_nothing_cannot_broadcast(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    stranger = sandbox.user(8100, "Sam", language_code="en")
    await stranger.command("/broadcast")
    assert "Only organizers" in (await stranger.next_message()).text
