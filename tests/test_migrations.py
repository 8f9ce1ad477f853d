"""The "stairway": every revision goes up, down and up again, and head matches the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.database import create_engine
from storage.migrate import alembic_config, downgrade, upgrade
from storage.models import Base
from tests.conftest import BACKEND, create_postgres_database, drop_postgres_database

REVISIONS = [
    script.revision
    for script in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]


@pytest.fixture
async def empty_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if BACKEND == "postgres":
        name = f"webinarpass_stairway_{uuid.uuid4().hex[:8]}"
        url = await create_postgres_database(name)
        engine = create_engine(url)
        yield engine
        await engine.dispose()
        await drop_postgres_database(name)
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'stairway.db'}")
        yield engine
        await engine.dispose()


async def test_every_revision_goes_up_down_and_up(empty_engine: AsyncEngine) -> None:
    assert REVISIONS, "no migrations found"
    for revision in REVISIONS:
        await upgrade(empty_engine, revision)
        await downgrade(empty_engine, "-1")
        await upgrade(empty_engine, revision)


async def test_head_matches_the_models(empty_engine: AsyncEngine) -> None:
    await upgrade(empty_engine, "head")

    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with empty_engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == [], f"models and migrations differ: {differences}"
