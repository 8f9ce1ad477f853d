"""Logs: one line per event, JSON on demand, and never the bot token, even when the Bot API
fails in a way that puts its URL into the error."""

from __future__ import annotations

import json
import logging

import aiohttp
from aiogram import Bot
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.context import AppContext
from bot.factory import create_bot
from bot.logs import current_update_id
from bot.redaction import redact
from bot.sandbox import SandboxServer
from bot.services.dispatcher import OutboxDispatcher
from bot.services.sender import PacedSender
from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage
from storage.repositories.outbox import OutboxRepository
from tests.conftest import TEST_TOKEN
from tests.factories import NOW
from tests.ops.conftest import CapturedLog

SECRET = TEST_TOKEN.split(":", 1)[1]


def test_redact_hides_the_token_in_a_bot_api_url() -> None:
    text = f"TooManyRedirects: url='http://127.0.0.1:8081/bot{TEST_TOKEN}/sendMessage'"
    redacted = redact(text)
    assert SECRET not in redacted
    assert "/bot123456789:<redacted>/sendMessage" in redacted


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "outbox row 12 (access, ticket 5) to chat 100: sent at 12:30:15"
    assert redact(text) == text


def test_filter_redacts_arguments_and_tracebacks_of_any_logger(text_log: CapturedLog) -> None:
    try:
        raise aiohttp.InvalidURL(f"http://host/bot{TEST_TOKEN}/getUpdates")
    except aiohttp.InvalidURL:
        logging.getLogger("aiogram.dispatcher").exception(
            "Failed to fetch updates - %s", f"bot{TEST_TOKEN}"
        )
    assert "Failed to fetch updates" in text_log.text
    assert "Traceback" in text_log.text
    assert SECRET not in text_log.text


def test_json_lines_carry_the_update_id(json_log: CapturedLog) -> None:
    token = current_update_id.set(4242)
    try:
        logging.getLogger("bot.test").info(
            "payment %s recorded", 7, extra={"order_id": 3, "payment_id": 7}
        )
    finally:
        current_update_id.reset(token)
    entry = json.loads(json_log.text.strip().splitlines()[-1])
    assert entry["message"] == "payment 7 recorded"
    assert entry["update_id"] == 4242
    assert entry["order_id"] == 3
    assert entry["level"] == "INFO"


def test_scheduler_ticks_are_not_history(text_log: CapturedLog) -> None:
    logging.getLogger("apscheduler.executors.default").info("Running job ...")
    logging.getLogger("apscheduler.executors.default").info("executed successfully")
    assert "Running job" not in text_log.text
    assert "executed successfully" not in text_log.text


async def test_a_failing_bot_api_leaves_no_token_in_logs_or_outbox(
    sandbox: SandboxServer,
    app_context: AppContext,
    session_factory: async_sessionmaker[AsyncSession],
    text_log: CapturedLog,
) -> None:
    settings = app_context.settings.model_copy(update={"telegram_api_url": sandbox.url})
    bot: Bot = create_bot(settings, TEST_TOKEN)
    chats = [501, 502, 503]
    async with session_factory() as session:
        repo = OutboxRepository(session)
        for chat_id in chats:
            sandbox.user(chat_id, first_name=f"U{chat_id}")
            await repo.enqueue(
                kind=OutboxKind.NOTICE,
                dedupe_key=f"test:{chat_id}",
                chat_id=chat_id,
                due_at=NOW,
                now=NOW,
                payload={"text": "Your webinar moved"},
            )
        await session.commit()
    # A proxy in front of the Bot API that redirects in a loop, then one that drops the line.
    sandbox.inject_fault("redirect_loop", methods=["sendMessage"], times=2)
    sandbox.inject_fault("disconnect", methods=["sendMessage"], times=1)
    try:
        dispatcher = OutboxDispatcher(
            app_context, PacedSender(bot, rate_per_s=1000, chat_interval_s=0.001)
        )
        stats = await dispatcher.run_once()
    finally:
        await bot.session.close()

    assert stats.retried == 3
    assert sandbox.stats.faults == 3
    async with session_factory() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    errors = [row.last_error or "" for row in rows]
    assert all(row.status == OutboxStatus.PENDING for row in rows)
    assert any("TooManyRedirects" in error and "<redacted>" in error for error in errors)
    assert not any(SECRET in error for error in errors)
    assert "TooManyRedirects" in text_log.text
    assert "retry in 5 s" in text_log.text
    assert SECRET not in text_log.text
