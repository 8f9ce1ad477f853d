"""Shared fixtures. The same tests run on SQLite (default) and PostgreSQL::

    TEST_DATABASE=postgres pytest      # uses TEST_POSTGRES_URL, default postgres@127.0.0.1/test

On PostgreSQL one database is created per test run (migrated once) and truncated between tests;
on SQLite every test gets a fresh file.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.clock import FakeClock
from bot.context import AppContext
from bot.i18n import Translator
from bot.settings import Settings
from storage.database import create_engine, create_session_factory
from storage.models import Base

if TYPE_CHECKING:
    from bot.application import BotApplication
    from bot.sandbox import SandboxServer

BACKEND = os.environ.get("TEST_DATABASE", "sqlite").lower()
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TEST_TOKEN = "123456789:TEST-token-for-the-sandbox"
OWNER_ID = 1000


def pytest_report_header() -> str:
    return f"webinarpass database backend: {BACKEND}"


async def _admin_execute(statement: str) -> None:
    import asyncpg

    url = make_url(POSTGRES_URL)
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_postgres_database(name: str) -> str:
    await _admin_execute(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(name: str) -> None:
    await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    if BACKEND != "postgres":
        yield None
        return
    name = f"webinarpass_test_{uuid.uuid4().hex[:8]}"

    async def create_and_migrate() -> str:
        from storage.migrate import upgrade

        url = await create_postgres_database(name)
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        return url

    # Sync session fixture: no event loop is running yet, each test gets its own later.
    yield asyncio.run(create_and_migrate())
    asyncio.run(drop_postgres_database(name))


@pytest.fixture
def database_url(postgres_url: str | None, tmp_path: Path) -> str:
    if postgres_url is not None:
        return postgres_url
    return f"sqlite+aiosqlite:///{tmp_path / 'webinarpass.db'}"


async def _truncate(engine: AsyncEngine) -> None:
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    if BACKEND == "postgres":
        await _truncate(engine)
    else:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def session(session_factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with session_factory() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def translator() -> Translator:
    return Translator()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=TEST_TOKEN,
        database_url=database_url,
        telegram_api_url="http://127.0.0.1:1",
        bot_owner_ids=frozenset({OWNER_ID}),
    )


@pytest.fixture
def app_context(
    settings: Settings,
    clock: FakeClock,
    translator: Translator,
    session_factory: async_sessionmaker[AsyncSession],
) -> Iterator[AppContext]:
    app = AppContext(
        settings=settings, clock=clock, translator=translator, session_factory=session_factory
    )
    with translator.context():
        yield app


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    """The project's sandbox Bot API server on a free port, with our bot registered."""
    from bot.sandbox import SandboxServer

    server = SandboxServer()
    await server.start()
    server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
    yield server
    await server.stop()


@pytest.fixture
async def bot_app(
    sandbox: SandboxServer,
    settings: Settings,
    clock: FakeClock,
    translator: Translator,
    engine: AsyncEngine,
) -> AsyncIterator[BotApplication]:
    """The real bot (Dispatcher, middlewares, routers) polling the sandbox, on the test's database.

    It shares the test's engine. On SQLite that engine has a single connection: a test must end
    its own transaction (commit or close its session) before it waits for the bot to act.
    """
    from bot.application import BotApplication

    application = BotApplication(
        settings.model_copy(update={"telegram_api_url": sandbox.url}),
        clock=clock,
        translator=translator,
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    await application.start_polling()
    yield application
    await application.stop()
