"""Three real replicas (``python -m bot``, webhook mode) behind nginx on one PostgreSQL database
and one Redis, with the sandbox enforcing Telegram's send limits: a purchase rush and a reminder
fan-out lose nothing and double nothing, the bot's sends stay within the limits, and a replica
stopped with SIGTERM in the middle of the rush drops nothing.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.cluster import Cluster, nginx_binary
from bench.world import (
    access_messages,
    audit,
    buy,
    create_sale,
    prepare_database,
    reminders_of,
)
from bot.sandbox import RateLimit, SandboxServer
from tests.bot.test_redis_replicas import redis_url  # noqa: F401 - the fixture
from tests.conftest import BACKEND

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND != "postgres", reason="replicas share a PostgreSQL database"),
]

BUYERS = 60
REMINDED = 40
FIRST_BUYER = 31_000_000
FIRST_REMINDED = 32_000_000
SEND_METHODS = {
    "sendmessage",
    "senddocument",
    "sendphoto",
    "sendinvoice",
    "editmessagetext",
    "editmessagecaption",
    "editmessagereplymarkup",
}


@pytest.fixture
def nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (.ci/run installs nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light): no load balancer")
    return binary


@pytest.fixture
async def limited_sandbox() -> AsyncIterator[tuple[SandboxServer, str]]:
    """Telegram's limits, enforced: 30 messages a second per bot, about one a second per chat."""
    # A token of its own: the send budget in Redis is keyed by the bot's id, and other runs may
    # share this Redis.
    token = f"{secrets.randbelow(10**9) + 10**9}:CLUSTER-{secrets.token_hex(6)}"
    async with SandboxServer(rate_limit=RateLimit()) as server:
        server.add_bot(token=token, username="webinarpass_bot", first_name="WebinarPass")
        yield server, token
    assert not server.internal_errors, server.internal_errors


def busiest(stamps: list[float], window_s: float = 1.0) -> int:
    """The most sends in any window of ``window_s`` seconds."""
    stamps = sorted(stamps)
    best = start = 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_three_replicas_behind_nginx_lose_nothing_double_nothing_and_keep_the_limits(
    nginx: str,
    postgres_url: str,
    redis_url: str,  # noqa: F811
    limited_sandbox: tuple[SandboxServer, str],
    tmp_path: Path,
) -> None:
    sandbox, token = limited_sandbox
    await prepare_database(postgres_url)
    reminded = list(range(FIRST_REMINDED, FIRST_REMINDED + REMINDED))
    for chat in reminded:
        sandbox.user(chat, first_name="P").started = True
    # Due once the replicas are up: the fan-out overlaps the rush.
    sale = await create_sale(
        postgres_url, seats=BUYERS, reminder_chats=reminded, reminders_due_in_s=25
    )
    cluster = Cluster(
        tmp_path,
        replicas=3,
        token=token,
        api_url=sandbox.url,
        database_url=postgres_url,
        redis_url=redis_url,
        env={"INTAKE_LEASE_S": "5", "LOG_LEVEL": "WARNING"},
    )
    try:
        await cluster.start()
        await sandbox.wait_until(lambda: sandbox.bot().webhook_url == cluster.url, timeout=30)

        async def buyer(n: int) -> None:
            await buy(sandbox, FIRST_BUYER + n, sale.stars_code)

        rush = [asyncio.create_task(buyer(n)) for n in range(BUYERS)]
        # A third of the buyers in, one replica is stopped the way a deploy stops it.
        await sandbox.wait_until(lambda: len(sandbox.charges) >= BUYERS // 3, timeout=90)
        assert await cluster.replicas[1].terminate() == 0, cluster.replicas[1].output()
        await asyncio.gather(*rush)

        def delivered() -> bool:
            buyers_done = all(
                any("rush-pass" in m.body for m in sandbox.messages(FIRST_BUYER + n))
                for n in range(BUYERS)
            )
            return buyers_done and all(reminders_of(sandbox, chat) for chat in reminded)

        await sandbox.wait_until(delivered, timeout=120, message="access and reminders")
        await asyncio.sleep(2)  # anything sent twice would show now
        report = await audit(postgres_url, sandbox, sale)
    finally:
        codes = await cluster.stop()
    assert codes[0] == 0, cluster.output()
    assert codes[2] == 0, cluster.output()

    assert report.charges == BUYERS
    assert report.clean, report
    doubled = {
        chat: sandbox.transcript(chat)
        for chat in range(FIRST_BUYER, FIRST_BUYER + BUYERS)
        if access_messages(sandbox, chat) > 1
    }
    assert report.dup_messages == 0, (report, doubled, cluster.output())
    assert report.reminders_due == REMINDED
    # Each buyer: one access message (the calendar file, the access as its caption), once.
    for n in range(BUYERS):
        files = [m for m in sandbox.messages(FIRST_BUYER + n) if m.document]
        assert len(files) == 1, sandbox.transcript(FIRST_BUYER + n)

    # The limits are the bot's, not a replica's: the sandbox refused nothing.
    sends = [c for c in sandbox.calls if c.method.lower() in SEND_METHODS and c.ok]
    # Telegram's 30/s, replies included (they draw from the same budget as the outbox): at most
    # the budget's rate (28/s) plus its quarter-second burst (7) in any window, give or take what
    # the way to the sandbox shifts into it. A send is stamped when the sandbox gets it, not when
    # the budget let it go, and on two cores shared by three replicas, nginx, PostgreSQL and the
    # sandbox a stalled loop delivers a few at once: 39 in one second seen in CI, 41 and 44 with
    # one more busy process on the machine (the first 11 of the 44 within 0.1 s), where the
    # budget lets at most 35 go. One second takes that jitter; five seconds hold the rate itself
    # (the budget lets 147 go). Per-replica budgets would send three times as many.
    stamps = [c.timestamp for c in sends]
    assert busiest(stamps, 1.0) <= 30 + 8 + 8
    assert busiest(stamps, 5.0) <= 5 * 30 + 8 + 2
    per_chat = Counter(int(c.params["chat_id"]) for c in sends)
    assert sandbox.stats.rate_limited == 0
    # Nothing handled twice, not even by the replica stopped mid-rush (it renews the leases of
    # what it is still handling, and gives back what it had not started): card, invoice, and
    # the access (which confirms the payment) to each buyer, once; one reminder to each
    # reminded chat.
    twice = {
        chat: sandbox.transcript(chat)
        for chat in range(FIRST_BUYER, FIRST_BUYER + BUYERS)
        if per_chat[chat] != 3
    }
    assert not twice, twice
    assert {per_chat[chat] for chat in reminded} == {1}
