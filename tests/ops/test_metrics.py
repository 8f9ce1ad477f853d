"""/metrics: Prometheus text, scraped over HTTP from the routes the webhook app serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.context import AppContext
from bot.ops_routes import add_ops_routes
from bot.sandbox import SandboxServer
from bot.services.dispatcher import OutboxDispatcher
from bot.settings import Settings
from storage.enums import OutboxKind
from storage.repositories.outbox import OutboxRepository
from tests.factories import NOW
from tests.ops.conftest import CapturedLog
from tests.reminders.conftest import FakeBot, fast_sender
from tests.reminders.test_reminders import START, _world
from tests.sales.test_flows import buy, world

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"send_rate_per_s": 1000.0, "send_rate_per_chat_s": 1000.0})


@pytest.fixture
async def scrape(app_context: AppContext) -> AsyncIterator:
    clients: list[TestClient] = []

    async def scrape_once(app: AppContext | None = None) -> Samples:
        web_app = web.Application()
        context = app or app_context
        add_ops_routes(web_app, context, context.session_factory.kw["bind"])
        client = TestClient(TestServer(web_app))
        clients.append(client)
        await client.start_server()
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        samples: Samples = {}
        for family in text_string_to_metric_families(await response.text()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        await client.close()
        return samples

    yield scrape_once
    for client in clients:
        await client.close()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_outbox_backlog_and_age_of_the_oldest_due_row(
    scrape, app_context: AppContext, session: AsyncSession, clock: FakeClock
) -> None:
    repo = OutboxRepository(session)
    for key, due in (("a", NOW - timedelta(minutes=10)), ("b", NOW), ("c", NOW + timedelta(1))):
        await repo.enqueue(
            kind=OutboxKind.NOTICE, dedupe_key=key, chat_id=1, due_at=due, now=NOW, payload={}
        )
    await session.commit()
    samples = await scrape()
    assert value(samples, "webinarpass_outbox_due") == 2
    assert value(samples, "webinarpass_outbox_oldest_due_age_seconds") == 600


async def test_reminder_lateness_is_observed_when_a_reminder_is_sent(
    scrape, app_context: AppContext, session: AsyncSession, clock: FakeClock
) -> None:
    await _world(session, app_context, participants=2, reminder_offsets=[60])
    before = await scrape()
    clock.set(START - timedelta(minutes=55))  # five minutes after the one-hour reminders fell due
    dispatcher = OutboxDispatcher(app_context, fast_sender(FakeBot()))
    assert (await dispatcher.run_until_idle()).sent == 2
    after = await scrape()
    name = "webinarpass_reminder_lateness_seconds"
    assert value(after, f"{name}_count") - value(before, f"{name}_count") == 2
    assert value(after, f"{name}_sum") - value(before, f"{name}_sum") == 2 * 300
    assert (
        value(after, "webinarpass_messages_sent_total")
        - value(before, "webinarpass_messages_sent_total")
        == 2
    )


async def test_a_purchase_shows_in_update_metrics_and_in_the_log_without_secrets(
    scrape,
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session: AsyncSession,
    text_log: CapturedLog,
) -> None:
    before = await scrape(bot_app.app)
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    _card, _invoice, result = await buy(bob, webinar)
    assert result.ok
    # The calendar file, the payment's confirmation and the access as its caption.
    access = await bob.next_message()
    assert "s3cret" in (access.caption or "")
    after = await scrape(bot_app.app)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("webinarpass_updates_total", kind="pre_checkout_query") == 1
    assert delta("webinarpass_updates_total", kind="message") == 2  # /start, the payment
    assert delta("webinarpass_updates_total", kind="callback_query") == 1
    assert delta("webinarpass_pre_checkout_seconds_count") == 1
    assert delta("webinarpass_update_seconds_count", kind="message") == 2
    assert delta("webinarpass_messages_sent_total") >= 1  # the access message, from the outbox

    log = text_log.text
    assert "accepted 100 XTR" in log
    assert "payment 1 of order 1 (100 XTR from user 2001) bought ticket 1" in log
    assert delta("webinarpass_payments_total", method="stars", result="issued") == 1
    assert "(access, ticket 1) to chat 2001: sent" in log
    assert "update_id=" in log
    for secret in ("s3cret", "meet.example.org", "TEST-token-for-the-sandbox"):
        assert secret not in log


async def test_money_counters_are_exposed_for_the_services_to_increment(
    app_context: AppContext,
) -> None:
    web_app = web.Application()
    add_ops_routes(web_app, app_context, app_context.session_factory.kw["bind"])
    async with TestClient(TestServer(web_app)) as client:
        text = await (await client.get("/metrics")).text()
    assert "# TYPE webinarpass_payments_total counter" in text
    assert "# TYPE webinarpass_refunds_total counter" in text
