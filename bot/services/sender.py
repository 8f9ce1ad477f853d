"""The paced sender: the one way bulk and background messages leave the bot.

Telegram allows about 30 messages a second overall and one a second per chat. The sender waits
for both budgets before each call, honours ``429 retry_after`` by waiting and sending the same
message again (never dropping it), and leaves every other error to its caller to classify.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, Message
from aiolimiter import AsyncLimiter

from bot.services.outbox import Drop, Outgoing

BURST_S = 0.25

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SenderStats:
    sent: int = 0
    retry_after: int = 0  # 429 answers received


class PerChatPacer:
    """At most one message per ``interval`` seconds to each chat, remembered for recent chats."""

    def __init__(self, interval: float, remember: int = 50_000) -> None:
        self.interval = interval
        self.remember = remember
        self._next_slot: OrderedDict[int, float] = OrderedDict()

    async def wait(self, chat_id: int) -> None:
        now = time.monotonic()
        slot = max(now, self._next_slot.get(chat_id, 0.0))
        self._next_slot[chat_id] = slot + self.interval
        self._next_slot.move_to_end(chat_id)
        while len(self._next_slot) > self.remember:
            self._next_slot.popitem(last=False)
        if slot > now:
            await asyncio.sleep(slot - now)

    def push_back(self, chat_id: int, seconds: float) -> None:
        self._next_slot[chat_id] = max(
            self._next_slot.get(chat_id, 0.0), time.monotonic() + seconds
        )


class PacedSender:
    def __init__(
        self,
        bot: Bot,
        *,
        rate_per_s: float = 28.0,
        chat_interval_s: float = 1.0,
        max_retry_after_s: float = 3600.0,
    ) -> None:
        self.bot = bot
        # A bucket of a quarter second's tokens: enough to catch up after the loop's small
        # stalls, too few for a burst that a whole second's bucket would allow after a pause
        # (Telegram counts per second).
        rate = max(rate_per_s, 1.0)
        self.global_limiter = AsyncLimiter(max(rate * BURST_S, 1.0), max(BURST_S, 1.0 / rate))
        self.chats = PerChatPacer(chat_interval_s)
        self.max_retry_after_s = max_retry_after_s
        self.stats = SenderStats()
        self._paused_until = 0.0  # a 429 on any chat pauses everyone: Telegram's limit is global

    async def send(
        self,
        chat_id: int,
        message: Outgoing,
        *,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
    ) -> Message:
        """Send one message, waiting for the pace and through any number of 429s.

        ``still_wanted`` is asked right before each call to Telegram, after every wait: a pace
        or a 429 pause can last minutes, and what was true when the message was rendered (the
        ticket is active) may not be any more. If it says no, :class:`Drop` is raised and
        nothing is sent.
        """
        return await self._paced(
            chat_id, lambda: self._call(chat_id, message), still_wanted=still_wanted
        )

    async def edit_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        reply_markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Edit a message the bot sent (a progress report), paced like a send.

        "Message is not modified" is not an error here: the text is already what we want.
        """
        try:
            await self._paced(
                chat_id,
                lambda: self.bot.edit_message_text(
                    text=text, chat_id=chat_id, message_id=message_id, reply_markup=reply_markup
                ),
            )
        except TelegramBadRequest as error:
            if "not modified" not in error.message.lower():
                raise

    async def _paced(
        self,
        chat_id: int,
        call: Callable[[], Awaitable[T]],
        *,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        while True:
            await self.chats.wait(chat_id)
            await self._global_slot()
            if still_wanted is not None and not await still_wanted():
                raise Drop("no longer wanted at the moment of sending")
            try:
                result = await call()
            except TelegramRetryAfter as error:
                self.stats.retry_after += 1
                wait = min(float(error.retry_after), self.max_retry_after_s)
                log.info("429 for chat %s: waiting %.1f s before sending again", chat_id, wait)
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
                self.chats.push_back(chat_id, wait)
                continue
            self.stats.sent += 1
            return result

    async def _global_slot(self) -> None:
        """Wait out any 429 pause, then take a token of the global rate."""
        while True:
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            await self.global_limiter.acquire()
            # A 429 may have arrived while this call queued for the token: honour it too.
            if self._paused_until <= time.monotonic():
                return

    async def _call(self, chat_id: int, message: Outgoing) -> Message:
        if message.document is not None:
            filename, content = message.document
            return await self.bot.send_document(
                chat_id,
                BufferedInputFile(content, filename=filename),
                caption=message.caption,
                reply_markup=message.reply_markup,
            )
        if message.document_file_id is not None:
            return await self.bot.send_document(
                chat_id,
                message.document_file_id,
                caption=message.caption,
                reply_markup=message.reply_markup,
            )
        if message.video_file_id is not None:
            return await self.bot.send_video(
                chat_id,
                message.video_file_id,
                caption=message.caption,
                reply_markup=message.reply_markup,
            )
        if message.photo_file_id is not None:
            return await self.bot.send_photo(
                chat_id,
                message.photo_file_id,
                caption=message.caption,
                reply_markup=message.reply_markup,
            )
        return await self.bot.send_message(
            chat_id, message.text or "", reply_markup=message.reply_markup
        )
