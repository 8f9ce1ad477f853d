"""Reminders at service level: planned as rows, rendered when due, dropped when stale."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import OutboxDispatcher
from storage.enums import AccessMode, OutboxKind, OutboxStatus, TicketStatus, WebinarStatus
from storage.models import AccessLink, OutboxMessage
from tests.factories import NOW, add_links, make_org, make_webinar
from tests.reminders.conftest import FakeBot, fast_sender, make_ticket

START = NOW + timedelta(days=3)


async def _rows(
    session: AsyncSession, kind: OutboxKind = OutboxKind.REMINDER
) -> list[OutboxMessage]:
    return list(
        await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
            .execution_options(populate_existing=True)
        )
    )


async def _world(session: AsyncSession, app: AppContext, participants: int = 1, **webinar_fields):
    org = await make_org(session, 1000, **webinar_fields.pop("org", {}))
    webinar = await make_webinar(session, org, starts_at=START, **webinar_fields)
    services = Services(session, app)
    tickets = []
    for index in range(participants):
        ticket = await make_ticket(session, webinar, 2000 + index)
        await services.reminders.plan_for_ticket(ticket, webinar)
        tickets.append(ticket)
    await session.commit()
    return org, webinar, tickets


async def test_each_ticket_gets_a_reminder_per_offset_and_one_at_the_start(
    session: AsyncSession, app_context: AppContext
) -> None:
    _org, _webinar, tickets = await _world(session, app_context)
    rows = await _rows(session)
    assert [(row.payload["offset"], row.due_at) for row in rows] == [
        (1440, START - timedelta(days=1)),
        (60, START - timedelta(hours=1)),
        (10, START - timedelta(minutes=10)),
        (0, START),
    ]
    assert {row.chat_id for row in rows} == {tickets[0].user_id}
    # Planning again (a replayed payment) plans nothing twice.
    webinar = _webinar
    assert await Services(session, app_context).reminders.plan_for_ticket(tickets[0], webinar) == 0


async def test_a_late_buyer_skips_past_offsets_but_keeps_the_start_reminder(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    clock.set(START - timedelta(minutes=30))
    _org, _webinar, _tickets = await _world(session, app_context)
    rows = await _rows(session)
    assert [row.payload["offset"] for row in rows] == [10, 0]


async def test_reminders_go_out_once_each_at_their_moment_in_the_org_language(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    await _world(
        session,
        app_context,
        org={"language": "ru", "timezone": "Europe/Moscow"},
        title="Цены <для> основателей",
    )
    assert (await dispatcher.run_until_idle()).sent == 0
    clock.set(START - timedelta(days=1))
    assert (await dispatcher.run_until_idle()).sent == 1
    assert (await dispatcher.run_until_idle()).claimed == 0
    text = fake_bot.sent[0].text or ""
    assert "24 часа" in text
    assert "Цены &lt;для&gt; основателей" in text
    assert "(UTC+03:00)" in text  # 26 Nov 2026, 12:00 Moscow time
    assert "https://meet.example.org/room/42" in text
    assert "<code>s3cret</code>" in text
    for moment in (START - timedelta(hours=1), START - timedelta(minutes=10), START):
        clock.set(moment)
        assert (await dispatcher.run_until_idle()).sent == 1
    assert len(fake_bot.sent) == 4
    assert "начинается" in (fake_bot.sent[-1].text or "")
    assert all(row.status == OutboxStatus.SENT for row in await _rows(session))


async def test_a_link_webinar_reminds_each_participant_of_their_own_link(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    org = await make_org(session, 1000)
    webinar = await make_webinar(
        session, org, starts_at=START, access_mode=AccessMode.LINKS, reminder_offsets=[60]
    )
    links = await add_links(session, webinar, 2)
    services = Services(session, app_context)
    for index, link in enumerate(links):
        ticket = await make_ticket(session, webinar, 3000 + index)
        link.ticket_id = ticket.id
        await services.reminders.plan_for_ticket(ticket, webinar)
    await session.commit()
    clock.set(START - timedelta(hours=1))
    await dispatcher.run_until_idle()
    by_chat = fake_bot.by_chat()
    for index, link in enumerate(links):
        (sent,) = by_chat[3000 + index]
        assert link.url in (sent.text or "")
        assert links[1 - index].url not in (sent.text or "")
    revoked = await session.get(AccessLink, links[0].id)
    assert revoked is not None


async def test_after_downtime_only_the_latest_due_reminder_goes_and_past_ones_are_counted(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    await _world(session, app_context, participants=3)
    # Down from three days before until 30 minutes before the start.
    clock.set(START - timedelta(minutes=30))
    stats = await dispatcher.run_until_idle()
    assert stats.sent == 3  # the one-hour reminder, sent at once, saying how long is really left
    assert stats.dropped == 3  # the 24-hour reminders: superseded, not sent in a burst
    assert all("30 minutes" in (sent.text or "") for sent in fake_bot.sent)
    # Down again across the start: the 10-minute and start reminders are past.
    clock.set(START + timedelta(minutes=20))
    stats = await dispatcher.run_until_idle()
    assert stats.sent == 0
    assert stats.stale == 6
    assert stats.drop_reasons["past the start"] == 6
    statuses = [row.status for row in await _rows(session)]
    assert statuses.count(OutboxStatus.SENT) == 3
    assert statuses.count(OutboxStatus.DROPPED) == 9


async def test_a_start_reminder_a_little_late_still_goes(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    await _world(session, app_context, reminder_offsets=[])
    clock.set(START + timedelta(seconds=40))
    assert (await dispatcher.run_until_idle()).sent == 1
    assert "starting now" in (fake_bot.sent[0].text or "")


async def test_moving_the_start_replans_and_tells_each_participant_once(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    org, webinar, tickets = await _world(session, app_context, participants=2)
    clock.set(START - timedelta(days=1))
    assert (await dispatcher.run_until_idle()).sent == 2  # 24-hour reminders, old time
    new_start = START + timedelta(days=2, hours=3)
    previous = webinar.starts_at
    webinar.starts_at = new_start
    webinar.schedule_version += 1
    result = await Services(session, app_context).reminders.replan_webinar(
        webinar, previous_start=previous
    )
    await session.commit()
    assert (result.dropped, result.planned, result.notified) == (6, 8, 2)
    stats = await dispatcher.run_until_idle()
    assert stats.by_kind == {OutboxKind.NOTICE: 2}
    notices = fake_bot.sent[2:]
    assert all("new start time" in (sent.text or "") for sent in notices)
    assert all("Nov 28, 2026, 1:00\u202fPM (UTC+01:00)" in (sent.text or "") for sent in notices)
    # The old one-hour moment passes in silence; the new schedule reminds on time.
    clock.set(START - timedelta(hours=1))
    assert (await dispatcher.run_until_idle()).claimed == 0
    clock.set(new_start - timedelta(days=1))
    assert (await dispatcher.run_until_idle()).sent == 2
    assert {sent.chat_id for sent in fake_bot.sent[-2:]} == {ticket.user_id for ticket in tickets}
    assert org.language == "en"


async def test_changing_only_the_offsets_replans_without_a_notice(
    session: AsyncSession, app_context: AppContext, dispatcher: OutboxDispatcher
) -> None:
    _org, webinar, _tickets = await _world(session, app_context)
    webinar.reminder_offsets = [120]
    webinar.schedule_version += 1
    result = await Services(session, app_context).reminders.replan_webinar(webinar)
    await session.commit()
    assert (result.dropped, result.planned, result.notified) == (4, 2, 0)
    assert await _rows(session, OutboxKind.NOTICE) == []


async def test_moving_twice_sends_only_the_latest_time(
    session: AsyncSession,
    app_context: AppContext,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    _org, webinar, _tickets = await _world(session, app_context)
    services = Services(session, app_context)
    for hours in (1, 2):
        webinar.starts_at = START + timedelta(hours=hours)
        webinar.schedule_version += 1
        await services.reminders.replan_webinar(webinar)
        await session.commit()
    await dispatcher.run_until_idle()
    assert len(fake_bot.sent) == 1
    assert "12:00\u202fPM" in (fake_bot.sent[0].text or "")


async def test_cancel_and_refund_drop_unsent_reminders(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    _org, webinar, tickets = await _world(session, app_context, participants=2)
    services = Services(session, app_context)
    tickets[0].status = TicketStatus.REFUNDED
    assert await services.reminders.drop_for_ticket(tickets[0]) == 4
    await session.commit()
    clock.set(START - timedelta(days=1))
    assert (await dispatcher.run_until_idle()).sent == 1
    webinar.status = WebinarStatus.CANCELLED
    assert await services.reminders.drop_for_webinar(webinar) == 3
    await session.commit()
    clock.set(START)
    assert (await dispatcher.run_until_idle()).claimed == 0
    assert [sent.chat_id for sent in fake_bot.sent] == [tickets[1].user_id]


async def test_a_reminder_in_flight_is_dropped_if_the_ticket_was_refunded(
    session: AsyncSession,
    app_context: AppContext,
    clock: FakeClock,
    dispatcher: OutboxDispatcher,
    fake_bot: FakeBot,
) -> None:
    _org, _webinar, tickets = await _world(session, app_context)
    clock.set(START - timedelta(days=1))
    # Claimed (sending) when the refund lands: drop_open leaves it, the renderer drops it.
    claims = await dispatcher.claim()
    assert len(claims) == 1
    tickets[0].status = TicketStatus.REFUNDED
    await session.commit()
    clock.advance(minutes=3)  # the claim's lease expired: the row is taken again and checked
    stats = await dispatcher.run_until_idle()
    assert (stats.sent, stats.dropped) == (0, 1)
    assert fake_bot.sent == []


async def test_a_buyer_close_to_the_start_gets_every_reminder_after_the_purchase(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    """Paid 4 minutes before the start: the "2 minutes before" reminder still comes."""
    clock.set(START - timedelta(minutes=4))
    _org, _webinar, _tickets = await _world(session, app_context, reminder_offsets=[60, 2])
    rows = await _rows(session)
    assert [(row.payload["offset"], row.due_at) for row in rows] == [
        (2, START - timedelta(minutes=2)),
        (0, START),
    ]


async def test_a_reminder_due_within_a_minute_of_the_purchase_is_part_of_the_access_message(
    session: AsyncSession, app_context: AppContext, clock: FakeClock
) -> None:
    bought_at = START - timedelta(seconds=150)  # the "2 minutes before" reminder: in 30 s
    clock.set(bought_at)
    org = await make_org(session, 1000, language="it")
    webinar = await make_webinar(session, org, starts_at=START, reminder_offsets=[60, 2])
    ticket = await make_ticket(session, webinar, 2000, created_at=bought_at)
    services = Services(session, app_context)
    await services.reminders.plan_for_ticket(ticket, webinar)
    await services.access.enqueue(ticket, webinar)
    await session.commit()
    assert [row.payload["offset"] for row in await _rows(session)] == [0]
    [access] = await _rows(session, OutboxKind.ACCESS)
    [message] = await services.access.render(access)  # the calendar file, the access as caption
    assert message.caption is not None
    assert "3 minuti" in message.caption
    assert "promemoria" in message.caption  # told in the message, in the organization's language


async def test_an_access_message_waiting_for_its_turn_is_not_sent_once_the_ticket_is_refunded(
    session: AsyncSession, app_context: AppContext, fake_bot: FakeBot
) -> None:
    """The pace (or a 429 pause) can hold a rendered message for minutes: the ticket is checked
    again right before the message leaves."""
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org, starts_at=START)
    ticket = await make_ticket(session, webinar, 2000)
    services = Services(session, app_context)
    await services.outbox.notice(dedupe_key="first", chat_id=2000, text="first")
    await services.access.enqueue(ticket, webinar)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot, chat_interval_s=1.0))
    run = asyncio.create_task(dispatcher.run_once())
    for _ in range(500):  # the notice went; the access waits a second for its turn
        if fake_bot.sent:
            break
        await asyncio.sleep(0.01)
    ticket.status = TicketStatus.REFUNDED
    await session.commit()
    stats = await run
    assert [sent.text for sent in fake_bot.sent] == ["first"]
    assert (stats.sent, stats.dropped) == (1, 1)
    [access] = await _rows(session, OutboxKind.ACCESS)
    assert access.status == OutboxStatus.DROPPED
