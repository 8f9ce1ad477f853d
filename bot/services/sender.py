"""The paced sender: the one way bulk and background messages leave the bot.

Telegram allows about 30 messages a second overall and one a second per chat. The sender waits
for both budgets before each call, honours ``429 retry_after`` by waiting and sending the same
message again, and leaves every other error to its caller to classify.

The 429 loop is bounded, in answers and in total seconds waited: a flood pause longer than that
(Telegram answers minutes, even hours, to a bot that kept pushing) re-raises the last
:class:`TelegramRetryAfter`, and the outbox puts the row back to pending, due after the pause,
instead of one worker holding a batch for an hour.

Its calls' answers are not read (see :func:`bot.telegram_session.unread_answer`): nothing uses the
``Message`` Telegram returns for an outbox row or a progress edit, so none is built. Its methods
return None; errors raise as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.methods import (
    CopyMessage,
    ForwardMessage,
    SendDocument,
    SendInvoice,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
    SendVideo,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from bot.metrics import MESSAGES_SENT, SEND_GAVE_UP, TELEGRAM_429
from bot.priority import Priority, PrioritySlots
from bot.services.outbox import Drop, Outgoing
from bot.services.send_budget import LocalBudget, SendBudget
from bot.telegram_session import unread_answer

if TYPE_CHECKING:
    from aiogram.client.session.middlewares.base import TelegramType
    from aiogram.methods import Response, TelegramMethod

MAX_429_ATTEMPTS = 5  # answers of 429 for one message before it goes back to the outbox
MAX_429_WAIT_S = 120.0  # seconds of retry_after waited for one message, in all

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SenderStats:
    sent: int = 0
    retry_after: int = 0  # 429 answers received
    gave_up: int = 0  # messages handed back after too many 429s or too long a pause


# Set while the paced sender makes its call: the reply budget below then lets it through (the
# sender has already waited for the budget).
_paced: ContextVar[bool] = ContextVar("paced_send", default=False)

# Methods that put a message in a chat: the ones Telegram's limits count.
MESSAGE_METHODS = (
    SendMessage,
    SendInvoice,
    SendDocument,
    SendPhoto,
    SendVideo,
    SendMediaGroup,
    CopyMessage,
    ForwardMessage,
)


class ReplyBudgetMiddleware(BaseRequestMiddleware):
    """Replies to users draw from the bot's send budget too.

    Telegram's 30 messages a second are the bot's: cards, invoices and confirmations count as
    much as reminders. A reply waits for the bot's budget (shared by every replica through Redis)
    and may run ahead of the chat's one-a-second pace by Telegram's short burst (a user who taps
    a button expects the answer now; a fourth reply within the second waits), and it takes the
    chat's slot so the outbox's next message to that chat waits. A 429 pauses every sender for
    Telegram's ``retry_after``, and the reply is sent again once.
    """

    def __init__(self, budget: SendBudget) -> None:
        self.budget = budget

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None)
        if _paced.get() or not isinstance(method, MESSAGE_METHODS) or not isinstance(chat_id, int):
            return await make_request(bot, method)
        await self.budget.acquire(chat_id, reply=True)
        try:
            return await make_request(bot, method)
        except TelegramRetryAfter as error:
            TELEGRAM_429.inc()
            await self.budget.pause(chat_id, float(error.retry_after))
            await self.budget.acquire(chat_id, reply=True)
            return await make_request(bot, method)


class PacedSender:
    def __init__(
        self,
        bot: Bot,
        *,
        rate_per_s: float = 28.0,
        chat_interval_s: float = 1.0,
        max_retry_after_s: float = 3600.0,
        max_429_attempts: int = MAX_429_ATTEMPTS,
        max_429_wait_s: float = MAX_429_WAIT_S,
        budget: SendBudget | None = None,
    ) -> None:
        self.bot = bot
        # Without a shared budget (Redis), this process's own: the limits as if it were alone.
        self.budget = budget or LocalBudget(rate_per_s, chat_interval_s)
        self.max_retry_after_s = max_retry_after_s
        self.max_429_attempts = max(1, max_429_attempts)
        self.max_429_wait_s = max_429_wait_s
        self.stats = SenderStats()
        # The update slots (``Intake.slots``), when the sender runs beside an intake: each call
        # takes one, after its pace wait, as a handler does (see :meth:`_in_slot`).
        self.slots: PrioritySlots | None = None

    async def send(
        self,
        chat_id: int,
        message: Outgoing,
        *,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
        priority: Priority = Priority.OTHER,
    ) -> None:
        """Send one message, waiting for the pace and through a bounded number of 429s.

        ``still_wanted`` is asked right before each call to Telegram, after every wait: a pace
        or a 429 pause can last minutes, and what was true when the message was rendered (the
        ticket is active) may not be any more. If it says no, :class:`Drop` is raised and
        nothing is sent. ``priority``: the call's turn for an update slot (:meth:`_in_slot`).
        """
        if still_wanted is None:
            await self._paced(chat_id, partial(self._call, chat_id, message), priority)
            return

        async def checked() -> None:
            if not await still_wanted():
                raise Drop("no longer wanted at the moment of sending")
            await self._call(chat_id, message)

        await self._paced(chat_id, checked, priority)

    async def send_rendered(
        self,
        chat_id: int,
        render: Callable[[], Awaitable[Outgoing]],
        *,
        priority: Priority = Priority.OTHER,
    ) -> None:
        """Send the message ``render`` makes once the pace (or a 429 pause) lets it go.

        ``render`` runs after every wait, right before the call to Telegram, so what it reads
        is as fresh as ``still_wanted``'s check would be: for a message built from state that
        may change while it waits (a ticket refunded), rendering it late *is* the check, at no
        cost of its own. It raises :class:`Drop` to send nothing. ``priority`` as for
        :meth:`send`.
        """

        async def rendered() -> None:
            await self._call(chat_id, await render())

        await self._paced(chat_id, rendered, priority)

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

        async def edit() -> None:
            with unread_answer():
                await self.bot.edit_message_text(
                    text=text, chat_id=chat_id, message_id=message_id, reply_markup=reply_markup
                )

        try:
            await self._paced(chat_id, edit)
        except TelegramBadRequest as error:
            if "not modified" not in error.message.lower():
                raise

    async def _paced(
        self, chat_id: int, call: Callable[[], Awaitable[T]], priority: Priority = Priority.OTHER
    ) -> T:
        answers = 0
        waited = 0.0
        while True:
            await self.budget.acquire(chat_id)
            try:
                result = await self._in_slot(call, priority)
            except TelegramRetryAfter as error:
                self.stats.retry_after += 1
                TELEGRAM_429.inc()
                answers += 1
                wait = min(float(error.retry_after), self.max_retry_after_s)
                # A 429 on any chat pauses everyone: Telegram's limit is the bot's.
                await self.budget.pause(chat_id, wait)
                if answers >= self.max_429_attempts or waited + wait > self.max_429_wait_s:
                    self.stats.gave_up += 1
                    SEND_GAVE_UP.inc()
                    log.warning(
                        "429 for chat %s: %d answer(s), %.0f s waited, %.0f s more asked; "
                        "leaving the message to the outbox",
                        chat_id,
                        answers,
                        waited,
                        wait,
                    )
                    raise
                waited += wait
                log.info("429 for chat %s: waiting %.1f s before sending again", chat_id, wait)
                continue
            self.stats.sent += 1
            MESSAGES_SENT.inc()
            return result

    def _media(self, message: Outgoing) -> tuple[Callable[..., Awaitable[Any]], Any] | None:
        """The method and file of a message that carries one (an upload or a known file id)."""
        if message.document is not None:
            filename, content = message.document
            return self.bot.send_document, BufferedInputFile(content, filename=filename)
        if message.document_file_id is not None:
            return self.bot.send_document, message.document_file_id
        if message.photo is not None:
            filename, content = message.photo
            return self.bot.send_photo, BufferedInputFile(content, filename=filename)
        if message.video_file_id is not None:
            return self.bot.send_video, message.video_file_id
        if message.photo_file_id is not None:
            return self.bot.send_photo, message.photo_file_id
        return None

    async def _in_slot(self, call: Callable[[], Awaitable[T]], priority: Priority) -> T:
        """Make the call holding one of the update slots (:attr:`slots`), if any.

        The outbox's deliveries are work of the same event loop as the updates, outside the
        slots that bound the updates in flight: in a rush, each payment's access message
        (rendered from a read, then sent) came on top of whatever the slots let in, and made
        every turn of the loop longer, a checkout's turns included. Taking a slot for the call
        lets the slots' adaptive limit, which follows the loop's lag, bound them too; a
        pre-checkout query still never waits for one. Only the call holds it, never the pace
        or a 429 pause, which may last minutes and would keep updates waiting for nothing.
        An access message asks with a payment's priority (:class:`bot.priority.Priority`): its
        buyer has paid and waits for it, ahead of the next buyer's card.
        """
        slots = self.slots
        if slots is None:
            return await call()
        await slots.acquire(priority)
        try:
            return await call()
        finally:
            slots.release()

    async def _call(self, chat_id: int, message: Outgoing) -> None:
        # The budget was waited for: the reply budget middleware lets this call through.
        token = _paced.set(True)
        try:
            with unread_answer():
                media = self._media(message)
                if media is not None:
                    send, file = media
                    await send(
                        chat_id, file, caption=message.caption, reply_markup=message.reply_markup
                    )
                    return
                await self.bot.send_message(
                    chat_id, message.text or "", reply_markup=message.reply_markup
                )
        finally:
            _paced.reset(token)
