"""With REDIS_URL set, wizard state lives in Redis: a conversation survives a replica hop."""

from __future__ import annotations

import os
import secrets

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.i18n import Translator
from bot.sandbox import SandboxServer
from bot.settings import Settings
from tests.conftest import OWNER_ID

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _redis_available() -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except OSError:
        return False
    finally:
        await client.aclose()


async def require_redis() -> str:
    """Redis's URL, or the test is skipped (failed, with REQUIRE_REDIS set, as in CI)."""
    if not await _redis_available():
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail(f"Redis is required (REQUIRE_REDIS) but not reachable at {REDIS_URL}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
async def redis_url() -> str:
    return await require_redis()


async def replica(
    settings: Settings, sandbox: SandboxServer, engine: AsyncEngine, clock: FakeClock
) -> BotApplication:
    application = BotApplication(
        settings.model_copy(update={"telegram_api_url": sandbox.url}),
        clock=clock,
        translator=Translator(),
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    await application.start_polling()
    return application


async def test_a_wizard_continues_on_another_replica(
    sandbox: SandboxServer,
    settings: Settings,
    engine: AsyncEngine,
    clock: FakeClock,
    redis_url: str,
) -> None:
    from redis.asyncio import Redis

    shared = settings.model_copy(update={"redis_url": redis_url})
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    first = await replica(shared, sandbox, engine, clock)
    try:
        await olga.command("/neworg")
        await olga.next_message()
        assert "Step 1 of 5" in (await olga.next_message()).text
        name = f"Replica {secrets.token_hex(3)}"
        await olga.send(name)
        assert "Step 2 of 5" in (await olga.next_message()).text
    finally:
        await first.stop()

    second = await replica(shared, sandbox, engine, clock)
    try:
        # The second replica knows where Olga is in the wizard and what she already answered.
        await olga.send("team@example.org")
        language = await olga.next_message()
        assert "Step 3 of 5" in language.text
        await olga.press(language, text="English")
        currency = await olga.next_message()
        await olga.press(currency, text="USD")
        zones = await olga.next_message()
        await olga.press(zones, text="UTC")
        assert name in (await olga.next_message()).text
    finally:
        await second.stop()
        client = Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"fsm:*{OWNER_ID}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
