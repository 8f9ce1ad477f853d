"""The bot's Bot API session sends one JSON body per call, with the parameters aiogram's form
would carry, and reads answers and errors as aiogram does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import SendMessage
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
)

from bot.telegram_session import BotSession
from tests.conftest import TEST_TOKEN

if TYPE_CHECKING:
    from bot.sandbox import SandboxServer


def _bot(session: AiohttpSession) -> Bot:
    return Bot(
        TEST_TOKEN,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


@pytest.fixture
async def bots(sandbox: SandboxServer) -> AsyncIterator[tuple[Bot, Bot]]:
    api = TelegramAPIServer.from_base(sandbox.url)
    ours, aiograms = _bot(BotSession(api=api)), _bot(AiohttpSession(api=api))
    yield ours, aiograms
    await ours.session.close()
    await aiograms.session.close()


async def _both(sandbox: SandboxServer, bots: tuple[Bot, Bot], method: str, call) -> list[dict]:  # type: ignore[no-untyped-def]
    for bot in bots:
        await call(bot)
    ours, aiograms = sandbox.calls_of(method)[-2:]
    assert ours.ok
    assert aiograms.ok
    return [ours.params, aiograms.params]


async def test_calls_carry_the_parameters_aiograms_form_would(
    sandbox: SandboxServer, bots: tuple[Bot, Bot]
) -> None:
    chat = sandbox.user(4001, first_name="Ada")
    await chat.start()
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Pay", callback_data="pay:1")]]
    )

    session = bots[0].session
    assert isinstance(session, BotSession)
    method = SendMessage(chat_id=4001, text="x", reply_markup=keyboard)
    assert json.loads(session.json_body(bots[0], method) or b"")["reply_markup"]  # one body
    ours, aiograms = await _both(
        sandbox,
        bots,
        "sendMessage",
        lambda bot: bot.send_message(4001, "<b>Hi</b>", reply_markup=keyboard),
    )
    assert ours == aiograms
    assert ours["parse_mode"] == "HTML"
    assert ours["reply_markup"] == {
        "inline_keyboard": [[{"text": "Pay", "callback_data": "pay:1"}]]
    }

    ours, aiograms = await _both(
        sandbox,
        bots,
        "sendInvoice",
        lambda bot: bot.send_invoice(
            4001, "Ticket", "A seat", "order-1", "XTR", [LabeledPrice(label="Seat", amount=5)]
        ),
    )
    assert ours == aiograms


async def test_answers_are_parsed_and_files_still_upload(
    sandbox: SandboxServer, bots: tuple[Bot, Bot]
) -> None:
    chat = sandbox.user(4002, first_name="Bo")
    await chat.start()
    ours = bots[0]
    sent = await ours.send_message(4002, "hello")
    assert isinstance(sent, Message)
    assert (sent.chat.id, sent.text) == (4002, "hello")
    document = await ours.send_document(4002, BufferedInputFile(b"BEGIN:VCALENDAR", "a.ics"))
    assert document.document is not None
    assert document.document.file_name == "a.ics"


async def test_errors_are_aiograms(sandbox: SandboxServer, bots: tuple[Bot, Bot]) -> None:
    with pytest.raises(TelegramBadRequest):
        await bots[0].send_message(999_999_999, "nobody there")
