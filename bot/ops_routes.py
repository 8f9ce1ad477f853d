"""The operator's HTTP routes on the webhook's aiohttp app: one call adds them all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bot.health import Readiness, add_health_routes
from bot.metrics import metrics_handler

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from bot.context import AppContext


def add_ops_routes(web_app: web.Application, app: AppContext, engine: AsyncEngine) -> None:
    """``/healthz``, ``/readyz``, ``/metrics``."""
    add_health_routes(web_app, Readiness(engine, app.settings.redis_url))
    web_app.router.add_get("/metrics", metrics_handler(app))
