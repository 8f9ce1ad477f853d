"""The bot's Bot API session sends one JSON body per call, with the parameters aiogram's form
would carry, and reads answers and errors as aiogram does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramUnauthorizedError,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    AnswerPreCheckoutQuery,
    BanChatMember,
    EditMessageText,
    RestrictChatMember,
    SendInvoice,
    SendMessage,
    SetMyCommands,
    TelegramMethod,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    BufferedInputFile,
    ChatPermissions,
    FSInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LabeledPrice,
    Message,
    MessageEntity,
)

from bot import telegram_session
from bot.factory import BOT_DEFAULTS
from bot.telegram_session import BotSession, response_model, unread_answer
from tests.conftest import TEST_TOKEN

if TYPE_CHECKING:
    from bot.sandbox import SandboxServer


def _bot(session: AiohttpSession) -> Bot:
    return Bot(TEST_TOKEN, session=session, default=BOT_DEFAULTS)  # as the running bot has them


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


def _form_fields(session: AiohttpSession, bot: Bot, method: TelegramMethod[Any]) -> dict[str, str]:
    """aiogram's own form for ``method``: its fields as the form would send them."""
    form = session.build_form_data(bot, method)
    return {options["name"]: value for options, _headers, value in form._fields}


@pytest.mark.parametrize(
    "method",
    [
        SendMessage(
            chat_id=4001,
            text="<b>Hi</b>",
            entities=[MessageEntity(type="bold", offset=0, length=2)],
            reply_markup=InlineKeyboardMarkup(
                inline_keyboard=[
                    [InlineKeyboardButton(text="Pay ⭐", callback_data="pay:1")],
                    [InlineKeyboardButton(text="Site", url="https://example.org/a?b=c")],
                ]
            ),
        ),
        SendMessage(chat_id="@channel", text="x", parse_mode=None, disable_notification=False),
        SendInvoice(
            chat_id=4001,
            title="Ticket",
            description="A seat",
            payload="order-1",
            currency="XTR",
            prices=[LabeledPrice(label="Seat", amount=5)],
            max_tip_amount=0,
        ),
        EditMessageText(chat_id=4001, message_id=7, text="", reply_markup=None),
        BanChatMember(chat_id=-100, user_id=5, until_date=datetime(2030, 1, 2, tzinfo=UTC)),
        RestrictChatMember(
            chat_id=-100, user_id=5, permissions=ChatPermissions(can_send_messages=False)
        ),
        SetMyCommands(
            commands=[BotCommand(command="start", description="Start")],
            scope=BotCommandScopeChat(chat_id=4001),
            language_code="en",
        ),
        AnswerCallbackQuery(callback_query_id="q1", text="Done", show_alert=True),
        AnswerPreCheckoutQuery(pre_checkout_query_id="p1", ok=False, error_message="Sold out"),
    ],
    ids=lambda method: type(method).__name__,
)
def test_the_json_body_is_aiograms_form_field_for_field(method: TelegramMethod[Any]) -> None:
    """Every field the form would send, with the same value (the form JSON-encodes non-strings),
    and no other: defaults (parse_mode, link previews) resolved from the bot's as aiogram does."""
    session = BotSession()
    bot = _bot(session)
    body = json.loads(session.json_body(bot, method) or b"")
    form = _form_fields(AiohttpSession(), bot, method)
    assert {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in body.items()
    } == form


@pytest.mark.parametrize(
    ("filename", "on_disk"),
    [
        ("webinar.ics", False),  # in memory: one body built here
        ('Précios "en vivo" \\ 2026.ics', False),  # quoted as aiohttp quotes it
        ("webinar.ics", True),  # on disk: aiogram's streamed form
    ],
)
async def test_uploads_carry_the_parameters_aiograms_form_would(
    sandbox: SandboxServer, bots: tuple[Bot, Bot], tmp_path: Path, filename: str, on_disk: bool
) -> None:
    chat = sandbox.user(4003, first_name="Cy")
    await chat.start()
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Join", url="https://meet.example.org/r")]]
    )
    content = b"BEGIN:VCALENDAR\r\nSUMMARY:\xc3\xa9\r\nEND:VCALENDAR\r\n"
    path = tmp_path / "calendar.ics"
    path.write_bytes(content)

    def upload() -> InputFile:
        if on_disk:
            return FSInputFile(path, filename=filename)
        return BufferedInputFile(content, filename)

    ours, aiograms = await _both(
        sandbox,
        bots,
        "sendDocument",
        lambda bot: bot.send_document(
            4003, upload(), caption="<b>See you</b>", reply_markup=keyboard
        ),
    )
    # The file's part is named at random (``attach://<name>``), by aiogram in both.
    ours.pop(ours.pop("document").removeprefix("attach://"))
    aiograms.pop(aiograms.pop("document").removeprefix("attach://"))
    assert ours == aiograms
    assert ours["parse_mode"] == "HTML"
    assert ours["reply_markup"] == {
        "inline_keyboard": [[{"text": "Join", "url": "https://meet.example.org/r"}]]
    }
    first, second = sandbox.messages(4003)[-2:]
    assert first.document is not None
    assert second.document is not None
    stored = [sandbox.file(message.document["file_id"]) for message in (first, second)]
    assert [(file.data, file.file_name, file.mime_type) for file in stored] == [
        (content, filename, stored[1].mime_type)
    ] * 2


# (status, body) answers and the exception aiogram raises for each.
ERRORS = [
    (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
    (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"}),
    (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        },
    ),
    (
        400,
        {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": -1001234},
        },
    ),
    (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}),
    (404, {"ok": False, "error_code": 404, "description": "Not Found"}),
    (409, {"ok": False, "error_code": 409, "description": "Conflict: terminated"}),
    (413, {"ok": False, "error_code": 413, "description": "Request Entity Too Large"}),
    (500, {"ok": False, "error_code": 500, "description": "Internal Server Error: restart"}),
    (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}),
    (200, {"ok": False, "error_code": 400, "description": "odd"}),
    (502, "<html>Bad Gateway</html>"),
]


def _raised(session: AiohttpSession, bot: Bot, status: int, body: Any) -> BaseException:
    content = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - compared below
        session.check_response(bot, SendMessage(chat_id=1, text="x"), status, content)
    return raised.value


@pytest.mark.parametrize(("status", "body"), ERRORS)
@pytest.mark.parametrize("unread", [False, True])
def test_errors_raise_aiograms_exceptions_with_their_fields(
    status: int, body: Any, unread: bool
) -> None:
    ours, theirs = BotSession(), AiohttpSession()
    bot = _bot(ours)
    with unread_answer() if unread else nullcontext():
        got = _raised(ours, bot, status, body)
    expected = _raised(theirs, bot, status, body)
    assert type(got) is type(expected)
    fields = ("message", "retry_after", "migrate_to_chat_id")
    assert [getattr(got, name, None) for name in fields] == [
        getattr(expected, name, None) for name in fields
    ]


async def test_unread_answers_build_no_model_and_return_none(
    sandbox: SandboxServer, bots: tuple[Bot, Bot], monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = sandbox.user(4004, first_name="Di")
    await chat.start()
    ours = bots[0]
    built: list[Any] = []

    def counting(returning: Any) -> Any:
        built.append(returning)
        return response_model(returning)

    monkeypatch.setattr(telegram_session, "response_model", counting)
    with unread_answer():
        sent = await ours.send_message(4004, "hello")
        document = await ours.send_document(4004, BufferedInputFile(b"x", "a.ics"))
    assert (sent, document) == (None, None)
    assert built == []
    assert [m.text or m.document["file_name"] for m in sandbox.messages(4004)] == [
        "hello",
        "a.ics",
    ]
    # Outside, answers are read as before (and the count above could see them).
    assert isinstance(await ours.send_message(4004, "again"), Message)
    assert built == [Message]


async def test_a_calls_own_timeout_and_the_bots_token_still_apply(
    sandbox: SandboxServer, bots: tuple[Bot, Bot]
) -> None:
    """The session keeps one parsed address per token and method, and one aiohttp timeout per
    value: a call's own timeout still cuts it short, and another token reaches its own bot."""
    chat = sandbox.user(4003, first_name="Cy")
    await chat.start()
    ours = bots[0]
    session = ours.session
    assert isinstance(session, BotSession)
    await ours.send_message(4003, "one")
    await ours.send_message(4003, "two")
    assert len(session._urls) == 1  # the address, parsed once
    http = await session.create_session()
    assert len(http.cookie_jar) == 0  # no jar to filter at every call

    sandbox.rtt_ms = 1_000
    try:
        with pytest.raises(TelegramNetworkError, match="timeout"):
            await ours.send_message(4003, "slow", request_timeout=0.2)
    finally:
        sandbox.rtt_ms = 0
    assert (await ours.send_message(4003, "again")).text == "again"

    with pytest.raises(TelegramUnauthorizedError):  # another token: its own address
        await Bot("123:UNKNOWN", session=session).send_message(4003, "who?")
