"""The client's CPU per Bot API call: figures, not a timed test.

The sandbox Bot API server runs in a child process, so what this process's CPU clock counts is
the client's own work: building the method, the request body, aiohttp's request and response,
reading the answer. Each variant makes ``--calls`` calls one after another, in ``--rounds``
rounds that take turns with the other variants (the machine's load drifts: each variant sees the
same drift), after a warm-up; the figure is the median round's microseconds of CPU per call:

- ``aiogram``: aiogram's own ``AiohttpSession`` (its form body, its answer parsing);
- ``session``: the bot's :class:`~bot.telegram_session.BotSession` through ``Bot`` methods, as
  handlers call it;
- ``unread``: the same calls inside :func:`~bot.telegram_session.unread_answer`;
- ``paced``: the paced sender's calls (their answers are unread), with its budget's bookkeeping.

Each variant sends a text with a two-button keyboard (``send_message``) and a calendar file
(``send_document``, a multipart upload), as the outbox delivers access.

    python -m bench.client_calls --calls 3000

The last line is for scripts: ``client_calls: NAME=US ...``, microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

from bot.services.outbox import Outgoing
from bot.services.sender import PacedSender
from bot.telegram_session import BotSession, unread_answer

TOKEN = "454545:CALLS-token-for-the-sandbox"
CHAT_ID = 5001
TEXT = "<b>Precios que venden</b>\nJueves 19:00, 90 min. Tu enlace llega al pagar."
KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[
        [InlineKeyboardButton(text="Comprar 5 ⭐", callback_data="buy:1:stars")],
        [InlineKeyboardButton(text="Pagar con tarjeta", callback_data="buy:1:card")],
    ]
)
CALENDAR = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


def _server_process(ready: Any, stop: Any, url: Any) -> None:
    asyncio.run(_serve(ready, stop, url))


async def _serve(ready: Any, stop: Any, url: Any) -> None:
    from bot.sandbox import SandboxServer

    server = SandboxServer(record_calls=False)
    await server.start()
    server.add_bot(token=TOKEN, username="calls_bot", first_name="Calls")
    await server.user(CHAT_ID, first_name="Ada").start()
    url.value = server.url.encode()
    ready.set()
    await asyncio.to_thread(stop.wait)
    await server.stop()


def _bot(session: AiohttpSession) -> Bot:
    return Bot(
        TOKEN,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


async def _cpu_s(calls: int, call: Callable[[], Awaitable[Any]]) -> float:
    start = time.process_time()
    for _ in range(calls):
        await call()
    return time.process_time() - start


async def _unread(call: Callable[[], Awaitable[Any]]) -> None:
    with unread_answer():
        await call()


async def run(api_url: str, calls: int, rounds: int) -> dict[str, float]:
    api = TelegramAPIServer.from_base(api_url)
    aiograms, ours = _bot(AiohttpSession(api=api)), _bot(BotSession(api=api))
    sender = PacedSender(ours, rate_per_s=1e9, chat_interval_s=0.0)
    text = Outgoing(text=TEXT, reply_markup=KEYBOARD)
    document = Outgoing(document=("webinar.ics", CALENDAR), caption=TEXT)

    def send_message(bot: Bot) -> Callable[[], Awaitable[Any]]:
        return lambda: bot.send_message(CHAT_ID, TEXT, reply_markup=KEYBOARD)

    def send_document(bot: Bot) -> Callable[[], Awaitable[Any]]:
        return lambda: bot.send_document(
            CHAT_ID, BufferedInputFile(CALENDAR, "webinar.ics"), caption=TEXT
        )

    variants: dict[str, Callable[[], Awaitable[Any]]] = {
        "aiogram_send_message": send_message(aiograms),
        "session_send_message": send_message(ours),
        "unread_send_message": lambda: _unread(send_message(ours)),
        "paced_send_message": lambda: sender.send(CHAT_ID, text),
        "aiogram_send_document": send_document(aiograms),
        "session_send_document": send_document(ours),
        "unread_send_document": lambda: _unread(send_document(ours)),
        "paced_send_document": lambda: sender.send(CHAT_ID, document),
    }
    per_round = max(1, calls // rounds)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for call in variants.values():  # warm-up: connections, pydantic's schemas, caches
            await _cpu_s(min(200, calls), call)
        for _ in range(rounds):
            for name, call in variants.items():
                samples[name].append(await _cpu_s(per_round, call) / per_round * 1e6)
    finally:
        await aiograms.session.close()
        await ours.session.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ready, stop, url = context.Event(), context.Event(), context.Array("c", 64)
    server = context.Process(target=_server_process, args=(ready, stop, url), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the sandbox server did not start")
        figures = asyncio.run(run(url.value.decode(), args.calls, args.rounds))
    finally:
        stop.set()
        server.join(10)
    for name, value in figures.items():
        print(f"{name:24} {value:8.0f} us CPU per call")
    print("client_calls: " + " ".join(f"{name}={value:.0f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
