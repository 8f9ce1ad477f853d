"""SQLite on the event loop's own thread, behind SQLAlchemy's aiosqlite dialect.

aiosqlite runs each call on a worker thread and hands the result back through the event loop, so
every statement costs a thread hop plus a wait for the loop's next turn. The bot keeps a single
SQLite connection (SQLite has one writer), and a transaction holds it from ``BEGIN IMMEDIATE`` to
``COMMIT``: on a busy loop the waits between statements, not SQLite, set how long the connection
is held, and every other update queues behind it. Measured with ``bench/rush.py``: a transaction
of four statements held the connection for 8 ms, of which SQLite itself needed well under one.

SQLite is an in-process library whose statements on an indexed local file take microseconds
(the reasoning of better-sqlite3, Node's synchronous SQLite driver), so this connection runs them
directly: a transaction that does not await anything else runs from ``BEGIN`` to ``COMMIT`` in
one turn of the loop. The one call that could block for long is taking the write lock while
another process holds it (``python -m bot migrate`` beside a running bot, say): SQLite's own busy
handler would stall the loop, so it is kept short and ``BEGIN`` is retried with ``asyncio.sleep``
instead, up to the same overall timeout.

The class is aiosqlite's ``Connection`` with its thread replaced, because SQLAlchemy's aiosqlite
dialect reaches into that class (``_tx``, ``_conn``, ``stop``): the supported aiosqlite versions
are pinned in ``pyproject.toml`` and the whole suite runs on this connection.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.util import await_only

# SQLite's own busy handler blocks the thread that runs it: here, the event loop.
BLOCKING_BUSY_TIMEOUT_MS = 5
_RETRY_SLEEP_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1)


def _is_locked(error: sqlite3.OperationalError) -> bool:
    message = str(error)
    return "database is locked" in message or "database table is locked" in message


class _InlineQueue:
    """Stands in for aiosqlite's queue to its worker thread: each call runs when queued."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting side, as aiosqlite's thread does
            if future is not None and not future.done():
                future.set_exception(error)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection API, run on the calling thread."""

    def __init__(
        self, connector: Callable[[], sqlite3.Connection], *, lock_timeout_s: float
    ) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineQueue()  # type: ignore[assignment]
        self._lock_timeout_s = lock_timeout_s

    def __await__(self) -> Any:  # no thread to start
        return self._connect().__await__()

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            msg = "Connection closed"
            raise ValueError(msg)
        if not (args and isinstance(args[0], str) and args[0].lstrip()[:5].upper() == "BEGIN"):
            return fn(*args, **kwargs)
        # Taking the write lock: wait for another process without blocking the loop.
        deadline = time.monotonic() + self._lock_timeout_s
        for attempt in itertools.count():
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as error:
                if not _is_locked(error) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(_RETRY_SLEEP_S[min(attempt, len(_RETRY_SLEEP_S) - 1)])
        return None  # unreachable: itertools.count() never ends


def _began(sqlite: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE`` straight on sqlite3: False if another process holds the write lock
    (the caller then waits for it as :meth:`InlineConnection._execute` does)."""
    try:
        sqlite.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if not _is_locked(error):
            raise
        return False
    return True


async def begin_inline(inline: InlineConnection) -> None:
    """``BEGIN IMMEDIATE`` on the inline connection, as :func:`begin_immediate` takes it, for a
    caller already on the event loop (``storage.direct.Transaction``). Errors are sqlite3's."""
    sqlite = inline._connection
    if not _began(sqlite):
        await inline._execute(sqlite.execute, "BEGIN IMMEDIATE")


def begin_immediate(connection: Any) -> None:
    """Take the write lock for a transaction SQLAlchemy begins (its ``begin`` event).

    Straight on sqlite3: the common case, nobody else holding the lock, is one call of a few
    microseconds, where the same ``BEGIN IMMEDIATE`` through ``exec_driver_sql`` cost a fifth of
    a short transaction's CPU. Only when another process holds the lock does it wait as
    :meth:`InlineConnection._execute` waits, the loop running meanwhile. Errors come out as any
    statement's would (SQLAlchemy's ``OperationalError``)."""
    inline: InlineConnection = connection.connection.dbapi_connection._connection
    sqlite = inline._connection
    try:
        if not _began(sqlite):
            await_only(inline._execute(sqlite.execute, "BEGIN IMMEDIATE"))
    except sqlite3.Error as error:
        connection._handle_dbapi_exception(error, "BEGIN IMMEDIATE", (), None, None)


def inline_connector(database: str, *, lock_timeout_s: float) -> Callable[[], InlineConnection]:
    """An ``async_creator`` for ``create_async_engine`` (SQLAlchemy awaits what it returns)."""

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            database,
            timeout=BLOCKING_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=database.startswith("file:"),
        )

    return partial(InlineConnection, connect, lock_timeout_s=lock_timeout_s)
