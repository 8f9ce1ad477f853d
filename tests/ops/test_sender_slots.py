"""The outbox's calls take the intake's update slots: after their pace wait, for the call alone,
an access message with a payment's priority (``PacedSender._in_slot``)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.context import AppContext
from bot.priority import Priority, PrioritySlots
from bot.services import Services
from bot.services.dispatcher import OutboxDispatcher
from bot.services.outbox import Outgoing
from tests.factories import make_org, make_webinar
from tests.reminders.conftest import FakeBot, fast_sender, make_ticket, retry_after


class AskedSlots(PrioritySlots):
    """Real slots that remember the priority of every request."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self.asked: list[Priority] = []

    async def acquire(self, priority: int) -> None:
        self.asked.append(Priority(priority))
        await super().acquire(priority)


async def test_a_send_waits_for_a_free_slot_and_gives_it_back() -> None:
    bot = FakeBot()
    slots = PrioritySlots(1)
    await slots.acquire(Priority.OTHER)  # an update being handled holds the only slot
    sender = fast_sender(bot)
    sender.slots = slots
    sending = asyncio.create_task(sender.send(7, Outgoing(text="hello")))
    await asyncio.sleep(0.05)
    assert bot.sent == []
    assert slots.waiting == 1
    slots.release()  # the update is done
    await sending
    assert [item.text for item in bot.sent] == ["hello"]
    assert slots.in_use == 0


async def test_the_pace_and_a_429_pause_hold_no_slot() -> None:
    bot = FakeBot()
    slots = PrioritySlots(4)
    sender = fast_sender(bot, chat_interval_s=0.3)
    sender.slots = slots
    await sender.send(7, Outgoing(text="first"))
    paced = asyncio.create_task(sender.send(7, Outgoing(text="second")))  # its pace: 0.3 s
    await asyncio.sleep(0.1)
    assert not paced.done()
    assert slots.in_use == 0
    await paced

    bot.script[8] = [retry_after(1)]
    paused = asyncio.create_task(sender.send(8, Outgoing(text="after the pause")))
    await asyncio.sleep(0.3)
    assert bot.calls == 3  # the 429 came back: the sender waits out Telegram's second
    assert not paused.done()
    assert slots.in_use == 0
    await paused
    assert [item.text for item in bot.sent] == ["first", "second", "after the pause"]


async def test_a_paid_buyers_access_message_goes_before_other_waiting_work() -> None:
    bot = FakeBot()
    slots = PrioritySlots(1)
    await slots.acquire(Priority.OTHER)
    sender = fast_sender(bot)
    sender.slots = slots
    reminder = asyncio.create_task(sender.send(8, Outgoing(text="reminder")))
    await asyncio.sleep(0.02)
    access = asyncio.create_task(sender.send(9, Outgoing(text="access"), priority=Priority.PAYMENT))
    await asyncio.sleep(0.02)
    slots.release()
    await asyncio.gather(reminder, access)
    assert [item.text for item in bot.sent] == ["access", "reminder"]


async def test_the_dispatcher_asks_with_the_rows_priority(
    session: AsyncSession, app_context: AppContext
) -> None:
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org)
    ticket = await make_ticket(session, webinar, 2001)
    services = Services(session, app_context)
    await services.outbox.repo.enqueue_many(
        [services.access.access_row(ticket, webinar, paid=True)], now=app_context.clock.now()
    )
    await services.outbox.notice(dedupe_key="n:2001", chat_id=2001, text="hello")
    await session.commit()
    bot = FakeBot()
    sender = fast_sender(bot)
    sender.slots = slots = AskedSlots(4)
    stats = await OutboxDispatcher(app_context, sender).run_until_idle()
    assert stats.sent == 2
    assert sorted(slots.asked) == [Priority.PAYMENT, Priority.OTHER]
    assert slots.in_use == 0
    assert any("Payment received" in (item.caption or "") for item in bot.sent)


async def test_the_running_bot_shares_its_update_slots_with_the_outbox(
    bot_app: BotApplication,
) -> None:
    assert bot_app.outbox.sender.slots is bot_app.intake.slots
