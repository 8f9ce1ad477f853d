"""Broadcasts at service level: one delivery per paid participant, progress, one final report."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import OutboxDispatcher
from storage.enums import BroadcastStatus, OutboxKind, TicketStatus
from storage.models import Broadcast, OutboxMessage
from tests.factories import make_org, make_webinar
from tests.reminders.conftest import FakeBot, make_ticket

OWNER = 1000


async def _draft(session: AsyncSession, app: AppContext, participants: int = 3, **draft):
    org = await make_org(session, OWNER, language="pt_BR")
    webinar = await make_webinar(session, org, title="Vendas <2026>")
    tickets = [await make_ticket(session, webinar, 4000 + i) for i in range(participants)]
    await make_ticket(session, webinar, 4999, status=TicketStatus.REFUNDED)
    await session.commit()
    services = Services(session, app)
    broadcast = await services.broadcasts.create_draft(
        webinar, OWNER, **({"text": "Hello &amp; welcome"} | draft)
    )
    return services, webinar, tickets, broadcast


async def test_a_broadcast_reaches_each_paid_participant_once_and_reports_once(
    session: AsyncSession,
    app_context: AppContext,
    fake_bot: FakeBot,
    dispatcher: OutboxDispatcher,
) -> None:
    services, webinar, tickets, broadcast = await _draft(session, app_context)
    fake_bot.blocked.add(tickets[2].user_id)
    total = await services.broadcasts.start(
        webinar.org_id, broadcast.id, progress_chat_id=OWNER, progress_message_id=77
    )
    assert total == 3  # the refunded ticket is not a paid participant
    again = await services.broadcasts.start(
        webinar.org_id, broadcast.id, progress_chat_id=OWNER, progress_message_id=77
    )
    assert again is None  # a second press plans nothing
    await dispatcher.run_until_idle()
    received = fake_bot.by_chat()
    for ticket in tickets[:2]:
        (message,) = received[ticket.user_id]
        assert message.text == "📣 <b>Vendas &lt;2026&gt;</b>\n\nHello &amp; welcome"
    (report,) = received[OWNER]  # in the organizer's language, not the organization's
    assert "delivered to 2 of 3 participants" in (report.text or "")
    assert "1 participant has blocked the bot" in (report.text or "")
    assert fake_bot.edits[-1][:2] == (OWNER, 77)
    assert "Blocked the bot: 1" in fake_bot.edits[-1][2]
    counts = await services.broadcasts.counts(broadcast.id)
    assert (counts.sent, counts.blocked, counts.failed, counts.pending) == (2, 1, 0, 0)
    done = await session.scalar(select(Broadcast).execution_options(populate_existing=True))
    assert done is not None
    assert done.status == BroadcastStatus.DONE
    await session.commit()
    assert (await dispatcher.run_until_idle()).claimed == 0


async def test_a_refund_during_the_fan_out_skips_that_participant(
    session: AsyncSession,
    app_context: AppContext,
    fake_bot: FakeBot,
    dispatcher: OutboxDispatcher,
) -> None:
    services, webinar, tickets, broadcast = await _draft(
        session, app_context, text=None, photo_file_id="photo-1"
    )
    await services.broadcasts.start(
        webinar.org_id, broadcast.id, progress_chat_id=OWNER, progress_message_id=5
    )
    tickets[0].status = TicketStatus.REFUNDED
    await services.reminders.drop_for_ticket(tickets[0])
    await session.commit()
    stats = await dispatcher.run_until_idle()
    assert stats.by_kind[OutboxKind.BROADCAST] == 2
    photos = [sent for sent in fake_bot.sent if sent.photo == "photo-1"]
    assert sorted(sent.chat_id for sent in photos) == [t.user_id for t in tickets[1:]]
    assert photos[0].caption == "📣 <b>Vendas &lt;2026&gt;</b>\n\n"
    report = fake_bot.by_chat()[OWNER][0].text or ""
    assert "1 participant was skipped" in report


async def test_a_discarded_draft_sends_nothing(
    session: AsyncSession, app_context: AppContext, dispatcher: OutboxDispatcher
) -> None:
    services, webinar, _tickets, broadcast = await _draft(session, app_context)
    assert await services.broadcasts.discard(webinar.org_id, broadcast.id)
    assert not await services.broadcasts.discard(webinar.org_id, broadcast.id)
    started = await services.broadcasts.start(
        webinar.org_id, broadcast.id, progress_chat_id=OWNER, progress_message_id=1
    )
    assert started is None
    assert list(await session.scalars(select(OutboxMessage))) == []


async def test_another_organization_cannot_touch_the_broadcast(
    session: AsyncSession, app_context: AppContext
) -> None:
    services, webinar, _tickets, broadcast = await _draft(session, app_context)
    other = await make_org(session, 1001, name="Other")
    await session.commit()
    assert await services.broadcasts.get(other.id, broadcast.id) is None
    started = await services.broadcasts.start(
        other.id, broadcast.id, progress_chat_id=1001, progress_message_id=1
    )
    assert started is None
    assert await services.broadcasts.choice(other.id, webinar.id) is None
