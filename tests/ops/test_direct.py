"""Prebuilt statements run on the driver (``storage.direct``): the same values, transaction,
errors and events as ``session.execute``, on both backends."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import DateTime, bindparam, event, exc, insert, inspect, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.database import create_engine, create_session_factory
from storage.direct import Prebuilt
from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage, User
from storage.repositories.base import adopt, attached
from tests.conftest import BACKEND

_OUTBOX = OutboxMessage.__table__
_COLUMNS = [column for column in _OUTBOX.columns if column.key != "id"]
_INSERT = Prebuilt(
    insert(_OUTBOX)
    .values({column.key: bindparam(f"{column.key}_") for column in _COLUMNS})
    .returning(_OUTBOX.c.id)
)
_BY_ID = select(_OUTBOX).where(_OUTBOX.c.id == bindparam("id_"))
_READ = Prebuilt(_BY_ID)
# A literal value of its own (an anonymous parameter), one used twice, one from the caller.
_SEND = Prebuilt(
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("id_"))
    .values(status=OutboxStatus.SENT, sent_at=bindparam("now"), lease_until=bindparam("now"))
)
# Only the columns named, each under its own name, as session.execute derives from its values.
_INSERT_SOME = Prebuilt(
    insert(_OUTBOX).returning(_OUTBOX.c.id), columns=[column.key for column in _COLUMNS]
)
_ANY_OF = Prebuilt(select(_OUTBOX.c.id).where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True))))
_OPEN = Prebuilt(
    select(_OUTBOX.c.id)
    .where(
        or_(
            *(_OUTBOX.c.status == status for status in (OutboxStatus.PENDING, OutboxStatus.SENDING))
        )
    )
    .order_by(_OUTBOX.c.id)
)

NOW = datetime(2026, 11, 26, 12, 30, 15, 123456, tzinfo=UTC)


def _values(key: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": OutboxKind.NOTICE,
        "dedupe_key": key,
        "chat_id": 2**40 + 7,
        "org_id": None,
        "webinar_id": None,
        "ticket_id": None,
        "broadcast_id": None,
        "payload": {"text": "Привет, <b>мир</b>", "parts_sent": 1, "nested": [1, None, "x"]},
        "due_at": NOW,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "lease_until": None,
        "last_error": None,
        "sent_at": None,
        "created_at": NOW - timedelta(minutes=5),
    }
    values.update(overrides)
    return {f"{key_}_": value for key_, value in values.items()}


async def test_a_row_reads_back_as_session_execute_reads_it(session: AsyncSession) -> None:
    (row_id,) = await _INSERT.first(session, _values("a"))
    direct = await _READ.first(session, {"id_": row_id})
    orm = (await session.execute(_BY_ID, {"id_": row_id})).one()
    assert direct == tuple(orm)
    row = dict(zip(_OUTBOX.columns.keys(), direct, strict=True))
    assert row["kind"] is OutboxKind.NOTICE
    assert row["status"] is OutboxStatus.PENDING
    assert row["due_at"] == NOW
    assert row["due_at"].tzinfo is not None
    assert row["payload"] == _values("")["payload_"]
    assert row["chat_id"] == 2**40 + 7
    assert row["lease_until"] is None
    assert await _READ.rows(session, {"id_": row_id + 1000}) == []


async def test_an_insert_of_the_columns_named(session: AsyncSession) -> None:
    values = {key.removesuffix("_"): value for key, value in _values("named").items()}
    (row_id,) = await _INSERT_SOME.first(session, values)  # type: ignore[misc]
    assert (await _READ.first(session, {"id_": row_id}))[1:] == tuple(values.values())  # type: ignore[index]


async def test_fixed_and_repeated_parameters_and_the_rowcount(session: AsyncSession) -> None:
    (row_id,) = await _INSERT.first(session, _values("b"))
    later = NOW + timedelta(seconds=3)
    assert await _SEND.rowcount(session, {"id_": row_id, "now": later}) == 1
    assert await _SEND.rowcount(session, {"id_": row_id + 1000, "now": later}) == 0
    row = (await session.execute(_BY_ID, {"id_": row_id})).one()
    assert (row.status, row.sent_at, row.lease_until) == (OutboxStatus.SENT, later, later)


async def test_a_list_fixed_in_the_statement(session: AsyncSession) -> None:
    pending = (await _INSERT.first(session, _values("open-1")))[0]  # type: ignore[index]
    sending = (await _INSERT.first(session, _values("open-2", status=OutboxStatus.SENDING)))[0]  # type: ignore[index]
    await _INSERT.first(session, _values("open-3", status=OutboxStatus.SENT))
    assert await _OPEN.rows(session) == [(pending,), (sending,)]


async def test_a_missing_value_is_refused_before_anything_runs(session: AsyncSession) -> None:
    with pytest.raises(KeyError, match="now"):
        await _SEND.rowcount(session, {"id_": 1})


def test_what_cannot_be_prebuilt_is_refused_when_first_planned() -> None:
    from sqlalchemy.dialects import sqlite

    with pytest.raises(ValueError, match="expanding"):
        _ANY_OF._plan(sqlite.dialect())
    # ``payload`` has a Python-side default, which only SQLAlchemy's execution would run.
    without_payload = {column.key: bindparam(column.key + "_") for column in _COLUMNS}
    del without_payload["payload"]
    with pytest.raises(ValueError, match="payload"):
        Prebuilt(insert(_OUTBOX).values(without_payload))._plan(sqlite.dialect())


async def test_it_runs_in_the_sessions_transaction(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        (kept,) = await _INSERT.first(session, _values("kept"))
        await session.commit()
        (undone,) = await _INSERT.first(session, _values("undone"))
        assert await _READ.first(session, {"id_": undone}) is not None
        await session.rollback()
    async with session_factory() as session:
        assert await _READ.first(session, {"id_": kept}) is not None
        assert await _READ.first(session, {"id_": undone}) is None


async def test_pending_orm_changes_are_flushed_first_where_the_session_autoflushes(
    engine: AsyncEngine,
) -> None:
    # The bot's sessions do not autoflush (storage.database); a session that does is honoured.
    async with AsyncSession(engine, autoflush=True) as session:
        message = OutboxMessage(
            kind=OutboxKind.NOTICE, dedupe_key="orm", chat_id=1, due_at=NOW, created_at=NOW
        )
        session.add(message)
        by_key = Prebuilt(select(_OUTBOX.c.id).where(_OUTBOX.c.dedupe_key == "orm"))
        assert await by_key.rows(session) == [(message.id,)]
        await session.rollback()


async def test_a_constraint_breaks_as_sqlalchemys_integrity_error(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        await _INSERT.first(session, _values("twice"))
        with pytest.raises(exc.IntegrityError):
            await _INSERT.first(session, _values("twice"))
        await session.rollback()
        (row_id,) = await _INSERT.first(session, _values("twice"))  # usable again
        await session.commit()
    assert row_id


async def test_the_engines_statement_listeners_hear_it(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    heard: list[tuple[str, str]] = []

    def before(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        heard.append(("before", " ".join(sql.split())[:20]))

    def after(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        heard.append(("after", " ".join(sql.split())[:20]))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    try:
        await _READ.rows(session, {"id_": 1})
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        event.remove(engine.sync_engine, "after_cursor_execute", after)
    assert [what for what, sql in heard if sql.startswith("SELECT outbox.id")] == [
        "before",
        "after",
    ]


@pytest.mark.skipif(BACKEND != "postgres", reason="a server that drops its connections")
async def test_a_lost_connection_invalidates_the_pool_as_session_execute_would(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=2)
    factory = create_session_factory(engine)
    try:
        async with factory() as session:
            await _READ.rows(session, {"id_": 1})
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            killer = create_engine(database_url, pool_size=1)
            async with killer.begin() as connection:
                await connection.execute(text(f"SELECT pg_terminate_backend({pid})"))
            await killer.dispose()
            with pytest.raises(exc.DBAPIError) as raised:
                await _READ.rows(session, {"id_": 1})
            assert raised.value.connection_invalidated
        async with factory() as session:  # a fresh connection, no error
            assert await _READ.rows(session, {"id_": 1}) == []
    finally:
        await engine.dispose()


async def test_many_runs_once_per_parameter_set(session: AsyncSession) -> None:
    ids = [(await _INSERT.first(session, _values(f"many-{n}")))[0] for n in range(3)]  # type: ignore[index]
    later = NOW + timedelta(seconds=9)
    await _SEND.many(session, [{"id_": row_id, "now": later} for row_id in ids[:2]])
    await _SEND.many(session, [])
    sent = await Prebuilt(
        select(_OUTBOX.c.id).where(_OUTBOX.c.sent_at == later).order_by(_OUTBOX.c.id)
    ).rows(session)
    assert sent == [(ids[0],), (ids[1],)]


def test_a_built_model_reads_in_a_process_where_nothing_loaded_one_yet() -> None:
    """A replica whose first work is the outbox's claim builds its models from Core rows before
    any ORM load has configured the mappers; their attributes must read all the same."""
    code = (
        "from storage.models import OutboxMessage\n"
        "from storage.repositories.base import built\n"
        "print(built(OutboxMessage, ['id', 'attempts'], [7, 2]).attempts)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert (ran.returncode, ran.stdout.strip()) == (0, "2"), ran.stderr


# -- objects for Core rows (``storage.repositories.base``) ----------------------------------------


async def test_an_attached_row_is_the_sessions_persistent_object(session: AsyncSession) -> None:
    """As a load hands it out: in the identity map (``session.get`` finds it without a query),
    unchanged until changed, and a change is flushed as one of a loaded object would be."""
    session.add(User(id=7, first_name="Ada", created_at=NOW))
    await session.commit()
    session.expunge_all()
    keys = ("id", "first_name")
    user = attached(session, User, keys, (7, "Ada"))
    assert inspect(user).persistent
    assert user in session
    assert not session.dirty
    assert await session.get(User, 7) is user
    # The same key again: the object the session holds, refreshed with the row read again.
    assert attached(session, User, keys, (7, "Ada L.")) is user
    assert user.first_name == "Ada L."
    assert not session.dirty
    user.locale = "it"
    await session.commit()
    assert await _user_locale(session, 7) == "it"


async def test_an_adopted_new_object_is_clean_and_persistent(session: AsyncSession) -> None:
    """A new object written by a Core statement, then adopted: nothing left to flush (its
    constructor's values are its row), later changes flushed."""
    user = User(id=8, first_name="Grace", created_at=NOW)
    await Prebuilt(insert(User.__table__)).rowcount(
        session, {column.key: getattr(user, column.key) for column in User.__table__.columns}
    )
    adopt(session.sync_session, user, inspect(User).identity_key_from_primary_key([8]))
    assert inspect(user).persistent
    assert not session.dirty
    assert not session.new
    assert await session.get(User, 8) is user
    user.timezone = "Europe/Rome"
    await session.commit()
    assert (await session.scalar(select(User.timezone).where(User.id == 8))) == "Europe/Rome"
    with pytest.raises(ValueError, match="transient"):
        adopt(session.sync_session, user, inspect(User).identity_key_from_primary_key([8]))


async def _user_locale(session: AsyncSession, user_id: int) -> str | None:
    async with session.bind.connect() as connection:  # type: ignore[union-attr]
        return await connection.scalar(select(User.locale).where(User.id == user_id))


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's text storage of datetimes")
async def test_sqlite_stores_datetimes_in_sqlalchemys_own_format(session: AsyncSession) -> None:
    """Stored moments compare as text on SQLite: the bot's one-step processors write exactly
    SQLAlchemy's format (microseconds always), in UTC, and read both it and SQLite's own."""
    rome = timezone(timedelta(hours=1))
    for moment, stored in (
        (NOW, "2026-11-26 12:30:15.123456"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02 03:04:05.000000"),
        (datetime(2026, 1, 2, 4, 4, 5, 7, tzinfo=rome), "2026-01-02 03:04:05.000007"),
    ):
        key = f"format-{stored}"
        await _INSERT.first(session, _values(key, due_at=moment))
        raw = await session.scalar(
            text("SELECT due_at FROM outbox WHERE dedupe_key = :key"), {"key": key}
        )
        assert raw == stored
        assert (
            DateTime()
            .dialect_impl(session.bind.dialect)
            .bind_processor(  # type: ignore[union-attr]
                session.bind.dialect  # type: ignore[union-attr]
            )(moment.astimezone(UTC).replace(tzinfo=None))
            == stored
        )
        read = await session.scalar(select(OutboxMessage.due_at).where(_OUTBOX.c.dedupe_key == key))
        assert read == moment
        assert read.tzinfo is UTC
    await session.execute(text("UPDATE outbox SET due_at = CURRENT_TIMESTAMP"))
    read = await session.scalar(select(OutboxMessage.due_at).limit(1))
    assert read is not None
    assert read.tzinfo is UTC
    with pytest.raises(exc.StatementError, match="naive"):
        await session.execute(update(_OUTBOX).values(due_at=datetime(2026, 1, 1)))
