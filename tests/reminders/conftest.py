"""Fixtures for reminders, broadcasts and the outbox dispatcher.

``FakeBot`` stands in for aiogram's Bot at service level: it records what was sent and answers
with the errors a test scripts (429, 403, network). End-to-end tests use the sandbox instead.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiogram.exceptions import (
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
)
from aiogram.methods import SendMessage
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.services.dispatcher import OutboxDispatcher
from bot.services.sender import PacedSender
from storage.enums import TicketStatus
from storage.models import Ticket, Webinar
from tests.factories import NOW, make_user


@dataclass
class Sent:
    chat_id: int
    text: str | None
    photo: str | None = None
    document: str | None = None
    caption: str | None = None


@dataclass
class FakeBot:
    """Records sends; ``script[chat_id]`` is a list of exceptions to raise, one per call."""

    sent: list[Sent] = field(default_factory=list)
    edits: list[tuple[int, int, str]] = field(default_factory=list)
    script: dict[int, list[Exception]] = field(default_factory=lambda: defaultdict(list))
    blocked: set[int] = field(default_factory=set)
    gate: asyncio.Event | None = None  # when given: every send waits for it (a stalled network)
    stall_after: int | None = None  # after this many sends, sends never answer (a dying process)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    def by_chat(self) -> dict[int, list[Sent]]:
        chats: dict[int, list[Sent]] = defaultdict(list)
        for item in self.sent:
            chats[item.chat_id].append(item)
        return chats

    async def _answer(self, chat_id: int, **fields: Any) -> Any:
        self.calls += 1
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            self.stalled.set()
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        method = SendMessage(chat_id=chat_id, text="")
        if self.script.get(chat_id):
            raise self.script[chat_id].pop(0)
        if chat_id in self.blocked:
            raise TelegramForbiddenError(method, "Forbidden: bot was blocked by the user")
        self.sent.append(Sent(chat_id, **fields))
        return object()

    async def send_message(self, chat_id: int, text: str, **_: Any) -> Any:
        return await self._answer(chat_id, text=text)

    async def send_photo(self, chat_id: int, photo: str, caption: str | None = None, **_: Any):
        return await self._answer(chat_id, text=None, photo=photo, caption=caption)

    async def send_document(
        self, chat_id: int, document: Any, caption: str | None = None, **_: Any
    ) -> Any:
        return await self._answer(chat_id, text=None, document=str(document), caption=caption)

    async def edit_message_text(self, *, text: str, chat_id: int, message_id: int, **_: Any):
        self.edits.append((chat_id, message_id, text))
        return True


def retry_after(seconds: int) -> TelegramRetryAfter:
    return TelegramRetryAfter(SendMessage(chat_id=1, text=""), "Too Many Requests", seconds)


def network_error() -> TelegramNetworkError:
    return TelegramNetworkError(SendMessage(chat_id=1, text=""), "connection reset")


@pytest.fixture
def fake_bot() -> FakeBot:
    return FakeBot()


def fast_sender(bot: Any, **kwargs: Any) -> PacedSender:
    """Pacing fast enough for tests; the pacing itself is tested with its own numbers."""
    options: dict[str, Any] = {"rate_per_s": 10_000, "chat_interval_s": 0.001}
    options.update(kwargs)
    return PacedSender(bot, **options)


@pytest.fixture
def dispatcher(app_context: AppContext, fake_bot: FakeBot) -> OutboxDispatcher:
    return OutboxDispatcher(app_context, fast_sender(fake_bot), batch_size=50)


async def make_ticket(
    session: AsyncSession,
    webinar: Webinar,
    user_id: int,
    *,
    language_code: str = "en",
    status: TicketStatus = TicketStatus.ACTIVE,
    created_at: datetime = NOW,
) -> Ticket:
    await make_user(session, user_id, first_name=f"P{user_id}", language_code=language_code)
    ticket = Ticket(webinar_id=webinar.id, user_id=user_id, status=status, created_at=created_at)
    session.add(ticket)
    await session.flush()
    return ticket


@pytest.fixture
async def drained() -> AsyncIterator[list[OutboxDispatcher]]:
    """Dispatchers a test started; their kicked tasks are awaited at the end."""
    started: list[OutboxDispatcher] = []
    yield started
    for item in started:
        await item.idle()
