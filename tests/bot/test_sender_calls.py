"""The paced sender's calls through the bot's real Bot API session and the sandbox: the same
parameters as aiogram's own client sends, answers left unparsed, aiogram's errors, and request
middlewares that still see every call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendDocument, SendMessage
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

from bot import telegram_session
from bot.factory import BOT_DEFAULTS
from bot.sandbox.ratelimit import RateLimit
from bot.services.outbox import Outgoing
from bot.services.send_budget import LocalBudget
from bot.services.sender import PacedSender, ReplyBudgetMiddleware
from bot.telegram_session import BotSession, response_model
from tests.conftest import TEST_TOKEN

if TYPE_CHECKING:
    from aiogram.methods import TelegramMethod

    from bot.sandbox import SandboxServer

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="Join", url="https://meet.example.org/r")]]
)
CALENDAR = b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"


class Seen(BaseRequestMiddleware):
    """Every call a request middleware sees, and what it got back."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def __call__(self, make_request, bot: Bot, method: TelegramMethod[Any]) -> Any:  # type: ignore[no-untyped-def,override]
        result = await make_request(bot, method)
        self.calls.append((method.__api_method__, result))
        return result


def _bot(session: AiohttpSession) -> Bot:
    return Bot(TEST_TOKEN, session=session, default=BOT_DEFAULTS)  # as the running bot has them


@pytest.fixture
async def bot(sandbox: SandboxServer) -> AsyncIterator[Bot]:
    bot = _bot(BotSession(api=TelegramAPIServer.from_base(sandbox.url)))
    yield bot
    await bot.session.close()


def _sender(bot: Bot, **options: Any) -> PacedSender:
    return PacedSender(bot, rate_per_s=10_000, chat_interval_s=0.001, **options)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The answer models the session builds (``Response[Message]`` for a read answer)."""
    seen: list[Any] = []

    def counting(returning: Any) -> Any:
        seen.append(returning)
        return response_model(returning)

    monkeypatch.setattr(telegram_session, "response_model", counting)
    return seen


async def test_sends_leave_answers_unparsed_and_middlewares_see_them(
    sandbox: SandboxServer, bot: Bot, built: list[Any]
) -> None:
    await sandbox.user(4101, first_name="Ann").start()
    seen = Seen()
    bot.session.middleware(ReplyBudgetMiddleware(LocalBudget(10_000, 0.001)))
    bot.session.middleware(seen)
    sender = _sender(bot)

    assert await sender.send(4101, Outgoing(text="<b>Your link</b>", reply_markup=KEYBOARD)) is None
    document = Outgoing(document=("webinar.ics", CALENDAR), caption="Add it")
    assert await sender.send_rendered(4101, _returning(document)) is None

    assert built == []  # no Response[Message], hence no Message, was built
    assert seen.calls == [("sendMessage", None), ("sendDocument", None)]
    text, calendar = sandbox.messages(4101)[-2:]
    assert (text.text, calendar.caption) == ("<b>Your link</b>", "Add it")
    assert calendar.document is not None
    assert sandbox.file(calendar.document["file_id"]).data == CALENDAR
    assert sender.stats.sent == 2


def _returning(message: Outgoing) -> Any:
    async def render() -> Outgoing:
        return message

    return render


async def test_sends_carry_the_parameters_aiograms_client_would(
    sandbox: SandboxServer, bot: Bot
) -> None:
    """What the sender sends is what ``bot.send_message``/``send_document`` with aiogram's own
    session sends: the bot's defaults (parse mode, link previews) and the keyboard included."""
    await sandbox.user(4102, first_name="Ben").start()
    aiograms = _bot(AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
    try:
        await _sender(bot).send(4102, Outgoing(text="<b>Hi</b>", reply_markup=KEYBOARD))
        await aiograms(SendMessage(chat_id=4102, text="<b>Hi</b>", reply_markup=KEYBOARD))
        document = Outgoing(document=("a.ics", CALENDAR), caption="<i>c</i>", reply_markup=KEYBOARD)
        await _sender(bot).send(4102, document)
        await aiograms(
            SendDocument(
                chat_id=4102,
                document=BufferedInputFile(CALENDAR, "a.ics"),
                caption="<i>c</i>",
                reply_markup=KEYBOARD,
            )
        )
    finally:
        await aiograms.session.close()
    ours, theirs = (call.params for call in sandbox.calls_of("sendMessage")[-2:])
    assert ours == theirs
    assert ours["parse_mode"] == "HTML"
    ours, theirs = (dict(call.params) for call in sandbox.calls_of("sendDocument")[-2:])
    for params in (ours, theirs):  # the upload's part is named at random, by aiogram
        params.pop(params.pop("document").removeprefix("attach://"))
    assert ours == theirs
    assert ours["parse_mode"] == "HTML"  # a caption is HTML too: the access message is one


async def test_errors_are_aiograms(sandbox: SandboxServer, bot: Bot) -> None:
    sender = _sender(bot)
    blocked = sandbox.user(4103, first_name="Cat")
    await blocked.start()
    blocked.block()
    with pytest.raises(TelegramForbiddenError) as forbidden:
        await sender.send(4103, Outgoing(text="hello"))
    assert "blocked" in forbidden.value.message
    with pytest.raises(TelegramBadRequest):
        await sender.send(999_999_999, Outgoing(document=("a.ics", CALENDAR)))
    await sandbox.user(4104, first_name="Dan").start()
    sandbox.faults.fail_next("sendMessage", status=502)
    with pytest.raises(TelegramServerError):
        await sender.send(4104, Outgoing(text="hello"))


async def test_a_429_carries_retry_after() -> None:
    from bot.sandbox import SandboxServer

    async with SandboxServer(rate_limit=RateLimit(per_chat_per_s=0.01, per_chat_burst=1)) as server:
        server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
        await server.user(4105, first_name="Eve").start()
        bot = _bot(BotSession(api=TelegramAPIServer.from_base(server.url)))
        sender = _sender(bot, max_429_attempts=1)
        try:
            await sender.send(4105, Outgoing(text="first"))
            with pytest.raises(TelegramRetryAfter) as raised:
                await sender.send(4105, Outgoing(text="second"))
        finally:
            await bot.session.close()
    assert raised.value.retry_after >= 1
    assert sender.stats.retry_after == 1
