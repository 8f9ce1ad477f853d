"""How the bot uses its event loop: no database transaction waits on Telegram, SQLite's lock
waits never stall the loop, and no filter goes through a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.methods import SendMessage
from aiogram.types import Update
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.context import AppContext
from bot.factory import create_bot
from bot.inline_filters import threaded_filters
from bot.middlewares import DatabaseMiddleware
from bot.sandbox import SandboxServer
from storage.models import User
from storage.sqlite_inline import inline_connector
from tests.conftest import BACKEND, TEST_TOKEN

sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's write lock")


class RecordTransactions(BaseRequestMiddleware):
    """Notes, for each sendMessage, whether the watched session was inside a transaction."""

    def __init__(self) -> None:
        self.session: AsyncSession | None = None
        self.seen: list[bool] = []

    async def __call__(self, make_request: Any, bot: Any, method: Any) -> Any:
        if isinstance(method, SendMessage) and self.session is not None:
            self.seen.append(self.session.in_transaction())
        return await make_request(bot, method)


async def test_a_reply_is_sent_with_no_transaction_open(
    sandbox: SandboxServer, app_context: AppContext
) -> None:
    bot = create_bot(
        app_context.settings.model_copy(update={"telegram_api_url": sandbox.url}), TEST_TOKEN
    )
    recorder = RecordTransactions()
    bot.session.middleware(recorder)  # runs after the bot's own middlewares
    await sandbox.user(4001, first_name="Read").send("hello")  # a chat the bot may write to
    still_open: list[bool] = []

    async def handler(_event: Any, data: dict[str, Any]) -> None:
        session: AsyncSession = data["session"]
        recorder.session = session
        await session.scalar(select(User).where(User.id == 4001))  # a read opens a transaction
        assert session.in_transaction()

        # A task started by the handler (the outbox dispatcher, say) must leave it alone...
        await asyncio.create_task(bot.send_message(4001, "from a task"))
        still_open.append(session.in_transaction())
        # ...while the handler's own call ends it before going to Telegram.
        await bot.send_message(4001, "from the handler")

    try:
        update = Update.model_validate({"update_id": 1})
        await DatabaseMiddleware(app_context)(handler, update, {})
    finally:
        await bot.session.close()
    assert still_open == [True]
    assert recorder.seen == [True, False]


async def test_no_filter_of_the_bot_runs_in_a_thread(bot_app: BotApplication) -> None:
    assert threaded_filters(bot_app.dispatcher) == []


def _sqlite_path(engine: AsyncEngine) -> str:
    database = make_url(str(engine.url)).database
    assert database
    return database


@sqlite_only
async def test_waiting_for_another_process_lock_keeps_the_loop_running(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:  # the schema exists; warm the pool
        await connection.execute(text("SELECT 1"))
    other = sqlite3.connect(_sqlite_path(engine), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def write() -> None:
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO users (id, first_name, created_at) VALUES (1, 'x', '2026-01-01')")
            )

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    writer = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    assert not writer.done()
    other.execute("COMMIT")
    await asyncio.wait_for(writer, timeout=5)
    ticker.cancel()
    other.close()
    assert ticks >= 15  # the loop went on while the writer waited
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 1


@sqlite_only
async def test_a_lock_never_released_ends_in_a_clear_error(engine: AsyncEngine) -> None:
    path = _sqlite_path(engine)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    connection = await inline_connector(path, lock_timeout_s=0.2)()
    started = time.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await connection.execute("BEGIN IMMEDIATE")
        assert time.monotonic() - started >= 0.2
    finally:
        await connection.close()
        other.execute("ROLLBACK")
        other.close()
