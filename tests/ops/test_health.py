"""/healthz says the process is up; /readyz says the database answers at the head revision and
Redis answers where configured, else 503 naming what failed."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import FakeClock
from bot.health import Readiness, add_health_routes
from bot.i18n import Translator
from bot.sandbox import SandboxServer
from bot.settings import Settings
from storage.database import create_engine
from storage.migrate import upgrade
from tests.test_migrations import REVISIONS

REVISIONS_FIRST = REVISIONS[0]


@pytest.fixture
async def migrated(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}")
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def _get(readiness: Readiness, path: str) -> tuple[int, dict]:
    web_app = web.Application()
    add_health_routes(web_app, readiness)
    async with TestClient(TestServer(web_app)) as client:
        response = await client.get(path)
        return response.status, await response.json()


async def test_healthz_answers_whatever_the_database(tmp_path: Path) -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        assert await _get(Readiness(engine), "/healthz") == (200, {"ok": True})
    finally:
        await engine.dispose()


async def test_ready_when_the_database_is_at_head(migrated: AsyncEngine) -> None:
    status, body = await _get(Readiness(migrated), "/readyz")
    assert status == 200
    assert body == {"ok": True, "checks": {"database": "ok", "migrations": "ok"}, "failed": []}


async def test_not_ready_when_migrations_are_behind(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await upgrade(engine, REVISIONS_FIRST)
        status, body = await _get(Readiness(engine), "/readyz")
    finally:
        await engine.dispose()
    assert status == 503
    assert body["failed"] == ["migrations"]
    assert REVISIONS_FIRST in body["checks"]["migrations"]


async def test_not_ready_when_the_database_does_not_answer() -> None:
    engine = create_engine("postgresql+asyncpg://nobody:pw-secret-123@127.0.0.1:1/none")
    try:
        status, body = await _get(Readiness(engine), "/readyz")
    finally:
        await engine.dispose()
    assert status == 503
    assert body["failed"] == ["database", "migrations"]
    assert "pw-secret-123" not in str(body)


async def test_not_ready_when_redis_does_not_answer(migrated: AsyncEngine) -> None:
    status, body = await _get(Readiness(migrated, "redis://127.0.0.1:1/0"), "/readyz")
    assert status == 503
    assert body["failed"] == ["redis"]
    assert body["checks"]["database"] == "ok"


async def test_ready_with_redis(migrated: AsyncEngine, redis_url: str) -> None:
    status, body = await _get(Readiness(migrated, redis_url), "/readyz")
    assert status == 200
    assert body["checks"]["redis"] == "ok"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def application_with(
    sandbox: SandboxServer, settings: Settings, clock: FakeClock, translator: Translator
) -> Any:
    """Builds the real application against the sandbox, with settings overridden."""
    from bot.application import BotApplication

    def build(**overrides: Any) -> BotApplication:
        return BotApplication(
            settings.model_copy(update={"telegram_api_url": sandbox.url, **overrides}),
            clock=clock,
            translator=translator,
            run_scheduler=False,
            migrate=True,
        )

    return build


async def test_the_webhook_app_serves_both(application_with: Any) -> None:
    port = _free_port()
    application = application_with(
        webhook_url=f"http://127.0.0.1:{port}",
        webhook_host="127.0.0.1",
        webhook_port=port,
        webhook_secret=SecretStr("health-check-secret-of-32-characters-x"),
    )
    await application.setup()
    try:
        await application.start_webhook()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["ok"] is True
    finally:
        await application.stop()


async def test_polling_serves_them_on_the_ops_port(application_with: Any) -> None:
    port = _free_port()
    application = application_with(ops_port=port)
    await application.setup()
    try:
        await application.start_polling()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert (await response.json())["ok"] is True
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert "webinarpass_" in await response.text()
    finally:
        await application.stop()
