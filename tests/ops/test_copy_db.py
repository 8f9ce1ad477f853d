"""copy-db: the SQLite database into an empty, migrated PostgreSQL one, in one transaction."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.__main__ import _copy_db
from bot.settings import Settings
from storage.database import create_engine, create_session_factory
from storage.migrate import upgrade
from storage.models import Base, Organization
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.factories import NOW, make_every_kind_of_row


async def _empty_postgres(migrate: bool) -> tuple[str, str]:
    name = f"webinarpass_copy_{uuid.uuid4().hex[:8]}"
    try:
        url = await create_postgres_database(name)
    except OSError as error:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES) but not reachable: {error}")
        pytest.skip(f"PostgreSQL not reachable: {error}")
    if migrate:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
    return name, url


@pytest.fixture
async def target() -> AsyncIterator[str]:
    name, url = await _empty_postgres(migrate=True)
    yield url
    await drop_postgres_database(name)


@pytest.fixture
async def source(tmp_path: Path) -> Settings:
    url = f"sqlite+aiosqlite:///{tmp_path / 'small.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    async with create_session_factory(engine)() as session:
        await make_every_kind_of_row(session)
        await session.commit()
    await engine.dispose()
    return Settings(_env_file=None, database_url=url)


async def _dump(engine: AsyncEngine) -> dict[str, list[tuple]]:
    dump = {}
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
            dump[table.name] = [tuple(row) for row in rows]
    return dump


async def test_every_row_is_copied_and_ids_continue(
    source: Settings, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _copy_db(source, target) == 0
    out = capsys.readouterr().out
    assert "counts verified" in out
    source_engine, target_engine = create_engine(source.database_url), create_engine(target)
    try:
        before, after = await _dump(source_engine), await _dump(target_engine)
        assert all(before[table] for table in before), "the fixture misses a table"
        assert after == before
        # Sequences follow the copied ids: the next organization gets a fresh one.
        async with create_session_factory(target_engine)() as session:
            highest = await session.scalar(select(func.max(Organization.id)))
            org = Organization(
                name="New",
                contact_email="n@example.org",
                language="en",
                currency="USD",
                timezone="UTC",
                created_by=1000,
                created_at=NOW,
            )
            session.add(org)
            await session.commit()
            assert org.id == highest + 1
    finally:
        await source_engine.dispose()
        await target_engine.dispose()


async def test_a_non_empty_target_is_refused_and_left_alone(
    source: Settings, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _copy_db(source, target) == 0
    target_engine = create_engine(target)
    try:
        first = await _dump(target_engine)
        assert await _copy_db(source, target) == 1
        assert "not empty" in capsys.readouterr().err
        assert await _dump(target_engine) == first
    finally:
        await target_engine.dispose()


async def test_an_unmigrated_target_is_refused(
    source: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    name, url = await _empty_postgres(migrate=False)
    try:
        assert await _copy_db(source, url) == 1
        assert "python -m bot migrate" in capsys.readouterr().err
    finally:
        await drop_postgres_database(name)
