"""Payments first: a bounded number of updates at once, pre-checkout queries started first."""

from __future__ import annotations

import asyncio
import contextvars
import socket
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Message, PreCheckoutQuery, Update

from bot.priority import (
    Priority,
    PrioritySlots,
    UpdatePriorityMiddleware,
    UrgentFirstLoop,
    prefer_replies,
    priority_of,
    run,
)
from storage.pool import connection_priority

USER = {"id": 7, "is_bot": False, "first_name": "Buyer"}
CHAT = {"id": 7, "type": "private"}


def message_update(update_id: int, **extra: Any) -> Update:
    message = {"message_id": update_id, "date": 0, "chat": CHAT, "from": USER, **extra}
    return Update.model_validate({"update_id": update_id, "message": message})


def checkout_update(update_id: int) -> Update:
    query = {
        "id": str(update_id),
        "from": USER,
        "currency": "XTR",
        "total_amount": 1,
        "invoice_payload": "order",
    }
    return Update.model_validate({"update_id": update_id, "pre_checkout_query": query})


def payment_update(update_id: int) -> Update:
    payment = {
        "currency": "XTR",
        "total_amount": 1,
        "invoice_payload": "order",
        "telegram_payment_charge_id": f"charge-{update_id}",
        "provider_payment_charge_id": "",
    }
    return message_update(update_id, successful_payment=payment)


def test_priorities_of_update_kinds() -> None:
    assert priority_of(checkout_update(1)) == Priority.CHECKOUT
    assert priority_of(payment_update(2)) == Priority.PAYMENT
    assert priority_of(message_update(3, text="/start")) == Priority.OTHER


async def test_waiters_start_by_priority_then_arrival() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(Priority.OTHER)  # the one slot is busy
    started: list[str] = []

    async def wait(name: str, priority: Priority) -> None:
        await slots.acquire(priority)
        started.append(name)
        slots.release()

    names = [("card", Priority.OTHER), ("paid", Priority.PAYMENT), ("button", Priority.OTHER)]
    names += [("checkout 1", Priority.CHECKOUT), ("checkout 2", Priority.CHECKOUT)]
    tasks = [asyncio.create_task(wait(name, priority)) for name, priority in names]
    await asyncio.sleep(0)
    assert started == ["checkout 1", "checkout 2"]  # a checkout never waits for a slot
    assert slots.waiting == 3
    slots.release()
    await asyncio.gather(*tasks)
    assert started == ["checkout 1", "checkout 2", "paid", "card", "button"]
    assert slots.in_use == 0


async def test_a_cancelled_waiter_does_not_lose_the_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(Priority.OTHER)
    cancelled = asyncio.create_task(slots.acquire(Priority.PAYMENT))
    later = asyncio.create_task(slots.acquire(Priority.OTHER))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(later, timeout=1)  # the slot went to the waiter still there
    slots.release()
    await asyncio.wait_for(slots.acquire(Priority.OTHER), timeout=1)  # and came back


async def test_the_limit_falls_while_the_loop_lags_and_rises_while_updates_wait() -> None:
    """Lag samples are fed by hand: the controller's decisions, not the clock, are tested."""
    slots = PrioritySlots(32, adaptive=True, min_slots=2, target_lag_s=0.005)
    start = slots.limit
    for _ in range(5):
        slots.observe(0.050, busy=0.2)  # lagging, but the process mostly waits: others' CPU
    assert slots.limit == start
    for _ in range(5):
        slots.observe(0.050)  # a busy loop
    assert slots.limit < start
    for _ in range(50):
        slots.observe(0.050)
    assert slots.limit == 2  # never below the floor
    for _ in range(50):
        slots.observe(0.0)  # idle, but nobody waits: no reason to grow
    assert slots.limit == 2

    await slots.acquire(Priority.OTHER)
    await slots.acquire(Priority.OTHER)
    waiter = asyncio.create_task(slots.acquire(Priority.OTHER))
    await asyncio.sleep(0)
    assert slots.waiting == 1
    for _ in range(5):
        slots.observe(0.0)  # idle with an update waiting: one more slot, handed over at once
    await asyncio.wait_for(waiter, timeout=1)
    assert slots.limit == 3
    assert slots.in_use == 3
    backlog = [asyncio.create_task(slots.acquire(Priority.OTHER)) for _ in range(40)]
    await asyncio.sleep(0)
    for _ in range(500):
        slots.observe(0.0)
    assert slots.limit == 32  # never above UPDATE_SLOTS
    assert slots.in_use == 32
    for task in backlog:
        task.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)
    await slots.close()


async def test_a_checkout_starts_above_the_limit() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(Priority.OTHER)
    await asyncio.wait_for(slots.acquire(Priority.CHECKOUT), timeout=1)
    assert slots.in_use == 2
    waiter = asyncio.create_task(slots.acquire(Priority.OTHER))
    slots.release()
    await asyncio.sleep(0)
    assert not waiter.done()  # still one above the limit: the next one waits
    slots.release()
    await asyncio.wait_for(waiter, timeout=1)


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="slot"):
        PrioritySlots(0)


async def test_the_dispatcher_handles_a_checkout_before_a_backlog() -> None:
    """A real Dispatcher with one slot: updates fed together start payments first."""
    dispatcher = Dispatcher()
    dispatcher.update.outer_middleware(UpdatePriorityMiddleware(1))
    handled: list[str] = []

    @dispatcher.pre_checkout_query()
    async def on_checkout(query: PreCheckoutQuery) -> None:
        handled.append(f"checkout {query.id}")

    @dispatcher.message()
    async def on_message(message: Message) -> None:
        handled.append("payment" if message.successful_payment else f"message {message.text}")
        await asyncio.sleep(0)  # handlers yield, so the others queue up meanwhile

    bot = Bot("42:TEST")
    updates = [message_update(i, text=str(i)) for i in range(1, 4)]
    updates += [payment_update(10), checkout_update(11)]
    await asyncio.gather(*(dispatcher.feed_update(bot, update) for update in updates))
    assert handled == ["message 1", "checkout 11", "payment", "message 2", "message 3"]
    await bot.session.close()


def test_the_event_loop_runs_a_checkouts_callbacks_first() -> None:
    """A checkout's task is woken ahead of what already waits for the loop; the rest keep their
    order, and a task of no urgency is not moved."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, UrgentFirstLoop)
        order: list[str] = []
        futures = {name: loop.create_future() for name in ("card", "checkout", "payment")}

        async def wait(name: str) -> None:
            await futures[name]
            order.append(name)

        tasks = []
        for name, urgency in (
            ("card", Priority.OTHER),
            ("checkout", Priority.CHECKOUT),
            ("payment", Priority.PAYMENT),
        ):
            context = contextvars.copy_context()
            context.run(connection_priority.set, urgency)
            tasks.append(asyncio.create_task(wait(name), context=context))
        await asyncio.sleep(0)  # every task now waits on its future
        for index in range(3):
            loop.call_soon(order.append, f"ready-{index}")
        for future in futures.values():  # answered in this order: card first
            future.set_result(None)
        await asyncio.gather(*tasks)
        return order

    assert run(main()) == ["checkout", "ready-0", "ready-1", "ready-2", "card", "payment"]


def test_urgent_callbacks_keep_their_order_among_themselves() -> None:
    """asyncio relies on a future's done callbacks running in the order they were added: a
    socket connected in a checkout's context is cleaned up before its task goes on."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        order: list[object] = []
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def checkout() -> bytes:
            for index in range(3):
                loop.call_soon(order.append, index)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"seat\n")
            line = await reader.readline()
            writer.close()
            return line

        context = contextvars.copy_context()
        context.run(connection_priority.set, Priority.CHECKOUT)
        loop.call_soon(order.append, "other")
        order.append(await asyncio.create_task(checkout(), context=context))
        server.close()
        await server.wait_closed()
        return order

    assert run(main()) == [0, 1, 2, "other", b"seat\n"]


@pytest.mark.parametrize("replies_first", [False, True])
def test_a_reply_runs_ahead_of_the_turns_other_work_when_asked(replies_first: bool) -> None:
    """With ``prefer_replies`` (PostgreSQL), a socket's readiness runs right behind the urgent
    callbacks and ahead of the rest of the turn; without it, behind the whole turn."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        prefer_replies(replies_first)
        order: list[str] = []
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        replied = loop.create_future()

        def reply() -> None:
            order.append(ours.recv(16).decode())
            loop.remove_reader(ours.fileno())
            replied.set_result(None)

        try:
            loop.add_reader(ours.fileno(), reply)
            theirs.send(b"reply")
            context = contextvars.copy_context()
            context.run(connection_priority.set, Priority.CHECKOUT)
            loop.call_soon(order.append, "urgent", context=context)
            loop.call_soon(order.append, "other")
            await replied
            await asyncio.sleep(0)
        finally:
            ours.close()
            theirs.close()
        return order

    expected = ["urgent", "reply", "other"] if replies_first else ["urgent", "other", "reply"]
    assert run(main()) == expected
