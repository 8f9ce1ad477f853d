"""The paced sender's 429 loop is bounded: past its budget the row goes back to the outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiogram.exceptions import TelegramRetryAfter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import OutboxDispatcher
from bot.services.outbox import Outgoing
from storage.enums import OutboxStatus
from storage.models import OutboxMessage
from tests.factories import make_user
from tests.reminders.conftest import FakeBot, fast_sender, retry_after


async def test_a_message_gives_up_after_its_429_answers() -> None:
    bot = FakeBot()
    bot.script[7] = [retry_after(0) for _ in range(10)]
    sender = fast_sender(bot, max_429_attempts=3)
    with pytest.raises(TelegramRetryAfter):
        await sender.send(7, Outgoing(text="hello"))
    assert bot.calls == 3
    assert sender.stats.retry_after == 3
    assert sender.stats.gave_up == 1
    assert bot.sent == []


async def test_a_pause_longer_than_the_budget_is_not_waited() -> None:
    bot = FakeBot()
    bot.script[7] = [retry_after(3600)]
    sender = fast_sender(bot, max_429_wait_s=120)
    with pytest.raises(TelegramRetryAfter):
        await sender.send(7, Outgoing(text="hello"))  # raises at once: no hour of sleep
    assert bot.calls == 1
    assert sender.stats.gave_up == 1


async def test_within_the_budget_the_message_goes_out() -> None:
    bot = FakeBot()
    bot.script[7] = [retry_after(0), retry_after(0)]
    sender = fast_sender(bot, max_429_attempts=3)
    await sender.send(7, Outgoing(text="hello"))
    assert [item.text for item in bot.sent] == ["hello"]
    assert sender.stats.gave_up == 0


async def test_the_outbox_takes_the_row_back_due_after_the_pause(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    await make_user(session, 7)
    await Services(session, app_context).outbox.notice(dedupe_key="n:7", chat_id=7, text="hi")
    await session.commit()
    bot = FakeBot()
    bot.script[7] = [retry_after(900)]
    dispatcher = OutboxDispatcher(app_context, fast_sender(bot, max_429_wait_s=60))

    stats = await dispatcher.run_once()

    assert stats.retried == 1
    row = (await session.scalars(select(OutboxMessage))).one()
    status, due_at, last_error = row.status, row.due_at, row.last_error
    await session.rollback()  # SQLite has one connection: give it back to the dispatcher
    assert status == OutboxStatus.PENDING
    assert due_at >= clock.now() + timedelta(seconds=900)
    assert "TelegramRetryAfter" in (last_error or "")
    # The sender stays paused for Telegram's 900 s (real time); once they are over (app time
    # here, and a fresh sender standing for the same one later), the row goes out like any other.
    assert dispatcher.sender.budget.paused_until > 0  # type: ignore[attr-defined]
    clock.advance(timedelta(seconds=901))
    later = OutboxDispatcher(app_context, fast_sender(bot))
    assert (await later.run_until_idle()).sent == 1
    assert [item.text for item in bot.sent] == ["hi"]
