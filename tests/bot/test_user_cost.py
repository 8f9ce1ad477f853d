"""What the user behind an update costs the database, counted on the real engine.

Every update touches its user (``UserMiddleware``), so the shape is pinned: a returning,
unchanged user is one read and no write; a changed profile or an unblock adds one ``UPDATE``; a
new user one ``INSERT``; all in the update's own transaction, never one of their own. The user
handed to handlers is an ordinary persistent ORM object: what a handler changes on it is flushed
as before, and the session holds no pending change of the middleware's making.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from storage.models import User
from tests.engine_events import listening

PROFILE = {"first_name": "Ada", "last_name": "L", "username": "ada", "language_code": "en"}


@dataclass
class Trace:
    statements: list[str] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)

    def on_users(self) -> list[str]:
        return [s.split(" ")[0] for s in self.statements if " users" in s]


@contextmanager
def traced(engine: AsyncEngine) -> Iterator[Trace]:
    trace = Trace()

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if not sql.startswith("BEGIN"):
            trace.statements.append(" ".join(sql.split()))

    listeners = [
        ("before_cursor_execute", statement),
        ("begin", lambda *_a: trace.ends.append("begin")),
        ("commit", lambda *_a: trace.ends.append("commit")),
        ("rollback", lambda *_a: trace.ends.append("rollback")),
    ]
    with listening(engine, listeners):
        yield trace


async def an_update(app: AppContext, user_id: int, **changes: Any) -> tuple[User, Trace]:
    """The middleware's touch and the update's end (its commit), as an update runs them."""
    async with app.session_factory() as session:
        orm_loads: list[object] = []

        def orm_execute(state: ORMExecuteState) -> None:
            if state.is_select and state.all_mappers:
                orm_loads.append(state.statement)

        event.listen(session.sync_session, "do_orm_execute", orm_execute)
        with traced(session.bind) as trace:  # type: ignore[arg-type]
            user = await Services(session, app).users.touch(user_id, **{**PROFILE, **changes})
            assert orm_loads == []  # the row is read as a plain row: no ORM loading on the way
            assert not session.dirty
            assert not session.new
            assert inspect(user).persistent
            assert await session.get(User, user_id) is user  # held as a load would hold it
            await session.commit()
    return user, trace


async def stored(session_factory: async_sessionmaker[AsyncSession], user_id: int) -> User:
    async with session_factory() as session:
        user = await session.scalar(select(User).where(User.id == user_id))
        assert user is not None
        return user


async def test_a_returning_unchanged_user_is_one_read_in_the_updates_transaction(
    app_context: AppContext,
) -> None:
    await an_update(app_context, 8100)
    user, trace = await an_update(app_context, 8100)
    assert trace.on_users() == ["SELECT"], trace.statements
    assert trace.ends == ["begin", "commit"]
    assert (user.first_name, user.username, user.blocked_at) == ("Ada", "ada", None)


async def test_a_new_user_is_one_read_and_one_insert(
    app_context: AppContext, session_factory: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    user, trace = await an_update(app_context, 8101)
    assert trace.on_users() == ["SELECT", "INSERT"], trace.statements
    assert trace.ends == ["begin", "commit"]
    row = await stored(session_factory, 8101)
    assert (row.first_name, row.last_name, row.language_code) == ("Ada", "L", "en")
    assert row.created_at == user.created_at == clock.now()
    assert row.locale is None
    assert row.active_org_id is None


async def test_a_changed_profile_is_one_update_riding_on_the_updates_transaction(
    app_context: AppContext, session_factory: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    await an_update(app_context, 8102)
    user, trace = await an_update(app_context, 8102, username="ada_l", language_code="it")
    assert trace.on_users() == ["SELECT", "UPDATE"], trace.statements
    assert "blocked_at" not in trace.statements[-1]  # a block recorded meanwhile is kept
    assert trace.ends == ["begin", "commit"]
    assert (user.username, user.language_code, user.updated_at) == ("ada_l", "it", clock.now())
    row = await stored(session_factory, 8102)
    assert (row.username, row.language_code, row.updated_at) == ("ada_l", "it", clock.now())


async def test_a_blocked_user_who_writes_is_unblocked_and_a_block_report_is_no_sign_of_life(
    app_context: AppContext, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await an_update(app_context, 8103)
    async with session_factory() as session:
        await Services(session, app_context).users.mark_blocked(8103)

    user, trace = await an_update(app_context, 8103, reachable=False)
    assert trace.on_users() == ["SELECT"], trace.statements
    assert user.blocked_at is not None

    user, trace = await an_update(app_context, 8103)
    assert trace.on_users() == ["SELECT", "UPDATE"], trace.statements
    assert user.blocked_at is None
    assert (await stored(session_factory, 8103)).blocked_at is None


async def test_what_a_handler_changes_on_the_user_is_flushed_alone_in_the_same_transaction(
    app_context: AppContext, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await an_update(app_context, 8104)
    async with session_factory() as session:
        services = Services(session, app_context)
        with traced(session.bind) as trace:  # type: ignore[arg-type]
            user = await services.users.touch(8104, **PROFILE)
            await services.users.set_locale(user, "pt_BR")
    assert trace.on_users() == ["SELECT", "UPDATE"], trace.statements
    assert "SET locale=" in trace.statements[-1]
    assert "first_name" not in trace.statements[-1]
    assert trace.ends == ["begin", "commit"]
    assert (await stored(session_factory, 8104)).locale == "pt_BR"
