"""Payments first: a bounded number of updates at a time, the most urgent started first.

Telegram waits 10 seconds for the answer to a ``pre_checkout_query``; after that the buyer's
payment fails. In a ticket rush hundreds of updates arrive at once, and handling them all
concurrently in arrival order makes each one as slow as the whole backlog: the checkout of the
buyer who is paying waits behind the webinar cards of everyone still looking.

The intake (``bot/intake.py``) hands every stored update, polled or pushed by a webhook, to
:class:`PrioritySlots`: at most ``slots`` updates are handled at once; when one finishes, the next
to start is the waiting pre-checkout query that arrived first, then a payment (money has moved:
the buyer waits for the access), then everything else in arrival order. Updates waiting for a
slot hold nothing: no database session, no lock. :class:`UpdatePriorityMiddleware` does the same
for a dispatcher fed directly.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class Priority(IntEnum):
    CHECKOUT = 0  # pre_checkout_query: Telegram's 10-second deadline
    PAYMENT = 1  # successful or refunded payment: the buyer waits for access or news
    OTHER = 2


def priority_of(update: Update) -> Priority:
    if update.pre_checkout_query is not None:
        return Priority.CHECKOUT
    message = update.message
    if message is not None and (
        message.successful_payment is not None or message.refunded_payment is not None
    ):
        return Priority.PAYMENT
    return Priority.OTHER


def priority_of_raw(update: dict[str, Any]) -> Priority:
    """:func:`priority_of` on an update's JSON, before any model is built."""
    if "pre_checkout_query" in update:
        return Priority.CHECKOUT
    message = update.get("message")
    if isinstance(message, dict) and (
        "successful_payment" in message or "refunded_payment" in message
    ):
        return Priority.PAYMENT
    return Priority.OTHER


class PrioritySlots:
    """A semaphore whose waiters are woken by priority, then in arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            msg = "at least one slot is needed"
            raise ValueError(msg)
        self.slots = slots
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiters if not future.done())

    async def acquire(self, priority: int) -> None:
        if self._free > 0:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as the waiter was cancelled
            raise

    def release(self) -> None:
        """Hand the slot to the most urgent waiter, or free it."""
        while self._waiters:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class UpdatePriorityMiddleware(BaseMiddleware):
    """Outer middleware on ``dp.update``: see the module doc."""

    def __init__(self, slots: int) -> None:
        self.slots = PrioritySlots(slots)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        priority = priority_of(event) if isinstance(event, Update) else Priority.OTHER
        await self.slots.acquire(priority)
        try:
            return await handler(event, data)
        finally:
            self.slots.release()
