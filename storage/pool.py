"""A connection pool whose waiters are served most urgent first.

SQLAlchemy's asyncio pool hands a returned connection to whoever has waited longest. In a rush
SQLite's one connection (and PostgreSQL's pool, once every connection is out) has dozens of
sessions queued for it, and a pre-checkout query, which Telegram fails after 10 seconds, would
wait behind every webinar card being shown. Here a waiter states its urgency through
:data:`connection_priority` (the intake sets it for the update it handles, ``bot/intake.py``), and
a returned connection goes straight to the most urgent waiter, the earliest among equals. A
connection is never taken past someone already waiting: a newcomer with a connection free in the
pool takes it only when nobody waits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon

T = TypeVar("T")

# Lower is more urgent; bot.priority.Priority's values (0 a checkout, 1 a payment, 2 the rest).
DEFAULT_PRIORITY = 2
connection_priority: ContextVar[int] = ContextVar("connection_priority", default=DEFAULT_PRIORITY)


class PriorityQueue(QueueCommon[T]):
    """The pool's queue of idle connections (see the module doc); asyncio only."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[T] = deque()
        self._waiters: list[tuple[int, int, asyncio.Future[T]]] = []
        self._order = itertools.count()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            *_, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            raise Full
        self._items.append(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # never more connections than places: a put never waits

    def get_nowait(self) -> T:
        if not self._items:
            raise Empty
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if self._items or not block:
            return self.get_nowait()
        return await_(self._wait(timeout))  # type: ignore[no-any-return]

    async def _wait(self, limit_s: float | None) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (connection_priority.get(), next(self._order), waiter))
        try:
            async with asyncio.timeout(limit_s):
                return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over just as we gave up: pass it on
            else:
                waiter.cancel()  # stays in the heap, skipped when its turn comes
            if isinstance(error, TimeoutError):
                raise Empty from None  # the pool turns it into its own TimeoutError
            raise


class PriorityPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool with :class:`PriorityQueue` for its idle connections."""

    _queue_class = PriorityQueue  # type: ignore[assignment]
