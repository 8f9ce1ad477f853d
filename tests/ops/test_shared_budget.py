"""One send budget for the whole bot: with Redis, replicas share Telegram's limits.

The sandbox enforces Telegram's limits and answers 429 past them; it is set a little looser
than the bot's own pace so that only a budget that is *not* shared can trip it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.sandbox import RateLimit, SandboxServer
from bot.services.outbox import Outgoing
from bot.services.send_budget import LocalBudget, RedisBudget, SendBudget
from bot.services.sender import PacedSender, ReplyBudgetMiddleware
from tests.bot.test_redis_replicas import require_redis
from tests.conftest import TEST_TOKEN

RATE = 20.0
REPLICAS = 3


@pytest.fixture
async def limited_sandbox() -> AsyncIterator[SandboxServer]:
    limit = RateLimit(
        global_per_s=RATE * 1.1, global_burst=6, per_chat_per_s=1.25, per_chat_burst=1
    )
    async with SandboxServer(rate_limit=limit, record_calls=False) as server:
        server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
        yield server


def _budget(redis_url: str, prefix: str) -> RedisBudget:
    from redis.asyncio import Redis

    return RedisBudget(
        Redis.from_url(redis_url),
        bot_id=int(TEST_TOKEN.split(":")[0]),
        rate_per_s=RATE,
        chat_interval_s=1.0,
        prefix=prefix,
        owns_client=True,
    )


async def test_replicas_on_one_redis_stay_within_telegrams_limits(
    limited_sandbox: SandboxServer,
    redis_url: str,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    chats = list(range(7001, 7013))
    for chat_id in chats:
        limited_sandbox.user(chat_id, first_name=f"U{chat_id}").started = True
    senders: list[PacedSender] = []
    bots: list[Bot] = []
    for _ in range(REPLICAS):
        bot = Bot(
            TEST_TOKEN,
            session=AiohttpSession(api=TelegramAPIServer.from_base(limited_sandbox.url)),
        )
        bots.append(bot)
        senders.append(PacedSender(bot, budget=_budget(redis_url, prefix)))
    try:
        # Every replica writes to every chat: alone, each would send 3 messages a chat at once.
        await asyncio.gather(
            *(
                sender.send(chat_id, Outgoing(text=f"from replica {index}"))
                for index, sender in enumerate(senders)
                for chat_id in chats
            )
        )
    finally:
        for sender, bot in zip(senders, bots, strict=True):
            await sender.budget.close()
            await bot.session.close()
    assert sum(sender.stats.sent for sender in senders) == REPLICAS * len(chats)
    assert limited_sandbox.stats.rate_limited == 0
    assert sum(sender.stats.retry_after for sender in senders) == 0
    for chat_id in chats:
        assert len(limited_sandbox.messages(chat_id)) == REPLICAS


async def test_a_429_seen_by_one_replica_pauses_the_others(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    first, second = _budget(redis_url, prefix), _budget(redis_url, prefix)
    try:
        await first.pause(7001, 30)
        # The other replica, asking for another chat, is told to wait out the pause.
        keys = list(second._keys(7002))
        args = [second.emission_us, second.tolerance_us, second.chat_interval_us]
        wait_us = int(await second._acquire(keys=keys, args=args))
        assert wait_us > 25 * 1_000_000
    finally:
        await first.close()
        await second.close()


async def test_without_a_pause_the_budget_admits_a_burst_then_paces(
    redis_url: str,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    budget = _budget(redis_url, prefix)
    keys = [f"{budget.prefix}:global", f"{budget.prefix}:chat:{{}}", f"{budget.prefix}:pause"]
    args = [budget.emission_us, budget.tolerance_us, budget.chat_interval_us]
    try:
        answers = [
            int(await budget._acquire(keys=[keys[0], keys[1].format(n), keys[2]], args=args))
            for n in range(10)
        ]
    finally:
        await budget.close()
    # A quarter second's burst at 20/s is 5 messages; the next ones are told to wait.
    assert answers[:5] == [0] * 5
    assert all(answer > 0 for answer in answers[5:])


@pytest.fixture(params=["local", "redis"])
async def budget(request: pytest.FixtureRequest) -> AsyncIterator[SendBudget]:
    if request.param == "local":
        yield LocalBudget(30.0, 1.0)
        return
    shared = _budget(await require_redis(), f"test:{uuid.uuid4().hex}")
    yield shared
    await shared.close()


async def test_replies_use_a_chats_short_burst_and_no_more(budget: SendBudget) -> None:
    """A fast buyer's card, invoice and confirmation go at once (Telegram allows a chat a short
    burst); a fourth reply within the second waits its turn, and the chat's next background
    message (the access) waits for the pace after all of them."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = []
    for _ in range(4):
        await budget.acquire(7100, reply=True)
        waited.append(loop.time() - started)
    assert max(waited[:3]) < 0.5
    assert 0.7 < waited[3] < 2.0
    await budget.acquire(7100)
    assert loop.time() - started > 3.5  # four messages' pace: the background one is the fifth
    # Another chat is not held up by this one.
    other = loop.time()
    await budget.acquire(7101)
    assert loop.time() - other < 0.5


async def test_a_fast_buyers_replies_and_access_stay_within_a_chats_limit(
    budget: SendBudget,
) -> None:
    """Against the sandbox's model of Telegram (3 at once, then 1 a second per chat): replies as
    fast as a buyer can tap, and the outbox's message after them, draw no 429."""
    async with SandboxServer(rate_limit=RateLimit()) as server:
        server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
        await server.user(7200, first_name="Fast").start()
        bot = Bot(TEST_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(server.url)))
        bot.session.middleware(ReplyBudgetMiddleware(budget))
        try:
            for n in range(4):
                await bot.send_message(7200, f"reply {n}")
            await PacedSender(bot, budget=budget).send(7200, Outgoing(text="access"))
        finally:
            await bot.session.close()
        assert server.stats.rate_limited == 0
        assert [m.text for m in server.messages(7200)][-5:] == [
            "reply 0",
            "reply 1",
            "reply 2",
            "reply 3",
            "access",
        ]
