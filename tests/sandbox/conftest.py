"""Fixtures for the sandbox Bot API server tests: a server, a real aiogram Bot, a dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.sandbox import SandboxServer

TOKEN = "123456:TEST"


class _FastSession(AiohttpSession):
    """aiogram's session without the 250 ms grace sleep on close (loopback needs none)."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def make_bot(server: SandboxServer, token: str = TOKEN, **kwargs: Any) -> Bot:
    """A real aiogram Bot talking to the sandbox."""
    session = _FastSession(api=TelegramAPIServer.from_base(server.url))
    return Bot(token, session=session, **kwargs)


@pytest.fixture
async def server() -> AsyncIterator[SandboxServer]:
    sandbox = SandboxServer(precheckout_timeout=1.0)
    await sandbox.start()
    sandbox.add_bot(token=TOKEN, username="webinarpass_bot", first_name="WebinarPass")
    yield sandbox
    await sandbox.stop()
    assert not sandbox.internal_errors, sandbox.internal_errors


@pytest.fixture
async def bot(server: SandboxServer) -> AsyncIterator[Bot]:
    client = make_bot(server)
    yield client
    await client.session.close()


@pytest.fixture
def run_polling(
    bot: Bot,
) -> Callable[[Router], contextlib.AbstractAsyncContextManager[Dispatcher]]:
    """``async with run_polling(router) as dp:`` runs ``dp.start_polling`` in a task."""

    @contextlib.asynccontextmanager
    async def runner(router: Router) -> AsyncIterator[Dispatcher]:
        dp = Dispatcher()
        dp.include_router(router)
        started = asyncio.Event()
        dp.startup.register(started.set)
        task = asyncio.create_task(
            dp.start_polling(bot, handle_signals=False, close_bot_session=False, polling_timeout=5)
        )
        await asyncio.wait_for(started.wait(), 5)
        try:
            yield dp
        finally:
            # Cancelling start_polling() would leave its inner polling task running.
            await dp.stop_polling()
            await asyncio.wait_for(task, 5)

    return runner
