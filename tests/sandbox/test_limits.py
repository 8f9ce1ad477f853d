"""Limits and faults: injected 5xx answers and slow answers, and the simulated round trip."""

from __future__ import annotations

import asyncio

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramNetworkError, TelegramServerError

from bot.sandbox import SandboxServer


async def test_an_injected_5xx_answers_the_next_call_of_that_method_only(
    server: SandboxServer, bot: Bot
) -> None:
    server.faults.fail_next("getMyName", status=502)
    assert (await bot.get_me()).username == "webinarpass_bot"
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.get_my_name()
    assert (await bot.get_my_name()).name == "WebinarPass"
    [failed, answered] = server.calls_of("getMyName")
    assert (failed.error, answered.ok) == ("502 Bad Gateway", True)


async def test_a_slow_answer_runs_into_the_clients_timeout(server: SandboxServer, bot: Bot) -> None:
    server.faults.delay_next("getMe", seconds=30)
    with pytest.raises(TelegramNetworkError):
        await bot.get_me(request_timeout=1)
    server.faults.clear()
    assert (await bot.get_me()).is_bot


async def test_the_round_trip_holds_every_answer(server: SandboxServer, bot: Bot) -> None:
    server.rtt_ms = 60_000
    call = asyncio.create_task(bot.get_me())
    await server.wait_until(lambda: server.stats.requests == 1)
    await asyncio.sleep(0.05)
    # The request arrived; its answer waits for the round trip.
    assert not call.done()
    assert server.calls == []
    call.cancel()
    server.rtt_ms = 0
    assert (await bot.get_me()).is_bot


def test_the_round_trip_defaults_to_none() -> None:
    assert SandboxServer().rtt_ms == 0
    assert SandboxServer(rtt_ms=80).rtt_ms == 80
