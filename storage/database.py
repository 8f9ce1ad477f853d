"""Engine and session factories.

SQLite is the embedded default and has one writer. Rather than let concurrent transactions
collide on lock upgrades (``SQLITE_BUSY`` with no retry in WAL mode), the engine keeps a single
connection, so transactions of one process queue in asyncio instead of spinning in SQLite's busy
handler, and every transaction starts with ``BEGIN IMMEDIATE`` so that a second process (say
``python -m bot migrate`` next to a running bot) waits for the write lock up front.
PostgreSQL gets an ordinary pool; services lock rows where they need to. On both, sessions
waiting for a connection are served by urgency, a checkout first (``storage.pool``).

A pooled PostgreSQL connection is pinged before use only when it has sat idle for
``IDLE_PING_S``: SQLAlchemy's ``pool_pre_ping`` pings on every checkout, a round trip that cost
about 40% of the CPU of a one-statement transaction here, on every transaction of a busy bot,
whose connections are never idle that long. A server restart still costs no more than with
``pool_pre_ping``: the transactions then in flight fail either way, and the first disconnect seen
invalidates the whole pool, so nothing else reuses a dead connection; the intake and the outbox
retry what failed.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage.pool import PriorityPool
from storage.sqlite_inline import BLOCKING_BUSY_TIMEOUT_MS, begin_immediate, inline_connector
from storage.types import json_text, json_value

SQLITE_BUSY_TIMEOUT_MS = 30_000
IDLE_PING_S = 10.0  # a PostgreSQL connection idle this long is pinged before it is used again


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, echo: bool = False, pool_size: int = 20) -> AsyncEngine:
    """Build an async engine tuned for the backend behind ``url``.

    PostgreSQL: at most ``pool_size`` connections, every one kept open once made. The pool was
    10 kept and 10 more on demand, the same 20 at most; but a connection beyond the kept ones is
    closed as soon as it is given back, and a rush that used 17 at once kept opening and closing
    seven of them (a connection's start-up is several round trips and some CPU), while the
    checkout that needed one waited for it."""
    if not is_sqlite(url):
        engine = create_async_engine(
            url,
            echo=echo,
            poolclass=PriorityPool,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=False,
            json_serializer=json_text,
            json_deserializer=json_value,
        )
        _ping_when_idle(engine)
        return engine

    engine = create_async_engine(
        url,
        echo=echo,
        poolclass=PriorityPool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=120,
        json_serializer=json_text,
        json_deserializer=json_value,
        async_creator=inline_connector(
            make_url(url).database or ":memory:", lock_timeout_s=SQLITE_BUSY_TIMEOUT_MS / 1000
        ),
    )
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BLOCKING_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # Every transaction takes the write lock up front (see the module docstring).
    event.listen(sync_engine, "begin", begin_immediate)

    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a connection that sat in the pool ``IDLE_PING_S`` or more before handing it out."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if left_in_a_transaction(dbapi_connection):
            # The pool drops it (closing it rolls the stray transaction back) and checks out
            # another.
            raise exc.DisconnectionError("a cancelled BEGIN left the connection in a transaction")
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool drops this connection and checks out another (a new one if need be).
            raise exc.DisconnectionError from error


def left_in_a_transaction(adapted: Any) -> bool:
    """Whether an asyncpg connection came back holding a transaction nobody knows of.

    A task cancelled while asyncpg awaits the answer to ``BEGIN`` (a shutdown cancelling a
    webhook request or a background loop) leaves asyncpg's record of that transaction behind
    (``Transaction.start`` sets it before sending ``BEGIN``), while SQLAlchemy's adapter, which
    records it only once ``BEGIN`` has succeeded, holds none, so returning the connection rolls
    nothing back. The next user's ``BEGIN`` then becomes a ``SAVEPOINT`` inside that transaction
    and its "commit" only releases the savepoint: everything it writes (an outbox claim, the
    messages it marks sent) stays invisible to other connections and is rolled back when the
    connection is closed. Seen in the cluster test: a stopping replica sent access messages from
    a claim that never committed, and another replica sent them again."""
    driver = getattr(adapted, "_connection", None)
    if driver is None or getattr(adapted, "_transaction", None) is not None:
        return False
    return getattr(driver, "_top_xact", None) is not None or driver.is_in_transaction()


def holds_connection(session: AsyncSession) -> bool:
    """Whether ``session`` holds a connection (its transaction has begun on the database): a
    block of ``storage.direct`` may then not be opened by the same task on SQLite, whose one
    connection it would wait for."""
    transaction = session.sync_session._transaction
    return transaction is not None and bool(transaction._connections)


class Session(AsyncSession):
    """SQLAlchemy's ``AsyncSession``, with a close that costs nothing when nothing is held.

    Closing an ``AsyncSession`` hops into a greenlet, and leaving its ``async with`` block runs
    that close in a task of its own, shielded from cancellation, so that a connection being
    given back is never abandoned halfway. A session whose work was committed (every update's
    session once its service committed, every intake and outbox transaction) holds no
    transaction and no connection: its close only forgets its objects, which never awaits and
    so cannot be interrupted. Done in place, it saves about a quarter of a one-statement
    transaction's CPU (140 of 500 us on SQLite here). A session still holding a transaction
    closes as before.
    """

    def _closed_in_place(self) -> bool:
        sync = self.sync_session
        if sync._transaction is not None:
            return False
        sync.close()
        return True

    async def close(self) -> None:
        if not self._closed_in_place():
            await super().close()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        if not self._closed_in_place():
            await super().__aexit__(type_, value, traceback)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Keep loaded objects usable after commit: replies are rendered after services commit."""
    return async_sessionmaker(  # type: ignore[return-value]
        engine, class_=Session, expire_on_commit=False, autoflush=False
    )
