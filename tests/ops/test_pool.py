"""The connection pool: waiters are served by urgency (``storage.pool``, both backends); on
PostgreSQL a connection is pinged only after sitting idle, and a dead one never outlives the
first disconnect seen (``storage.database``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.database import create_engine
from storage.pool import connection_priority
from tests.conftest import BACKEND

postgres_only = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL's connection pool")


async def _kill_other_connections(engine: AsyncEngine, database_url: str) -> None:
    """What a server restart does to the pool: every pooled connection is dead."""
    killer = create_engine(database_url, pool_size=1)
    async with killer.begin() as connection:
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    await killer.dispose()


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(text("SELECT 1"))).scalar_one()


class Statements:
    def __init__(self, engine: AsyncEngine) -> None:
        self.seen: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)


@postgres_only
async def test_a_busy_connection_is_not_pinged(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await _select_one(engine)
        statements = Statements(engine)
        for _ in range(5):
            await _select_one(engine)
        assert statements.seen == ["SELECT 1"] * 5  # no ping before each
    finally:
        await engine.dispose()


@postgres_only
async def test_an_idle_connection_is_pinged_and_replaced_when_dead(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url)
    try:
        await _select_one(engine)
        await _kill_other_connections(engine, database_url)
        monkeypatch.setattr("storage.database.IDLE_PING_S", 0.0)  # as if idle for long
        assert await _select_one(engine) == 1  # the ping found it dead: a new connection
    finally:
        await engine.dispose()


@postgres_only
async def test_a_dead_busy_connection_fails_once_then_the_pool_is_renewed(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=3)
    try:
        async with engine.connect() as a, engine.connect() as b:  # two pooled connections
            await a.execute(text("SELECT 1"))
            await b.execute(text("SELECT 1"))
        await _kill_other_connections(engine, database_url)
        with pytest.raises(exc.DBAPIError) as failed:
            await _select_one(engine)
        assert failed.value.connection_invalidated
        # The disconnect invalidated the whole pool: the other dead connection is not reused.
        assert await _select_one(engine) == 1
        assert await _select_one(engine) == 1
    finally:
        await engine.dispose()


@postgres_only
async def test_a_connection_left_in_a_cancelled_begin_is_not_handed_out_again(
    database_url: str,
) -> None:
    """A task cancelled while asyncpg awaits the answer to BEGIN leaves the connection inside a
    transaction that SQLAlchemy's adapter does not know of. Handed out again, the next user's
    BEGIN became a SAVEPOINT in it and its commit only released that: nothing it wrote was ever
    committed (a stopping replica's outbox claims and sent marks vanished, and the access
    messages were sent again). The pool now drops such a connection at checkout."""
    engine = create_engine(database_url, pool_size=1)
    engine.pool._max_overflow = 0  # type: ignore[attr-defined]  # the same connection again
    observer = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS cancelled_begin"))
            await connection.execute(text("CREATE TABLE cancelled_begin (n int)"))
        # What the cancelled task leaves behind: asyncpg's Transaction.start records itself as
        # the connection's transaction, then sends BEGIN; the cancellation lands before the
        # adapter records it.
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            driver._top_xact = driver.transaction()  # type: ignore[union-attr]
            await driver.execute("BEGIN")  # type: ignore[union-attr]
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO cancelled_begin VALUES (1)"))
        async with observer.connect() as connection:
            seen = await connection.execute(text("SELECT count(*) FROM cancelled_begin"))
            assert seen.scalar_one() == 1  # committed, for everyone to see
    finally:
        await engine.dispose()  # closing a connection left in a transaction rolls it back
        async with observer.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS cancelled_begin"))
        await observer.dispose()


async def _take_in_turn(engine: AsyncEngine, name: str, priority: int, order: list[str]) -> None:
    connection_priority.set(priority)
    async with engine.connect() as connection:
        order.append(name)
        await connection.execute(text("SELECT 1"))


async def test_a_returned_connection_goes_to_the_most_urgent_waiter(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    engine.pool._max_overflow = 0  # type: ignore[attr-defined]  # one connection on both
    order: list[str] = []
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT 1"))
            waiters = []
            for name, priority in [("card 1", 2), ("payment", 1), ("card 2", 2), ("checkout", 0)]:
                waiters.append(asyncio.create_task(_take_in_turn(engine, name, priority, order)))
                await asyncio.sleep(0.01)  # in this arrival order
            cancelled = asyncio.create_task(_take_in_turn(engine, "gone", 0, order))
            await asyncio.sleep(0.01)
            cancelled.cancel()  # a waiter that gives up takes no turn and loses no connection
        await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert order == ["checkout", "payment", "card 1", "card 2"]
        assert await _select_one(engine) == 1
    finally:
        await engine.dispose()


async def test_a_waiter_past_the_pool_timeout_gives_up_and_the_pool_goes_on(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=1)
    engine.pool._max_overflow = 0  # type: ignore[attr-defined]
    engine.pool._timeout = 0.05  # type: ignore[attr-defined]
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT 1"))
            with pytest.raises(exc.TimeoutError):
                await _select_one(engine)
        assert await _select_one(engine) == 1
    finally:
        await engine.dispose()
