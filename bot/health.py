"""Liveness and readiness, served by the webhook's aiohttp app.

``GET /healthz``: the process is up and its event loop answers. A load balancer or an
orchestrator restarts a replica that fails it.

``GET /readyz``: the replica can do its work: the database answers, its schema is at the head
revision this code ships (a replica started before ``migrate`` ran, or a database restored from an
old backup, would fail on the first write), and Redis answers where ``REDIS_URL`` is set. 200
with every check when all pass; 503 with the same JSON body, ``failed`` naming the checks that did
not, otherwise. A load balancer sends no traffic to a replica that is not ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import text

from bot.redaction import redact_error
from storage.migrate import current_revision, head_revision

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0


class Readiness:
    """The checks behind ``/readyz``; each returns None when it passes, else what is wrong."""

    def __init__(self, engine: AsyncEngine, redis_url: str | None = None) -> None:
        self.engine = engine
        self.redis_url = redis_url
        self._redis: Redis | None = None

    async def check_database(self) -> str | None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return None

    async def check_migrations(self) -> str | None:
        current, head = await current_revision(self.engine), head_revision()
        if current != head:
            return f"database at revision {current or 'none'}, code expects {head}"
        return None

    async def check_redis(self) -> str | None:
        if self._redis is None:
            from redis.asyncio import Redis

            assert self.redis_url is not None
            self._redis = Redis.from_url(
                self.redis_url,
                socket_connect_timeout=CHECK_TIMEOUT_S,
                socket_timeout=CHECK_TIMEOUT_S,
            )
        await self._redis.ping()
        return None

    def checks(self) -> dict[str, Callable[[], Awaitable[str | None]]]:
        checks = {"database": self.check_database, "migrations": self.check_migrations}
        if self.redis_url:
            checks["redis"] = self.check_redis
        return checks

    async def run(self) -> tuple[bool, dict[str, object]]:
        results: dict[str, str] = {}
        for name, check in self.checks().items():
            try:
                problem = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            except TimeoutError:
                problem = f"no answer within {CHECK_TIMEOUT_S:g} s"
            except Exception as error:
                problem = redact_error(error)
            results[name] = "ok" if problem is None else problem
            if name == "database" and problem is not None:
                results["migrations"] = "skipped: the database does not answer"
                break
        failed = [name for name, result in results.items() if result != "ok"]
        return not failed, {"ok": not failed, "checks": results, "failed": failed}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def readyz_handler(readiness: Readiness) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def readyz(_request: web.Request) -> web.Response:
        ready, body = await readiness.run()
        if not ready:
            log.warning("not ready: %s", body["checks"])
        return web.json_response(body, status=200 if ready else 503)

    return readyz


def add_health_routes(web_app: web.Application, readiness: Readiness) -> None:
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz_handler(readiness))

    async def close(_app: web.Application) -> None:
        await readiness.close()

    web_app.on_cleanup.append(close)
