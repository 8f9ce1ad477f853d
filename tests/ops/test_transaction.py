"""A transaction without a session (``storage.direct.Transaction``): committed at the end of
its block, rolled back when the block raises or is cancelled, its connection always given back,
errors as SQLAlchemy's, statements and commits heard by the engine's listeners; both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, exc, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.database import create_engine
from storage.direct import Prebuilt, Transaction
from tests.conftest import BACKEND
from tests.ops.test_direct import _INSERT, _READ, _values

_PID = Prebuilt(select(func.pg_backend_pid()))


async def _exists(session: AsyncSession, row_id: int) -> bool:
    found = await _READ.first(session, {"id_": row_id})
    await session.commit()
    return found is not None


async def test_the_block_commits_at_its_end(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with Transaction(engine) as transaction:
        (row_id,) = await _INSERT.first(transaction, _values("kept"))  # type: ignore[misc]
        assert await _READ.first(transaction, {"id_": row_id}) is not None
    async with session_factory() as session:
        assert await _exists(session, row_id)


async def test_a_raising_block_rolls_back_and_gives_the_connection_back(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    written: list[int] = []

    async def changing_its_mind() -> None:
        async with Transaction(engine) as transaction:
            (row_id,) = await _INSERT.first(transaction, _values("undone"))  # type: ignore[misc]
            written.append(row_id)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await changing_its_mind()
    row_id = written[0]
    # SQLite has one connection: a session could not begin if it had not been given back.
    async with session_factory() as session:
        assert not await _exists(session, row_id)
    async with Transaction(engine) as transaction:
        pass
    with pytest.raises(RuntimeError, match="ended"):
        await _READ.first(transaction, {"id_": row_id})


async def test_a_constraint_breaks_as_sqlalchemys_integrity_error(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with Transaction(engine) as transaction:
        await _INSERT.first(transaction, _values("twice"))

    async def inserting_it_again() -> None:
        async with Transaction(engine) as transaction:
            await _INSERT.first(transaction, _values("once-more"))
            await _INSERT.first(transaction, _values("twice"))

    with pytest.raises(exc.IntegrityError):
        await inserting_it_again()
    async with Transaction(engine) as transaction:  # usable again; the failed one left nothing
        (row_id,) = await _INSERT.first(transaction, _values("after"))  # type: ignore[misc]
    async with session_factory() as session:
        assert await _exists(session, row_id)
        found = await session.execute(
            text("SELECT count(*) FROM outbox WHERE dedupe_key = 'once-more'")
        )
        assert found.scalar_one() == 0


async def test_a_cancelled_block_writes_nothing_and_gives_the_connection_back(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    inside = asyncio.Event()
    written: list[int] = []

    async def cancelled() -> None:
        async with Transaction(engine) as transaction:
            (row_id,) = await _INSERT.first(transaction, _values("cancelled"))  # type: ignore[misc]
            written.append(row_id)
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(cancelled())
    await asyncio.wait_for(inside.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(10), session_factory() as session:
        assert not await _exists(session, written[0])


async def test_the_engines_listeners_hear_its_statements_and_commit(engine: AsyncEngine) -> None:
    heard: list[tuple[str, Any]] = []

    def statement(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        heard.append((" ".join(sql.split())[:18], conn))

    def commit(conn: Any) -> None:
        heard.append(("COMMIT", conn))

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", statement)
    event.listen(sync, "commit", commit)
    try:
        async with Transaction(engine) as transaction:
            await _INSERT.first(transaction, _values("heard"))
    finally:
        event.remove(sync, "before_cursor_execute", statement)
        event.remove(sync, "commit", commit)
    assert heard == [("INSERT INTO outbox", transaction), ("COMMIT", transaction)]


@pytest.mark.skipif(BACKEND != "postgres", reason="a server that drops its connections")
async def test_a_lost_connection_invalidates_the_pool(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2)
    try:
        async with Transaction(engine) as transaction:
            await _READ.rows(transaction, {"id_": 1})
            (pid,) = await _PID.first(transaction)  # type: ignore[misc]
        killer = create_engine(database_url, pool_size=1)
        async with killer.begin() as connection:
            await connection.execute(text(f"SELECT pg_terminate_backend({pid})"))
        await killer.dispose()
        with pytest.raises(exc.DBAPIError) as raised:
            async with Transaction(engine) as transaction:
                await _READ.rows(transaction, {"id_": 1})
        assert raised.value.connection_invalidated
        async with Transaction(engine) as transaction:  # a fresh connection, no error
            assert isinstance(await _READ.rows(transaction, {"id_": 1}), list)
    finally:
        await engine.dispose()


async def test_an_autocommit_block_commits_each_statement_on_postgresql(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """On PostgreSQL each statement commits as it runs (another connection sees it at once, and
    a raising block keeps it); on SQLite the block stays one transaction. Either way the
    connection goes back to the pool in its usual mode."""
    written: list[int] = []

    async def writing_then_failing() -> None:
        async with Transaction(engine, autocommit=True) as transaction:
            (row_id,) = await _INSERT.first(transaction, _values("at-once"))  # type: ignore[misc]
            written.append(row_id)
            if BACKEND == "postgres":
                async with session_factory() as session:
                    assert await _exists(session, row_id)
            raise RuntimeError("after the statement")

    with pytest.raises(RuntimeError, match="after the statement"):
        await writing_then_failing()
    async with session_factory() as session:
        assert await _exists(session, written[0]) == (BACKEND == "postgres")
    async with Transaction(engine, autocommit=True) as transaction:
        (row_id,) = await _INSERT.first(transaction, _values("committed"))  # type: ignore[misc]
        adapted = transaction.adapted
    assert not getattr(adapted, "autocommit", False)  # given back in the engine's own mode
    async with session_factory() as session:
        assert await _exists(session, row_id)
