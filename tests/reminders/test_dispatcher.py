"""The outbox dispatcher and the paced sender: once, in order, through errors and crashes."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import SendMessage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import (
    BACKOFF_SECONDS,
    MAX_ATTEMPTS,
    SQLITE_CLAIM_INTERVAL_S,
    OutboxDispatcher,
)
from bot.services.outbox import Outgoing
from bot.services.send_budget import LocalBudget
from storage.database import create_engine, create_session_factory
from storage.enums import OutboxKind, OutboxStatus, TicketStatus
from storage.models import OutboxMessage, Ticket, User
from storage.repositories.outbox import Claim, OutboxRepository
from tests.factories import make_org, make_user, make_webinar
from tests.reminders.conftest import (
    FakeBot,
    fast_sender,
    make_ticket,
    network_error,
    retry_after,
)


async def _notices(session: AsyncSession, app: AppContext, chats: range) -> None:
    services = Services(session, app)
    for chat_id in chats:
        await make_user(session, chat_id)
        await services.outbox.notice(
            dedupe_key=f"n:{chat_id}", chat_id=chat_id, text=f"hi {chat_id}"
        )
    await session.commit()


async def _statuses(session: AsyncSession) -> dict[int, OutboxStatus]:
    rows = await session.execute(select(OutboxMessage.chat_id, OutboxMessage.status))
    statuses = dict(rows.all())
    await session.rollback()  # SQLite has one connection: give it back to the dispatcher
    return statuses


def _once_each(bot: FakeBot, chats: range) -> None:
    counts = {chat_id: len(items) for chat_id, items in bot.by_chat().items()}
    assert counts == dict.fromkeys(chats, 1)


async def test_a_batch_is_bounded_whatever_is_planned(
    session: AsyncSession, app_context: AppContext, fake_bot: FakeBot
) -> None:
    await _notices(session, app_context, range(1, 121))
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot), batch_size=50)
    assert (await dispatcher.run_once()).claimed == 50
    assert (await dispatcher.run_until_idle()).sent == 70
    _once_each(fake_bot, range(1, 121))


async def test_a_429_is_waited_out_and_the_same_message_sent_again(
    session: AsyncSession, app_context: AppContext, fake_bot: FakeBot, dispatcher: OutboxDispatcher
) -> None:
    await _notices(session, app_context, range(1, 4))
    fake_bot.script[2] = [retry_after(1), retry_after(1)]
    started = time.monotonic()
    stats = await dispatcher.run_until_idle()
    assert time.monotonic() - started >= 1.9  # two pauses of retry_after=1
    assert stats.sent == 3
    assert dispatcher.sender.stats.retry_after == 2
    _once_each(fake_bot, range(1, 4))


async def test_a_403_marks_the_participant_unreachable(
    session: AsyncSession, app_context: AppContext, fake_bot: FakeBot, dispatcher: OutboxDispatcher
) -> None:
    await _notices(session, app_context, range(1, 3))
    fake_bot.blocked.add(2)
    stats = await dispatcher.run_until_idle()
    assert (stats.sent, stats.blocked) == (1, 1)
    assert (await _statuses(session))[2] == OutboxStatus.BLOCKED
    user = await session.get(User, 2, populate_existing=True)
    assert user is not None
    assert user.blocked_at is not None


async def test_a_bad_request_is_recorded_at_once(
    session: AsyncSession, app_context: AppContext, fake_bot: FakeBot, dispatcher: OutboxDispatcher
) -> None:
    await _notices(session, app_context, range(1, 2))
    method = SendMessage(chat_id=1, text="")
    fake_bot.script[1] = [TelegramBadRequest(method, "Bad Request: can't parse entities")]
    stats = await dispatcher.run_until_idle()
    assert stats.failed == 1
    row = await session.scalar(select(OutboxMessage).execution_options(populate_existing=True))
    assert row is not None
    assert row.status == OutboxStatus.FAILED
    assert "can't parse entities" in (row.last_error or "")


async def test_other_errors_are_retried_with_backoff_then_recorded(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    fake_bot: FakeBot,
    dispatcher: OutboxDispatcher,
) -> None:
    await _notices(session, app_context, range(1, 3))
    fake_bot.script[1] = [network_error(), network_error()]
    fake_bot.script[2] = [network_error() for _ in range(MAX_ATTEMPTS)]
    stats = await dispatcher.run_until_idle()
    assert (stats.sent, stats.retried) == (0, 2)
    assert (await dispatcher.run_until_idle()).claimed == 0  # not before the backoff
    for delay in BACKOFF_SECONDS:
        clock.advance(seconds=delay)
        await dispatcher.run_until_idle()
    statuses = await _statuses(session)
    assert statuses == {1: OutboxStatus.SENT, 2: OutboxStatus.FAILED}
    assert len(fake_bot.sent) == 1


async def test_a_crash_in_the_middle_of_a_fan_out_resumes_without_duplicates(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    chats = range(1, 31)
    await _notices(session, app_context, chats)
    # The process dies after 5 messages went out: its next sends never come back.
    crashed_bot = FakeBot(stall_after=5)
    first = OutboxDispatcher(app_context, fast_sender(crashed_bot), batch_size=10)
    crashing = asyncio.create_task(first.run_until_idle())
    await asyncio.wait_for(crashed_bot.stalled.wait(), 5)
    await asyncio.sleep(0.05)
    crashing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashing
    statuses = await _statuses(session)
    assert list(statuses.values()).count(OutboxStatus.SENDING) == 5  # claimed, leased, unsent

    restarted_bot = FakeBot()
    restarted = OutboxDispatcher(app_context, fast_sender(restarted_bot), batch_size=10)
    assert (await restarted.run_until_idle()).sent == 20  # what nobody had claimed
    clock.advance(restarted.lease + timedelta(seconds=1))
    assert (await restarted.run_until_idle()).sent == 5  # the dead worker's rows, after its lease
    combined = FakeBot(sent=crashed_bot.sent + restarted_bot.sent)
    _once_each(combined, chats)


async def test_a_live_worker_keeps_its_rows_through_a_long_wait(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    chats = range(1, 6)
    await _notices(session, app_context, chats)
    slow_bot = FakeBot(gate=asyncio.Event())  # a long 429 pause, as far as the rows can tell
    slow = OutboxDispatcher(app_context, fast_sender(slow_bot), renew_every_s=0.02)
    working = asyncio.create_task(slow.run_until_idle())
    await asyncio.sleep(0.05)
    other_bot = FakeBot()
    other = OutboxDispatcher(app_context, fast_sender(other_bot))
    for _ in range(3):
        clock.advance(slow.lease)  # the lease would have expired without renewal
        await asyncio.sleep(0.1)  # the keeper renews it
        assert (await other.run_once()).claimed == 0
    slow_bot.gate.set()
    assert (await working).sent == 5
    _once_each(slow_bot, chats)
    assert other_bot.sent == []


async def test_a_worker_that_lost_its_lease_cannot_mark_the_row(
    session: AsyncSession, app_context: AppContext, clock: FakeClock, dispatcher: OutboxDispatcher
) -> None:
    await _notices(session, app_context, range(1, 2))
    (stale,) = await dispatcher.claim()
    clock.advance(dispatcher.lease + timedelta(seconds=1))
    (fresh,) = await dispatcher.claim()
    assert fresh.attempts == stale.attempts + 1
    repo = OutboxRepository(session)
    assert not await repo.settle(stale, status=OutboxStatus.FAILED)
    assert await repo.renew([stale], lease_until=clock.now()) == set()
    assert await repo.settle(fresh, status=OutboxStatus.SENT)
    await session.commit()


async def test_two_dispatchers_on_two_engines_send_each_message_once(
    session: AsyncSession, app_context: AppContext, database_url: str
) -> None:
    chats = range(1, 201)
    await _notices(session, app_context, chats)
    await session.close()
    second_engine = create_engine(database_url)
    try:
        second_app = AppContext(
            settings=app_context.settings,
            clock=app_context.clock,
            translator=app_context.translator,
            session_factory=create_session_factory(second_engine),
        )
        bot_a, bot_b = FakeBot(), FakeBot()
        a = OutboxDispatcher(app_context, fast_sender(bot_a), batch_size=20)
        b = OutboxDispatcher(second_app, fast_sender(bot_b), batch_size=20)
        stats_a, stats_b = await asyncio.gather(a.run_until_idle(), b.run_until_idle())
    finally:
        await second_engine.dispose()
    assert stats_a.sent + stats_b.sent == 200
    assert stats_a.sent > 0  # both did part of the work
    assert stats_b.sent > 0
    _once_each(FakeBot(sent=bot_a.sent + bot_b.sent), chats)


async def test_each_chat_gets_at_most_one_message_per_interval() -> None:
    bot = FakeBot()
    sender = fast_sender(bot, chat_interval_s=0.1)
    stamps: list[float] = []

    async def send(chat_id: int) -> None:
        await sender.send(chat_id, Outgoing(text="x"))
        stamps.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(send(7) for _ in range(4)), *(send(chat) for chat in range(100, 110)))
    assert len(bot.sent) == 14
    assert time.monotonic() - started >= 0.3  # four to one chat: three intervals
    assert [item.chat_id for item in bot.sent].count(7) == 4


async def test_kicks_in_quick_succession_are_claimed_together(
    session: AsyncSession, app_context: AppContext, fake_bot: FakeBot
) -> None:
    """While kicks keep coming, a kicked drain claims at most once per ``claim_interval_s``:
    the rows of the kicks meanwhile come in one claim, and every one of them is sent."""
    dispatcher = OutboxDispatcher(
        app_context, fast_sender(fake_bot), batch_size=50, claim_interval_s=0.3
    )
    claims: list[int] = []
    claim = dispatcher.claim

    async def counted() -> list[Claim]:
        claimed = await claim()
        claims.append(len(claimed))
        return claimed

    dispatcher.claim = counted  # type: ignore[method-assign]
    started = time.monotonic()
    await _notices(session, app_context, range(1, 2))
    dispatcher.kick()
    await dispatcher.idle()  # the first kick claims at once
    assert claims == [1]
    for chat_id in range(2, 5):  # three payments' rows, say, each committed and kicked
        await _notices(session, app_context, range(chat_id, chat_id + 1))
        dispatcher.kick()
        await asyncio.sleep(0.02)  # time enough for a drain that did not wait to claim it
    await dispatcher.idle()
    assert claims == [1, 3]  # one claim for the three, once the interval was over
    assert time.monotonic() - started >= 0.3
    _once_each(fake_bot, range(1, 5))


async def test_the_claim_interval_is_sqlites_only(
    bot_app: BotApplication, engine: AsyncEngine
) -> None:
    """On SQLite a claim is a write transaction of its own, worth gathering; on PostgreSQL it
    is one statement, and the bursts of deliveries would only cost pre-checkout latency."""
    sqlite = engine.dialect.name == "sqlite"
    assert bot_app.outbox.claim_interval_s == (SQLITE_CLAIM_INTERVAL_S if sqlite else 0)


async def test_the_kind_of_each_sent_row_is_counted(
    session: AsyncSession, app_context: AppContext, dispatcher: OutboxDispatcher
) -> None:
    await _notices(session, app_context, range(1, 3))
    stats = await dispatcher.run_until_idle()
    assert stats.by_kind == {OutboxKind.NOTICE: 2}


async def _dies_in_flight(app_context: AppContext, *, stall_after: int) -> FakeBot:
    """A dispatcher whose process dies while its bot's send number ``stall_after`` (from 0) is in
    flight: that answer never comes back. Returns the bot, with what it got before."""
    bot = FakeBot(stall_after=stall_after)
    crashing = asyncio.create_task(OutboxDispatcher(app_context, fast_sender(bot)).run_until_idle())
    await asyncio.wait_for(bot.stalled.wait(), 5)
    crashing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashing
    return bot


async def test_an_access_message_cut_by_a_crash_between_its_parts_resumes_after_the_text(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    """An access too long for a caption goes as its text, then the calendar file. A retry after
    a crash between the two sends the file alone, even if the access would fit in a caption by
    then (the organizer shortened it; or the text was sent by a version that always split)."""
    org = await make_org(session, 1000)
    webinar = await make_webinar(
        session, org, room_url="https://meet.example.org/room/" + "r" * 1000
    )
    ticket = await make_ticket(session, webinar, 2000)
    await Services(session, app_context).access.enqueue(ticket, webinar)
    await session.commit()
    # The process dies once the text went out: the calendar file's send never comes back.
    crashed_bot = await _dies_in_flight(app_context, stall_after=1)
    webinar.room_url = "https://meet.example.org/room/42"
    await session.commit()

    restarted_bot = FakeBot()
    restarted = OutboxDispatcher(app_context, fast_sender(restarted_bot))
    clock.advance(restarted.lease + timedelta(seconds=1))
    assert (await restarted.run_until_idle()).sent == 1
    [text] = crashed_bot.sent
    [calendar] = restarted_bot.sent
    assert text.text is not None
    assert "s3cret" in text.text
    assert calendar.document is not None
    assert calendar.caption == "Add the webinar to your calendar."
    delivered = await session.scalar(
        select(Ticket.access_delivered_at).where(Ticket.id == ticket.id)
    )
    assert delivered is not None


async def test_an_access_message_in_flight_at_a_crash_is_sent_once_more_whole(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    """The usual access message is one message: a crash while it is in flight sends it again
    after the lease, whole (the one message in flight is the only possible duplicate)."""
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org)
    ticket = await make_ticket(session, webinar, 2000)
    await Services(session, app_context).access.enqueue(ticket, webinar)
    await session.commit()
    crashed_bot = await _dies_in_flight(app_context, stall_after=0)  # no answer comes back

    restarted_bot = FakeBot()
    restarted = OutboxDispatcher(app_context, fast_sender(restarted_bot))
    clock.advance(restarted.lease + timedelta(seconds=1))
    assert (await restarted.run_until_idle()).sent == 1
    assert crashed_bot.calls == 1
    [access] = restarted_bot.sent
    assert access.document is not None
    assert access.caption is not None
    assert "s3cret" in access.caption
    assert (await restarted.run_until_idle()).claimed == 0  # settled: never sent a third time


async def test_a_reminder_waiting_for_its_turn_is_not_sent_once_the_ticket_is_refunded(
    session: AsyncSession, app_context: AppContext, clock: FakeClock, fake_bot: FakeBot
) -> None:
    """Reminders are rendered before the pace wait: their ticket is read again after it."""
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org, starts_at=clock.now() + timedelta(days=3))
    ticket = await make_ticket(session, webinar, 2000)
    services = Services(session, app_context)
    await services.reminders.plan_for_ticket(ticket, webinar)
    await services.outbox.notice(dedupe_key="first", chat_id=2000, text="first")
    await session.commit()
    clock.set(webinar.starts_at - timedelta(days=1))
    sender = fast_sender(fake_bot, chat_interval_s=2.0)
    assert isinstance(sender.budget, LocalBudget)
    pacer = sender.budget.chats
    dispatcher = OutboxDispatcher(app_context, sender)
    run = asyncio.create_task(dispatcher.run_once())
    for _ in range(500):  # the notice went, then the reminder was rendered and took its turn
        if len(fake_bot.sent) == 1 and pacer._next_slot[2000] > time.monotonic() + 2.5:
            break
        await asyncio.sleep(0.01)
    ticket.status = TicketStatus.REFUNDED
    await session.commit()
    stats = await run
    assert [sent.text for sent in fake_bot.sent] == ["first"]
    assert (stats.sent, stats.dropped) == (1, 1)
    assert stats.drop_reasons == {"no longer wanted at the moment of sending": 1}


async def test_a_worker_whose_lease_ran_out_unrenewed_sends_nothing_more(
    session: AsyncSession, app_context: AppContext
) -> None:
    """Its keeper never renewed (a frozen process, say): past the lease another worker may hold
    the rows, so the second message, still waiting for the chat's pace, is not sent."""
    await make_user(session, 1)
    outbox = Services(session, app_context).outbox
    await outbox.notice(dedupe_key="a", chat_id=1, text="first")
    await outbox.notice(dedupe_key="b", chat_id=1, text="second")
    await session.commit()
    bot = FakeBot()
    dispatcher = OutboxDispatcher(
        app_context,
        fast_sender(bot, chat_interval_s=2.5),
        lease=timedelta(seconds=1),
        renew_every_s=60,
    )
    stats = await dispatcher.run_once()
    assert [sent.text for sent in bot.sent] == ["first"]
    assert (stats.sent, stats.lost) == (1, 1)
    rows = await session.execute(select(OutboxMessage.payload, OutboxMessage.status))
    assert {payload["text"]: status for payload, status in rows.all()} == {
        "first": OutboxStatus.SENT,
        "second": OutboxStatus.SENDING,  # claimed again by whoever comes once its lease is over
    }
