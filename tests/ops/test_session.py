"""The session class (``storage.database.Session``): closing a session that holds nothing is done
in place; one that still holds a transaction is rolled back and gives its connection back, even
when the task closing it is cancelled."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.database import Session
from storage.models import User


async def _users(session_factory: async_sessionmaker[AsyncSession]) -> int:
    async with session_factory() as session:
        return (await session.scalar(select(func.count(User.id)))) or 0


def _user() -> User:
    return User(id=42, first_name="Ada")


def _checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]


async def test_a_committed_session_closes_in_place(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory() as session:
        assert isinstance(session, Session)
        user = _user()
        session.add(user)
        await session.commit()
        assert _checked_out(engine) == 0
    # Closed: the object is detached, its loaded values still readable (replies use them).
    assert user not in session
    assert user.first_name == "Ada"
    assert await _users(session_factory) == 1


async def test_a_session_left_in_a_transaction_is_rolled_back(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory() as session:
        session.add(_user())
        await session.flush()
        assert _checked_out(engine) == 1
    assert _checked_out(engine) == 0
    assert await _users(session_factory) == 0


async def test_a_cancelled_task_still_gives_its_connection_back(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    flushed = asyncio.Event()

    async def hold() -> None:
        async with session_factory() as session:
            session.add(_user())
            await session.flush()
            flushed.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hold())
    await flushed.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert _checked_out(engine) == 0
    assert await _users(session_factory) == 0
