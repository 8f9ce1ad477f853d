"""The durable intake in-process: the real bot on the sandbox, the real database.

Every update is stored before it is acknowledged, handled once even when Telegram sends it
again, retried when its handler fails (a database error in the payment path included), and
parked with an alert to the bot's owners after its last attempt. Webhook mode checks its secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from pydantic import SecretStr
from sqlalchemy import event, exc, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.i18n import Translator
from bot.priority import Priority
from bot.sandbox import SandboxServer
from bot.settings import Settings, WebhookSecretError, require_webhook_secret
from storage.enums import InboundStatus, OutboxKind
from storage.models import InboundUpdate, OutboxMessage, Payment, Ticket, Webinar
from storage.pool import connection_priority
from tests.conftest import OWNER_ID
from tests.factories import make_org, make_webinar

STARS_BUTTON = "⭐ Paga con Telegram Stars: 100 ⭐"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A sender that does not make tests wait a second per chat."""
    return settings.model_copy(update={"send_rate_per_s": 1000.0, "send_rate_per_chat_s": 1000.0})


async def world(session: AsyncSession) -> Webinar:
    org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
    webinar = await make_webinar(session, org, price_stars=100, capacity=20)
    await session.commit()  # one SQLite connection: let the bot write
    return webinar


async def rows(session: AsyncSession, model: type, *where: Any) -> list[Any]:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    found = list((await session.scalars(statement)).all())
    await session.commit()
    return found


async def test_an_update_sent_again_is_handled_once(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    ann = sandbox.user(5001, first_name="Ann", language_code="en")
    await ann.command("/help")
    await ann.next_message()
    await ann.replay_last_update()
    await ann.expect_silence(0.5)
    for _ in range(250):  # the done mark is written right after the reply, batched
        (stored,) = await rows(session, InboundUpdate)
        if stored.status == InboundStatus.DONE:
            break
        await asyncio.sleep(0.02)
    assert (stored.kind, stored.attempts, stored.status) == ("message", 1, InboundStatus.DONE)
    assert stored.payload["message"]["text"] == "/help"


async def test_the_polling_task_runs_with_a_checkouts_urgency(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    """A pre-checkout query comes in through the polling task: the event loop wakes that task
    ahead of the updates in hand (bot.priority.UrgentFirstLoop), while each update is handled,
    and its batch stored, at its own urgency."""
    intake = bot_app.intake
    seen: list[tuple[str, int]] = []
    accept = intake.accept

    async def accept_and_note(raws: list[dict[str, Any]]) -> int:
        seen.append(("poll", connection_priority.get()))
        return await accept(raws)

    intake.accept = accept_and_note  # type: ignore[method-assign]

    async def note(handler: Any, event: Any, data: dict[str, Any]) -> Any:
        seen.append(("handler", connection_priority.get()))
        return await handler(event, data)

    bot_app.dispatcher.update.outer_middleware(note)
    ann = sandbox.user(5002, first_name="Ann", language_code="en")
    await ann.command("/help")
    await ann.next_message()
    assert seen == [("poll", Priority.CHECKOUT), ("handler", Priority.OTHER)]


async def test_polling_waits_after_a_batch_so_that_the_next_updates_come_together(
    sandbox: SandboxServer, bot_app: BotApplication, engine: AsyncEngine
) -> None:
    """A store is one transaction whatever its batch's size: after a batch, polling waits a
    moment (8 ms on SQLite, where a store's commit is dear; none on PostgreSQL) before asking
    for the next, and what arrived meanwhile is stored in one statement."""
    intake = bot_app.intake
    assert intake.batch_wait_s == (0.008 if engine.dialect.name == "sqlite" else 0.0)
    intake.batch_wait_s = 0.5
    stores: list[int] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, params: Any, *_args: Any) -> None:
        if statement.startswith("INSERT INTO inbound_updates"):
            stores.append(len(params) // 10)  # ten values per row

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        ann = sandbox.user(5003, first_name="Ann", language_code="en")
        await ann.command("/help")
        await ann.next_message()  # handled while polling waits
        others = [sandbox.user(5010 + n, first_name="Bo", language_code="en") for n in range(3)]
        for other in others:
            await other.command("/help")
        for other in others:
            await other.next_message()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
    assert stores == [1, 3]


def test_the_batch_wait_is_a_setting(settings: Settings, engine: AsyncEngine) -> None:
    application = BotApplication(
        settings.model_copy(update={"intake_batch_wait_ms": 7}), engine=engine, migrate=False
    )
    application.engine = engine
    assert application._batch_wait_s() == 0.007
    application.settings = settings
    assert application._batch_wait_s() == (0.008 if engine.dialect.name == "sqlite" else 0.0)


class FailOnce:
    """A real database error on the next ``INSERT INTO payments`` (the engine's own event hook:
    SQLAlchemy raises it exactly where a dropped connection or a full disk would)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.fired = 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PAYMENTS") and not self.fired:
            self.fired += 1
            raise exc.OperationalError(statement, {}, RuntimeError("disk I/O error (injected)"))

    def __enter__(self) -> FailOnce:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


async def test_a_database_error_in_the_payment_path_is_retried_not_skipped(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session: AsyncSession,
    engine: AsyncEngine,
    clock: FakeClock,
) -> None:
    webinar = await world(session)
    bob = sandbox.user(5002, first_name="Bob", language_code="en")
    await bob.command("/start", f"w_{webinar.code}")
    card = await bob.next_message()
    await bob.press(card, text=STARS_BUTTON)
    invoice = await bob.next_message()
    with FailOnce(engine) as failure:
        assert (await bob.pay(invoice)).ok
        apology = await bob.next_message()
        assert failure.fired == 1
    # Not "try again": that would make a buyer pay twice.
    assert "do not pay again" in apology.text
    assert await rows(session, Payment) == []
    # The apology goes out from the error handler; the intake records the failure right after.
    for _ in range(200):
        (payment_update,) = [
            stored
            for stored in await rows(session, InboundUpdate, InboundUpdate.kind == "message")
            if "successful_payment" in stored.payload["message"]
        ]
        if payment_update.last_error is not None:
            break
        await asyncio.sleep(0.02)
    assert (payment_update.status, payment_update.attempts) == (InboundStatus.PENDING, 1)
    assert payment_update.last_error == "sqlalchemy.exc.OperationalError"  # no personal data

    clock.advance(timedelta(seconds=2))  # the first back-off
    bot_app.intake.wake()
    # The calendar file, the payment's confirmation and the access as its caption.
    access = await bob.next_message()
    assert "Pagamento ricevuto" in (access.caption or "")
    assert "s3cret" in (access.caption or "")
    assert len(await rows(session, Payment)) == 1
    assert len(await rows(session, Ticket)) == 1


async def test_a_button_handled_again_too_late_for_its_answer_still_sends_the_invoice(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session: AsyncSession,
    clock: FakeClock,
) -> None:
    """The retry's ``answerCallbackQuery`` gets "query is too old" (Telegram answers a button
    once, for about 15 s): the invoice the buyer asked for goes out all the same. The first
    attempt's apology comes as a message: the button was answered already, so an alert would
    be refused and the buyer would hear nothing."""
    webinar = await world(session)
    cleo = sandbox.user(5004, first_name="Cleo", language_code="en")
    await cleo.command("/start", f"w_{webinar.code}")
    card = await cleo.next_message()
    sandbox.faults.fail_next("sendInvoice", status=502)  # after the button was answered
    await cleo.press(card, text=STARS_BUTTON)
    for _ in range(200):
        (pressed,) = await rows(session, InboundUpdate, InboundUpdate.kind == "callback_query")
        if pressed.last_error is not None:
            break
        await asyncio.sleep(0.02)
    assert (pressed.status, pressed.attempts) == (InboundStatus.PENDING, 1)
    apology = await cleo.next_message()
    assert "Sorry, something went wrong" in (apology.text or "")

    clock.advance(timedelta(seconds=2))  # the first back-off
    bot_app.intake.wake()
    invoice = await cleo.next_message()
    assert invoice.invoice is not None
    for _ in range(200):
        (pressed,) = await rows(session, InboundUpdate, InboundUpdate.kind == "callback_query")
        if pressed.status == InboundStatus.DONE:
            break
        await asyncio.sleep(0.02)
    assert (pressed.status, pressed.attempts) == (InboundStatus.DONE, 2)
    # The retry's own answer was refused, and the handler went on; no apology was tried as an
    # alert.
    answers = [c for c in sandbox.calls if c.method == "answerCallbackQuery"]
    assert [c.params.get("text") for c in answers if not c.ok] == [None]
    assert not any(c.params.get("show_alert") for c in answers)


async def test_an_update_that_keeps_failing_is_parked_and_the_owners_are_told(
    sandbox: SandboxServer,
    settings: Settings,
    engine: AsyncEngine,
    clock: FakeClock,
    session: AsyncSession,
) -> None:
    application = BotApplication(
        settings.model_copy(update={"telegram_api_url": sandbox.url, "intake_max_attempts": 2}),
        clock=clock,
        translator=Translator(),
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    broken = Router(name="broken")

    @broken.message(Command("explode"))
    async def explode(message: Message) -> None:
        raise RuntimeError(f"a bug that quotes {message.text}")

    application.dispatcher.sub_routers.insert(0, broken)
    broken._parent_router = application.dispatcher
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="ru")
    await owner.command("/help")  # the owner's language is known to the bot from here on
    ivan = sandbox.user(5003, first_name="Ivan", language_code="en")
    await application.start_polling()
    try:
        await owner.next_message()
        await ivan.command("/explode")
        assert "something went wrong" in (await ivan.next_message()).text
        clock.advance(timedelta(seconds=2))
        application.intake.wake()
        alert = await owner.next_message()
        assert "отложено" in alert.text
        assert "message" in alert.text
        await ivan.expect_silence(0.2)  # one apology, not one per attempt
    finally:
        await application.stop()
    (parked,) = await rows(session, InboundUpdate, InboundUpdate.status == InboundStatus.PARKED)
    assert parked.attempts == 2
    assert parked.last_error == "builtins.RuntimeError"
    assert str(parked.update_id) in alert.text
    assert "Ivan" not in alert.text
    assert "explode" not in alert.text
    notices = await rows(session, OutboxMessage, OutboxMessage.kind == OutboxKind.NOTICE)
    assert [n.chat_id for n in notices] == [OWNER_ID]


# -- webhook mode --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [None, "", "short", "x" * 31, "a" * 40 + "!", "é" * 40, "y" * 257],
)
def test_webhook_mode_needs_a_strong_secret(settings: Settings, secret: str | None) -> None:
    webhook = settings.model_copy(
        update={
            "webhook_url": "https://bot.example.org",
            "webhook_secret": None if secret is None else SecretStr(secret),
        }
    )
    with pytest.raises(WebhookSecretError, match="WEBHOOK_SECRET") as raised:
        require_webhook_secret(webhook)
    assert "secrets.token_urlsafe(32)" in str(raised.value)


def test_a_generated_secret_is_accepted(settings: Settings) -> None:
    secret = secrets.token_urlsafe(32)
    webhook = settings.model_copy(
        update={"webhook_url": "https://bot.example.org", "webhook_secret": SecretStr(secret)}
    )
    assert require_webhook_secret(webhook) == secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def webhook_app(
    sandbox: SandboxServer, settings: Settings, engine: AsyncEngine, clock: FakeClock
) -> AsyncIterator[BotApplication]:
    port = free_port()
    application = BotApplication(
        settings.model_copy(
            update={
                "telegram_api_url": sandbox.url,
                "webhook_url": f"http://127.0.0.1:{port}",
                "webhook_host": "127.0.0.1",
                "webhook_port": port,
                "webhook_secret": SecretStr(secrets.token_urlsafe(32)),
            }
        ),
        clock=clock,
        translator=Translator(),
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    await application.start_webhook()
    yield application
    await application.stop()


async def test_a_webhook_update_is_stored_then_answered(
    sandbox: SandboxServer, webhook_app: BotApplication, session: AsyncSession
) -> None:
    cleo = sandbox.user(5004, first_name="Cleo", language_code="en")
    await cleo.command("/help")
    assert "/my" in (await cleo.next_message()).text
    (stored,) = await rows(session, InboundUpdate)
    assert stored.kind == "message"


async def test_a_wrong_webhook_secret_is_refused_and_not_logged(
    webhook_app: BotApplication, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    settings = webhook_app.settings
    url = f"http://127.0.0.1:{settings.webhook_port}{settings.webhook_path}"
    forged = {
        "update_id": 77,
        "message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}},
    }
    wrong = "w" * 40
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": wrong}):
            async with http.post(url, json=forged, headers=headers) as response:
                assert response.status == 401
    assert await rows(session, InboundUpdate) == []
    assert "wrong secret" in caplog.text
    assert wrong not in caplog.text
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() not in caplog.text


async def test_a_malformed_webhook_body_is_refused_and_nothing_is_stored(
    webhook_app: BotApplication, session: AsyncSession
) -> None:
    """Not JSON, not an object, or no ``update_id``: 400 (Telegram's own pushes never look like
    that), and nothing is stored."""
    settings = webhook_app.settings
    assert settings.webhook_secret is not None
    url = f"http://127.0.0.1:{settings.webhook_port}{settings.webhook_path}"
    headers = {"X-Telegram-Bot-Api-Secret-Token": settings.webhook_secret.get_secret_value()}
    async with aiohttp.ClientSession() as http:
        for body in (b"{not json", b"[1, 2]", b'"an update"', b"{}"):
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 400, body
    assert await rows(session, InboundUpdate) == []
