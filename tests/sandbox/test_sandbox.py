"""The sandbox Bot API server, driven by a real aiogram Bot and Dispatcher over HTTP."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BufferedInputFile,
    CallbackQuery,
    ChatJoinRequest,
    ChatMemberAdministrator,
    ChatMemberLeft,
    ChatMemberMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    LabeledPrice,
    MenuButtonCommands,
    Message,
    PreCheckoutQuery,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from bot.sandbox import PaymentResult, RateLimit, SandboxServer, SimUser
from tests.sandbox.conftest import TOKEN, make_bot

RunPolling = Callable[[Router], AbstractAsyncContextManager[Dispatcher]]


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=text, callback_data=data) for text, data in row]
            for row in rows
        ]
    )


def png(width: int, height: int) -> bytes:
    """A minimal valid PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def started_user(server: SandboxServer, bot: Bot, user_id: int = 1001) -> SimUser:
    """A user who pressed Start; the update is consumed so tests begin with an empty queue."""
    user = server.user(user_id, "Alice", username="alice", language_code="ru")
    await user.start()
    updates = await bot.get_updates()
    await bot.get_updates(offset=updates[-1].update_id + 1)
    return user


async def raw_call(server: SandboxServer, path: str, **kwargs: object) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}{path}", **kwargs) as response,  # type: ignore[arg-type]
    ):
        return response.status, await response.json()


# -- protocol basics ------------------------------------------------------------------------


async def test_get_me_and_error_shapes(server: SandboxServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456, True, "webinarpass_bot")

    assert await raw_call(server, "/bot999:WRONG/getMe") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert await raw_call(server, f"/bot{TOKEN}/noSuchMethod") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )
    # Method names are case-insensitive; JSON and form bodies both work.
    status, body = await raw_call(server, f"/bot{TOKEN}/GETME")
    assert status == 200
    assert body["result"]["username"] == "webinarpass_bot"
    status, body = await raw_call(server, f"/bot{TOKEN}/sendMessage", json={"chat_id": 42})
    assert (status, body["description"]) == (400, "Bad Request: chat not found")
    server.user(7, "Bob")
    await server.user(7).send("hi")
    status, body = await raw_call(
        server, f"/bot{TOKEN}/sendMessage", data={"chat_id": "7", "text": "123"}
    )
    assert status == 200
    assert body["result"]["text"] == "123"  # a form "text" stays a string

    assert [(call.method, call.ok) for call in server.calls] == [
        ("getMe", True),
        ("getMe", False),  # unknown token
        ("noSuchMethod", False),
        ("getMe", True),
        ("sendMessage", False),
        ("sendMessage", True),
    ]
    assert server.calls[1].token == "999:WRONG"
    failed = server.calls_of("sendmessage")[0]
    assert (failed.ok, failed.error) == (False, "400 Bad Request: chat not found")


# -- long polling ---------------------------------------------------------------------------


async def test_long_polling_offsets_and_wakeup(server: SandboxServer, bot: Bot) -> None:
    alice = server.user(1001, "Alice")
    await alice.send("one")
    await alice.send("two")

    first = await bot.get_updates(limit=1)
    assert [u.message.text for u in first if u.message] == ["one"]
    again = await bot.get_updates()  # unconfirmed updates come back
    assert [u.message.text for u in again if u.message] == ["one", "two"]
    assert await bot.get_updates(offset=again[-1].update_id + 1) == []

    # A long poll waits for the next update and returns as soon as it exists.
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(offset=again[-1].update_id + 1, timeout=5))
    await asyncio.sleep(0.05)
    await alice.send("three")
    updates = await poll
    assert [u.message.text for u in updates if u.message] == ["three"]
    assert loop.time() - started < 1.0

    # An empty long poll ends after its timeout.
    started = loop.time()
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=1) == []
    assert 0.9 < loop.time() - started < 3.0


async def test_second_poller_conflicts_with_first(server: SandboxServer, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(bot.get_updates(timeout=5))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await first
    await server.user(5, "Eve").send("x")
    assert len(await second) == 1


async def test_allowed_updates_filters_new_updates(server: SandboxServer, bot: Bot) -> None:
    alice = server.user(1001, "Alice")
    await bot.get_updates(allowed_updates=["callback_query"])
    await alice.send("dropped")
    assert await bot.get_updates() == []
    assert server.stats.updates_dropped == 1


async def test_replayed_update_is_delivered_with_same_id(server: SandboxServer, bot: Bot) -> None:
    alice = server.user(1001, "Alice")
    await alice.send("pay me once")
    [update] = await bot.get_updates()
    await bot.get_updates(offset=update.update_id + 1)
    await alice.replay_last_update()
    [again] = await bot.get_updates(offset=update.update_id + 1)
    assert again.update_id == update.update_id
    assert again.message is not None
    assert again.message.text == "pay me once"


# -- a real dispatcher ----------------------------------------------------------------------


def echo_router() -> Router:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        payload = (message.text or "").partition(" ")[2]
        await message.answer(
            f"Welcome! <b>{payload}</b>",
            parse_mode="HTML",
            reply_markup=keyboard([("Buy", "buy"), ("Help", "help")]),
        )

    @router.callback_query(F.data == "buy")
    async def buy(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.message.edit_text("Choose a ticket", reply_markup=keyboard([("VIP", "vip")]))
        await query.answer("Opening…", show_alert=True)

    @router.message(F.document)
    async def document(message: Message, bot: Bot) -> None:
        assert message.document is not None
        data = await bot.download(message.document.file_id)
        assert data is not None
        await message.answer(f"got {message.document.file_name}: {data.read().decode()}")

    @router.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(message.text or "")

    return router


async def test_dispatcher_polling_echo_buttons_and_documents(
    server: SandboxServer, bot: Bot, run_polling: RunPolling
) -> None:
    alice = server.user(1001, "Alice", username="alice")
    async with run_polling(echo_router()):
        await alice.start("wb_x7Kp2")
        welcome = await alice.next_message()
        assert welcome.text == "Welcome! <b>wb_x7Kp2</b>"
        assert welcome.button_texts == ["Buy", "Help"]

        answer = await alice.press(welcome, text="Buy")
        assert answer is not None
        assert (answer.text, answer.show_alert) == ("Opening…", True)
        edited = await alice.next_message()
        assert edited.edited
        assert (edited.message_id, edited.text) == (welcome.message_id, "Choose a ticket")
        assert alice.messages[-1].button_texts == ["VIP"]
        assert await alice.press(edited, callback_data="vip", timeout=0.2) is None  # unanswered

        await alice.send("hello")
        assert (await alice.next_message()).text == "hello"

        await alice.send_document("links.txt", b"https://example.org", mime_type="text/plain")
        assert (await alice.next_message()).text == "got links.txt: https://example.org"

    transcript = server.transcript()
    assert "👤 Alice → /start wb_x7Kp2" in transcript
    assert "🤖 → Alice: Welcome! <b>wb_x7Kp2</b>   [Buy] [Help]" in transcript
    assert "👤 Alice ⏵ [Buy]" in transcript
    assert "🤖 ✎ Alice: Choose a ticket   [VIP]" in transcript
    assert "👤 Alice → 📄 links.txt (document)" in transcript


@asynccontextmanager
async def webhook_app(dp: Dispatcher, bot: Bot, secret: str) -> AsyncIterator[str]:
    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, path="/hook")
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/hook"
    finally:
        await runner.cleanup()


async def test_webhook_delivery_with_secret_and_retries(server: SandboxServer, bot: Bot) -> None:
    dp = Dispatcher()
    dp.include_router(echo_router())
    alice = server.user(1001, "Alice")
    async with webhook_app(dp, bot, secret="s3cret") as url:
        assert await bot.set_webhook(url, secret_token="s3cret", drop_pending_updates=True)
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()
        await alice.send("via webhook")
        assert (await alice.next_message()).text == "via webhook"
        info = await bot.get_webhook_info()
        assert (info.url, info.pending_update_count, info.last_error_message) == (url, 0, None)

        # A wrong secret makes aiogram answer 401: Telegram keeps the update and retries.
        await bot.set_webhook(url, secret_token="wrong")
        await alice.send("retry me")
        await server.wait_until(lambda: server.stats.webhook_failures >= 2)
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 1
        assert info.last_error_message == "Wrong response from the webhook: 401 Unauthorized"
        await bot.set_webhook(url, secret_token="s3cret")
        assert (await alice.next_message()).text == "retry me"
        assert await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""


async def test_webhook_reply_in_response_body(server: SandboxServer, bot: Bot) -> None:
    router = Router()

    @router.message()
    async def reply(message: Message) -> object:
        return message.answer("answered inline")  # aiogram puts the call in the response

    dp = Dispatcher()
    dp.include_router(router)
    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, handle_in_background=False).register(app, "/h")
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        await bot.set_webhook(f"http://{host}:{port}/h")
        alice = server.user(1001, "Alice")
        await alice.send("hi")
        assert (await alice.next_message()).text == "answered inline"
    finally:
        await bot.delete_webhook()
        await runner.cleanup()


# -- messages -------------------------------------------------------------------------------


async def test_send_message_rules(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    sent = await bot.send_message(
        alice.id, "<b>bold</b> &amp; <a href='https://x.org'>link</a>", parse_mode="HTML"
    )
    assert sent.text == "<b>bold</b> &amp; <a href='https://x.org'>link</a>"
    with pytest.raises(TelegramBadRequest, match="can't parse entities: Can't find end tag"):
        await bot.send_message(alice.id, "<b>oops", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="Unmatched end tag"):
        await bot.send_message(alice.id, "<b><i>x</b></i>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag "div"'):
        await bot.send_message(alice.id, "<div>x</div>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(alice.id, "")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(alice.id, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(alice.id, "x", reply_markup=keyboard([("b", "d" * 65)]))
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(424242, "x")

    reply_kb = ReplyKeyboardMarkup(keyboard=[[KeyboardButton(text="📅 Schedule")]])
    with_keyboard = await bot.send_message(alice.id, "menu", reply_markup=reply_kb)
    assert with_keyboard.reply_markup is None  # Telegram echoes inline keyboards only
    await bot.send_message(alice.id, "bye", reply_markup=ReplyKeyboardRemove())
    replied = await bot.send_message(alice.id, "re", reply_to_message_id=sent.message_id)
    assert replied.reply_to_message is not None
    assert replied.reply_to_message.message_id == sent.message_id

    messages = alice.drain()
    assert [m.text for m in messages][-3:] == ["menu", "bye", "re"]
    assert messages[-3].reply_keyboard_texts == ["📅 Schedule"]
    await alice.press(messages[-3], text="📅 Schedule")  # a reply button sends its text
    [update] = await bot.get_updates()
    assert update.message is not None
    assert update.message.text == "📅 Schedule"
    assert "🤖 → Alice: menu   ⌨ [📅 Schedule]" in server.transcript()


async def test_blocked_and_never_started_users_get_403(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    alice.block()
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(alice.id, "hello?")
    [update] = await bot.get_updates()
    assert update.my_chat_member is not None
    assert update.my_chat_member.new_chat_member.status == "kicked"
    alice.unblock()
    await bot.send_message(alice.id, "welcome back")

    server.user(2002, "Carol")
    with pytest.raises(TelegramForbiddenError, match="bot can't initiate conversation"):
        await bot.send_message(2002, "hi")
    assert "🤖 ✗ → Alice: sendMessage → 403 Forbidden: bot was blocked by the user" in (
        server.transcript()
    )


async def test_edit_and_delete(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    sent = await bot.send_message(alice.id, "v1", reply_markup=keyboard([("a", "a")]))
    edited = await bot.edit_message_text("v2", chat_id=alice.id, message_id=sent.message_id)
    assert isinstance(edited, Message)
    assert edited.edit_date is not None
    assert edited.reply_markup is None  # an edit without reply_markup drops the keyboard
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("v2", chat_id=alice.id, message_id=sent.message_id)
    marked = await bot.edit_message_reply_markup(
        chat_id=alice.id, message_id=sent.message_id, reply_markup=keyboard([("b", "b")])
    )
    assert isinstance(marked, Message)
    assert marked.reply_markup is not None
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=alice.id, message_id=999)

    assert [m.text for m in alice.drain()] == ["v1", "v2", "v2"]
    assert await bot.delete_message(alice.id, sent.message_id)
    assert alice.messages == []
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(alice.id, sent.message_id)
    assert await bot.send_chat_action(alice.id, "typing")


async def test_documents_and_photos(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    ics = BufferedInputFile(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", filename="webinar.ics")
    sent = await bot.send_document(alice.id, ics, caption="Add to calendar")
    assert sent.document is not None
    assert (sent.document.file_name, sent.document.mime_type) == ("webinar.ics", "text/calendar")
    received = await alice.next_message()
    assert received.file_bytes == b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
    assert received.caption == "Add to calendar"

    again = await bot.send_document(alice.id, sent.document.file_id)  # re-send by file_id
    assert again.document is not None
    assert again.document.file_id == sent.document.file_id
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_document(alice.id, "no-such-file-id")

    photo = await bot.send_photo(alice.id, BufferedInputFile(png(3, 2), filename="p.png"))
    assert photo.photo is not None
    assert (photo.photo[-1].width, photo.photo[-1].height) == (3, 2)
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(alice.id, BufferedInputFile(b"not an image", filename="x.jpg"))

    await alice.send_document("links.csv", b"a,b\n1,2\n", caption="my links")
    [update] = await bot.get_updates()
    assert update.message is not None
    assert update.message.document is not None
    file = await bot.get_file(update.message.document.file_id)
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)
    assert downloaded is not None
    assert downloaded.read() == b"a,b\n1,2\n"
    assert update.message.document.mime_type == "text/csv"
    assert server.transcript().count("📄 webinar.ics (document)") == 2


# -- payments -------------------------------------------------------------------------------


def payment_router(*, refuse: str | None = None, delay: float = 0.0) -> Router:
    router = Router()

    @router.pre_checkout_query()
    async def pre_checkout(query: PreCheckoutQuery) -> None:
        await asyncio.sleep(delay)
        if refuse:
            await query.answer(ok=False, error_message=refuse)
        else:
            await query.answer(ok=True)

    @router.message(F.successful_payment)
    async def paid(message: Message) -> None:
        assert message.successful_payment is not None
        await message.answer(f"paid {message.successful_payment.invoice_payload}")

    return router


async def send_stars_invoice(bot: Bot, chat_id: int, amount: int = 100) -> Message:
    return await bot.send_invoice(
        chat_id,
        title="Webinar",
        description="Live webinar access",
        payload="ticket:42",
        currency="XTR",
        prices=[LabeledPrice(label="Ticket", amount=amount)],
    )


async def test_stars_payment_flow_and_refunds(
    server: SandboxServer, bot: Bot, run_polling: RunPolling
) -> None:
    alice = await started_user(server, bot)
    sent = await send_stars_invoice(bot, alice.id)
    assert sent.invoice is not None
    assert (sent.invoice.currency, sent.invoice.total_amount) == ("XTR", 100)
    invoice = await alice.next_message()

    async with run_polling(payment_router()):
        result = await alice.pay(invoice)
        assert result.ok
        assert result.telegram_payment_charge_id
        assert result.telegram_payment_charge_id.startswith("stx")
        assert (result.total_amount, result.currency, result.invoice_payload) == (
            100,
            "XTR",
            "ticket:42",
        )
        assert result.precheckout_latency_s is not None
        assert result.precheckout_latency_s < 1.0
        assert (await alice.next_message()).text == "paid ticket:42"

        duplicate = await alice.pay_again(result)
        assert duplicate.telegram_payment_charge_id != result.telegram_payment_charge_id
        assert (await alice.next_message()).text == "paid ticket:42"

    charge_id = result.telegram_payment_charge_id
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(user_id=9999, telegram_payment_charge_id=charge_id)
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(user_id=alice.id, telegram_payment_charge_id="stxnope")
    assert await bot.refund_star_payment(user_id=alice.id, telegram_payment_charge_id=charge_id)
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(user_id=alice.id, telegram_payment_charge_id=charge_id)
    assert [(e.telegram_payment_charge_id, e.source) for e in server.refund_events] == [
        (charge_id, "bot")
    ]

    # A refund made by Telegram arrives as a refunded_payment service message.
    assert duplicate.telegram_payment_charge_id is not None
    await alice.refunded_payment(duplicate)
    updates = await bot.get_updates()
    refunded = updates[-1].message
    assert refunded is not None
    assert refunded.refunded_payment is not None
    assert refunded.refunded_payment.telegram_payment_charge_id == (
        duplicate.telegram_payment_charge_id
    )
    transcript = server.transcript()
    assert '🤖 → Alice: 🧾 invoice "Webinar" 100 XTR' in transcript
    assert "👤 Alice pays 100 XTR → pre-checkout ok (" in transcript
    assert f"→ payment {charge_id}" in transcript


async def test_payment_refused_and_timeout(
    server: SandboxServer, bot: Bot, run_polling: RunPolling
) -> None:
    server.precheckout_timeout = 0.3
    alice = await started_user(server, bot)
    await send_stars_invoice(bot, alice.id)
    invoice = await alice.next_message()

    async with run_polling(payment_router(refuse="Sold out")):
        refused = await alice.pay(invoice)
    assert (refused.ok, refused.error_message) == (False, "Sold out")
    assert refused.telegram_payment_charge_id is None

    timed_out = asyncio.create_task(alice.pay(invoice))
    [update] = await bot.get_updates(timeout=1)
    result = await timed_out
    assert result == PaymentResult(False, "timeout", None, None, None, 100, "XTR", "ticket:42")
    assert update.pre_checkout_query is not None
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    assert "pre-checkout refused: 'Sold out'" in server.transcript()
    assert "pre-checkout timeout (0.3 s)" in server.transcript()


async def test_invoice_validation(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    two_prices = [LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=2)]

    async def invoice(
        currency: str, prices: list[LabeledPrice], provider_token: str | None = None
    ) -> Message:
        return await bot.send_invoice(
            alice.id,
            title="T",
            description="D",
            payload="p",
            currency=currency,
            prices=prices,
            provider_token=provider_token,
        )

    with pytest.raises(TelegramBadRequest, match="STARS_INVOICE_INVALID"):
        await invoice("XTR", two_prices)
    with pytest.raises(TelegramBadRequest, match="STARS_INVOICE_INVALID"):
        await invoice("XTR", two_prices[:1], provider_token="tok")
    with pytest.raises(TelegramBadRequest, match="PAYMENT_PROVIDER_INVALID"):
        await invoice("RUB", two_prices)
    with pytest.raises(TelegramBadRequest, match="CURRENCY_TOTAL_AMOUNT_INVALID"):
        await invoice("XTR", [LabeledPrice(label="a", amount=0)])
    with pytest.raises(TelegramBadRequest, match="CURRENCY_INVALID"):
        await invoice("ZZZ", two_prices, provider_token="tok")
    rub = await invoice("RUB", two_prices, provider_token="381764678:TEST")
    assert rub.invoice is not None
    assert rub.invoice.total_amount == 3


async def test_invoice_link_payment_with_email_and_provider_id(
    server: SandboxServer, bot: Bot
) -> None:
    alice = await started_user(server, bot)
    link = await bot.create_invoice_link(
        title="Webinar",
        description="D",
        payload="order-7",
        provider_token="381764678:TEST:1",
        currency="RUB",
        prices=[LabeledPrice(label="Ticket", amount=150000)],
        need_email=True,
        send_email_to_provider=True,
        provider_data=json.dumps({"receipt": {"items": []}}),
    )
    assert link.startswith("https://t.me/$")
    paying = asyncio.create_task(
        alice.pay(link, email="a@example.org", provider_payment_charge_id="2f3e-yookassa")
    )
    [update] = await bot.get_updates(timeout=1)
    query = update.pre_checkout_query
    assert query is not None
    assert query.order_info is not None
    assert query.order_info.email == "a@example.org"
    assert await bot.answer_pre_checkout_query(query.id, ok=True)
    result = await paying
    assert result.ok
    assert result.provider_payment_charge_id == "2f3e-yookassa"
    [paid] = await bot.get_updates(offset=update.update_id + 1)
    assert paid.message is not None
    assert paid.message.successful_payment is not None
    assert paid.message.successful_payment.total_amount == 150000
    assert "👤 Alice pays 1500.00 RUB → pre-checkout ok" in server.transcript()
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):  # not a Stars charge
        await bot.refund_star_payment(alice.id, result.telegram_payment_charge_id or "")


# -- groups ---------------------------------------------------------------------------------


async def test_join_requests(server: SandboxServer, bot: Bot) -> None:
    group = server.add_chat(-100123, "Paid group", "supergroup", bot_is_admin=True)
    server.add_chat(-100999, "Not mine", bot_is_admin=False)
    alice = server.user(1001, "Alice")  # never started the bot

    link = await bot.create_chat_invite_link(
        group.id, name="wb-1", creates_join_request=True, expire_date=timedelta(hours=1)
    )
    assert link.creates_join_request
    assert link.creator.id == 123456
    with pytest.raises(TelegramBadRequest, match="not enough rights to manage chat invite links"):
        await bot.create_chat_invite_link(-100999)
    with pytest.raises(TelegramBadRequest, match="HIDE_REQUESTER_MISSING"):
        await bot.approve_chat_join_request(group.id, alice.id)

    assert await alice.join_via(link.invite_link) == "pending"
    [update] = await bot.get_updates()
    request = update.chat_join_request
    assert isinstance(request, ChatJoinRequest)
    assert (request.chat.id, request.from_user.id, request.user_chat_id) == (
        group.id,
        alice.id,
        alice.id,
    )
    # A pending join request lets the bot write to the user first.
    await bot.send_message(request.user_chat_id, "Show your ticket, please")
    assert await bot.approve_chat_join_request(group.id, alice.id)
    assert server.is_member(group.id, alice.id)
    with pytest.raises(TelegramBadRequest, match="HIDE_REQUESTER_MISSING"):
        await bot.decline_chat_join_request(group.id, alice.id)

    member = await bot.get_chat_member(group.id, alice.id)
    assert isinstance(member, ChatMemberMember)
    assert isinstance(await bot.get_chat_member(group.id, 123456), ChatMemberAdministrator)
    bob = server.user(2002, "Bob")
    assert isinstance(await bot.get_chat_member(group.id, bob.id), ChatMemberLeft)

    direct = await bot.create_chat_invite_link(group.id, member_limit=1)
    assert await bob.join_via(direct.invite_link) == "joined"
    assert server.is_member(group.id, bob.id)
    with pytest.raises(ValueError, match="USERS_TOO_MUCH"):
        await server.user(3003, "Dan").join_via(direct.invite_link)
    assert await bot.ban_chat_member(group.id, bob.id)
    assert not server.is_member(group.id, bob.id)
    chat = await bot.get_chat(group.id)
    assert (chat.title, chat.type) == ("Paid group", "supergroup")
    assert "👤 Alice asks to join «Paid group»" in server.transcript()


# -- flood limits ---------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after() -> None:
    limit = RateLimit(global_per_s=100, global_burst=100, per_chat_per_s=1.0, per_chat_burst=2)
    async with SandboxServer(rate_limit=limit) as server:
        server.add_bot(TOKEN, "webinarpass_bot")
        bot = make_bot(server)
        try:
            alice = await started_user(server, bot)
            await bot.send_message(alice.id, "1")
            await bot.send_message(alice.id, "2")
            with pytest.raises(TelegramRetryAfter) as caught:
                await bot.send_message(alice.id, "3")
            assert caught.value.retry_after == 1
            assert server.stats.rate_limited == 1
            status, body = await raw_call(
                server, f"/bot{TOKEN}/sendMessage", json={"chat_id": alice.id, "text": "4"}
            )
            assert (status, body) == (
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
            )
            # Another chat has its own bucket.
            bob = await started_user(server, bot, 2002)
            await bot.send_message(bob.id, "hi Bob")
        finally:
            await bot.session.close()


# -- settings and chat info -----------------------------------------------------------------


async def test_commands_menu_and_chat_info(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    commands = [
        BotCommand(command="start", description="Start"),
        BotCommand(command="my", description="My tickets"),
    ]
    private = BotCommandScopeAllPrivateChats()
    assert await bot.set_my_commands(commands)
    assert await bot.set_my_commands(commands[:1], scope=private, language_code="ru")
    assert [(c.command, c.description) for c in await bot.get_my_commands()] == [
        ("start", "Start"),
        ("my", "My tickets"),
    ]
    ru = await bot.get_my_commands(scope=private, language_code="ru")
    assert [c.command for c in ru] == ["start"]
    assert server.commands({"type": "all_private_chats"}, "ru") == [
        {"command": "start", "description": "Start"}
    ]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])

    assert await bot.set_chat_menu_button(menu_button=MenuButtonCommands())
    assert (await bot.get_chat_menu_button()).type == "commands"
    assert await bot.set_my_description("Tickets for webinars")
    assert (await bot.get_my_description()).description == "Tickets for webinars"

    chat = await bot.get_chat(alice.id)
    assert (chat.id, chat.type, chat.first_name, chat.username) == (
        1001,
        "private",
        "Alice",
        "alice",
    )
    member = await bot.get_chat_member(alice.id, alice.id)
    assert member.status == "member"
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.get_chat(55555)


# -- the Python-side API --------------------------------------------------------------------


async def test_next_message_timeout_shows_transcript(server: SandboxServer, bot: Bot) -> None:
    alice = await started_user(server, bot)
    await bot.send_message(alice.id, "only one")
    await alice.next_message()
    with pytest.raises(AssertionError, match=r"(?s)no message from the bot.*🤖 → Alice: only one"):
        await alice.next_message(timeout=0.05)
    await alice.expect_silence(0.05)
    await server.wait_for_call("sendMessage", lambda call: call.params["text"] == "only one")
    with pytest.raises(AssertionError, match="condition not met"):
        await server.wait_until(lambda: False, timeout=0.05)


async def test_server_stop_releases_long_poll() -> None:
    server = SandboxServer()
    await server.start()
    server.add_bot(TOKEN, "webinarpass_bot")
    bot = make_bot(server)
    try:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert await poll == []
        assert loop.time() - started < 2
    finally:
        await bot.session.close()


def test_public_names_are_exported() -> None:
    import bot.sandbox as sandbox

    for name in ("SandboxServer", "SimUser", "RateLimit", "PaymentResult"):
        assert name in sandbox.__all__
    assert isinstance(Update.model_validate({"update_id": 1}), Update)
