"""Prometheus metrics: every metric the bot exposes is defined here, once.

They live in prometheus-client's default registry (one per process), and ``GET /metrics`` on the
webhook's port serves them. The outbox figures are read from the database when scraped, so they
are the same on every replica: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from storage.repositories.outbox import OutboxRepository

if TYPE_CHECKING:
    from bot.context import AppContext

# Seconds; pre-checkout must be answered within Telegram's 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENESS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)

UPDATES = Counter("webinarpass_updates_total", "Updates handled, by kind.", ["kind"])
UPDATE_SECONDS = Histogram(
    "webinarpass_update_seconds",
    "Time from an update's arrival in the dispatcher to the end of its handling, by kind.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
PRE_CHECKOUT_SECONDS = Histogram(
    "webinarpass_pre_checkout_seconds",
    "Time to answer a pre-checkout query (Telegram fails the payment past 10 s).",
    buckets=LATENCY_BUCKETS,
)
MESSAGES_SENT = Counter(
    "webinarpass_messages_sent_total", "Messages the paced sender delivered to Telegram."
)
TELEGRAM_429 = Counter(
    "webinarpass_telegram_429_total", "429 Too Many Requests answers the paced sender received."
)
SEND_GAVE_UP = Counter(
    "webinarpass_send_gave_up_total",
    "Messages handed back to the outbox after too many 429s or too long a pause.",
)
OUTBOX_DUE = Gauge(
    "webinarpass_outbox_due", "Outbox rows pending and due now (read from the database)."
)
OUTBOX_OLDEST_DUE_AGE = Gauge(
    "webinarpass_outbox_oldest_due_age_seconds",
    "How long the oldest due outbox row has waited (0 when none is due).",
)
REMINDER_LATENESS = Histogram(
    "webinarpass_reminder_lateness_seconds",
    "When a reminder is sent: seconds after the moment it was due.",
    buckets=LATENESS_BUCKETS,
)
# Incremented by the money services (sales, refunds).
PAYMENTS = Counter(
    "webinarpass_payments_total",
    "Successful payments received, by method (stars, stripe, yookassa) and result "
    "(issued, waiting_link, refunding, replay, unknown_order).",
    ["method", "result"],
)
REFUNDS = Counter(
    "webinarpass_refunds_total",
    "Refunds reaching a state: requested, processing, refunded, retrying (no answer), "
    "succeeded (after processing), canceled, failed.",
    ["state"],
)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class UpdateMetricsMiddleware(BaseMiddleware):
    """Outermost on ``dp.update``: counts updates and times them, waiting for a slot included."""

    def __init__(self) -> None:
        # The labelled children per kind, found once (``labels()`` takes a lock and builds a key).
        self._by_kind: dict[str, tuple[Any, Any]] = {}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        kind = event.event_type if isinstance(event, Update) else type(event).__name__
        started = time.perf_counter()
        try:
            return await handler(event, data)
        finally:
            elapsed = time.perf_counter() - started
            children = self._by_kind.get(kind)
            if children is None:
                children = self._by_kind[kind] = (
                    UPDATES.labels(kind),
                    UPDATE_SECONDS.labels(kind),
                )
            children[0].inc()
            children[1].observe(elapsed)
            if kind == "pre_checkout_query":
                PRE_CHECKOUT_SECONDS.observe(elapsed)


async def collect_outbox(app: AppContext) -> None:
    """Read the outbox figures (one indexed query) into their gauges."""
    now = app.clock.now()
    async with app.session_factory() as session:
        due, oldest = await OutboxRepository(session).due_summary(now)
    OUTBOX_DUE.set(due)
    OUTBOX_OLDEST_DUE_AGE.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)


def metrics_handler(app: AppContext) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(_request: web.Request) -> web.Response:
        await collect_outbox(app)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
