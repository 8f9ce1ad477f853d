"""Payments first: a bounded number of updates at a time, the most urgent started first.

Telegram waits 10 seconds for the answer to a ``pre_checkout_query``; after that the buyer's
payment fails. In a ticket rush hundreds of updates arrive at once, and handling them all
concurrently in arrival order makes each one as slow as the whole backlog: the checkout of the
buyer who is paying waits behind the webinar cards of everyone still looking.

The intake (``bot/intake.py``) hands every stored update, polled or pushed by a webhook, to
:class:`PrioritySlots`: at most ``limit`` updates are handled at once (adapted to the event loop's
load, up to ``UPDATE_SLOTS``); a pre-checkout query starts at once, whatever the limit; when an
update finishes, the next to start is a payment (money has moved: the buyer waits for the
access), then everything else in arrival order. Updates waiting for a
slot hold nothing: no database session, no lock. :class:`UpdatePriorityMiddleware` does the same
for a dispatcher fed directly. The outbox's calls to Telegram take the same slots, after their
pace wait (``PacedSender._in_slot``): an access message with a payment's priority.

The same urgency orders the database pool's waiters (``storage.pool``) and the event loop itself
(:class:`UrgentFirstLoop`): a checkout's task is woken ahead of every callback already waiting
for its turn of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from enum import IntEnum
from typing import Any, TypeVar

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from storage.pool import DEFAULT_PRIORITY, connection_priority

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
T = TypeVar("T")

# The share of wall time on the CPU above which this process counts as CPU-bound.
BUSY = 0.9


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


class UrgentFirstLoop(asyncio.SelectorEventLoop):
    """An event loop that runs a pre-checkout query's callbacks before everyone else's.

    Under load every ``await`` costs a turn of the loop: a task woken by its database row or
    its HTTP answer is queued behind every callback already ready, and a turn in a rush is
    several milliseconds of other updates' work. A checkout makes about eight such waits (its
    store, its statements, its answer), each a turn of other updates' work added to the
    buyer's wait, against Telegram's deadline of 10 seconds.

    Here a callback scheduled from, or for, a context whose :data:`connection_priority` is a
    checkout's (the intake sets it for the task handling the update, for the store of a batch
    holding one, and for the polling task that brings them in) goes to the front of the ready
    queue instead of its back: a checkout's task runs as soon as what it waited for is done.
    Everything else keeps its order. Socket
    readiness is still read once per turn; with :attr:`replies_first` (on PostgreSQL, see
    :func:`prefer_replies`) what it brings runs right behind the urgent callbacks, so a
    checkout's answer from the network no longer waits for the rest of the turn's work.
    """

    # Replies first (set by :func:`prefer_replies`): see :meth:`_process_events`.
    replies_first = False

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        handle = super().call_soon(callback, *args, context=context)
        if _urgent(handle._context):  # type: ignore[attr-defined]
            ready = self._ready  # type: ignore[attr-defined] - asyncio's own queue (3.11-3.13)
            if ready and ready[-1] is handle:
                # Behind the urgent callbacks already at the front: in their order, as asyncio
                # needs (a future's done callbacks run as they were added: the socket's own
                # clean-up before the task that awaited the connection goes on).
                ready.pop()
                position = 0
                while position < len(ready) and _urgent(ready[position]._context):
                    position += 1
                ready.insert(position, handle)
        return handle

    def _process_events(self, event_list: Any) -> None:
        """With :attr:`replies_first`, sockets' readiness (replies from PostgreSQL, from
        Telegram) goes right behind the urgent callbacks, ahead of the rest of the turn: the task
        a reply wakes (a checkout's first, by :meth:`call_soon`) then runs in this turn, not
        after a whole turn of other updates' work."""
        ready = self._ready  # type: ignore[attr-defined]
        before = len(ready)
        super()._process_events(event_list)  # type: ignore[misc]
        added = len(ready) - before
        if not self.replies_first or not added or not before:
            return
        position = 0
        while position < before and _urgent(ready[position]._context):
            position += 1
        if position == before:
            return  # only urgent callbacks were waiting: the replies follow them as they are
        replies = [ready.pop() for _ in range(added)]  # the last first: extendleft restores order
        ready.rotate(-position)  # the urgent ones to the back for a moment
        ready.extendleft(replies)
        ready.rotate(position)


def prefer_replies(on: bool) -> None:
    """Run sockets' readiness ahead of each turn's other work, if this is an
    :class:`UrgentFirstLoop` (``python -m bot``, the benchmarks). On PostgreSQL a checkout
    awaits about five replies (the poll's, its store's, its read's and hold's, its answer's),
    and each waited for a whole turn of other updates' work: over six alternated pairs of a
    1,000-buyer rush, pre-checkout p99 53.7 -> 41.0 ms (median), inside 50 ms in all six runs,
    for about 2% more CPU per update. On SQLite, whose statements are calls in this process, it
    only cost CPU (2.35, 2.42 -> 2.44, 2.49 ms), so it is off there (``bot.application``)."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, UrgentFirstLoop):
        loop.replies_first = on


def _urgent(context: Any) -> bool:
    return context.get(connection_priority, DEFAULT_PRIORITY) == Priority.CHECKOUT  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on an :class:`UrgentFirstLoop`."""
    with asyncio.Runner(loop_factory=UrgentFirstLoop) as runner:
        return runner.run(main)


class PrioritySlots:
    """A semaphore whose waiters are woken by priority, then in arrival order, and whose size
    (``limit``) may adapt to the event loop's load between ``min_slots`` and ``slots``.

    A pre-checkout query never waits: it takes a slot even above the limit (Telegram fails the
    payment after 10 seconds, and one query is a few milliseconds of work).

    Why adapt: the right number of updates in flight depends on where an update spends its time.
    When the CPU is the limit (a rush against a fast Bot API), every update more in flight only
    lengthens each turn of the event loop, and so every update's latency, a checkout's included;
    when updates mostly wait on Telegram's round trip (50-150 ms a call), a handful in flight
    leaves the CPU idle and throughput falls. The event loop's lag (how late a timer fires) tells
    the two apart: :meth:`observe` lowers the limit while the lag is above ``target_lag_s`` and
    raises it while the lag is low and updates are waiting (additive increase, multiplicative
    decrease, as TCP does).
    """

    def __init__(
        self,
        slots: int,
        *,
        adaptive: bool = False,
        min_slots: int = 2,
        target_lag_s: float = 0.005,
        sample_s: float = 0.02,
    ) -> None:
        if slots < 1:
            msg = "at least one slot is needed"
            raise ValueError(msg)
        self.slots = slots
        self.min_slots = min(min_slots, slots)
        self.adaptive = adaptive
        self.limit = min(slots, max(self.min_slots, 8)) if adaptive else slots
        self.target_lag_s = target_lag_s
        self.sample_s = sample_s
        self.lag_s = 0.0  # the last window's worst lag, for metrics and logs
        self._in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._window: list[float] = []
        self._busy: list[float] = []
        self.busy = 0.0  # the last window's CPU share
        self._controller: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiters if not future.done())

    @property
    def in_use(self) -> int:
        return self._in_use

    async def acquire(self, priority: int) -> None:
        if self._in_use < self.limit or priority == Priority.CHECKOUT:
            self._in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future  # the slot is counted in _in_use by whoever woke us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as the waiter was cancelled
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the most urgent waiters."""
        while self._waiters and self._in_use < self.limit:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                self._in_use += 1
                future.set_result(None)

    def observe(self, lag_s: float, busy: float = 1.0) -> None:
        """One sample of the event loop's lag and of the share of the sample's wall time this
        process spent on the CPU; every few samples the limit moves.

        The limit falls only while the process is busy: a loop that lags while the process
        mostly waits is being kept off the CPU by other processes (or was one long callback),
        and fewer updates in flight would only lose throughput.
        """
        self._window.append(lag_s)
        self._busy.append(busy)
        if len(self._window) < 5:
            return
        self.lag_s, self._window = max(self._window), []
        self.busy, self._busy = sum(self._busy) / len(self._busy), []
        if self.lag_s > self.target_lag_s and self.busy >= BUSY:
            self.limit = max(self.min_slots, int(self.limit * 0.75))
        elif self.lag_s < self.target_lag_s / 2 and self.waiting:
            self.limit = min(self.slots, self.limit + max(1, self.limit // 4))
            self._wake()

    async def _adapt(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started, cpu = loop.time(), time.process_time()
            await asyncio.sleep(self.sample_s)
            wall = loop.time() - started
            self.observe(max(0.0, wall - self.sample_s), (time.process_time() - cpu) / wall)

    def start(self) -> None:
        """Start sampling the loop's lag (adaptive slots only; a running loop is needed)."""
        if self.adaptive and self._controller is None:
            self._controller = asyncio.create_task(self._adapt(), name="update-slots")

    async def close(self) -> None:
        if self._controller is not None:
            self._controller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._controller
            self._controller = None


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
