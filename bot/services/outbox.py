"""The outbox: every message that must reach a participant is first a row, then a send.

Services plan deliveries with :meth:`OutboxService.enqueue` inside their own transaction, so a
delivery exists if and only if the state change that caused it was committed. The dispatcher
(a job) claims due rows, renders them with the renderer registered for their kind, sends them
through the paced sender and marks each row once Telegram has answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiogram.types import InlineKeyboardMarkup

from bot.services.base import Service
from bot.services.users import UserService
from storage.enums import OutboxKind
from storage.models import OutboxMessage
from storage.repositories.outbox import OutboxRepository

if TYPE_CHECKING:
    from bot.services import Services


@dataclass(frozen=True)
class Outgoing:
    """One Telegram message to send. A row may render to several (text, then a calendar file)."""

    text: str | None = None
    reply_markup: InlineKeyboardMarkup | None = None
    document: tuple[str, bytes] | None = None  # (filename, content), uploaded
    document_file_id: str | None = None
    photo_file_id: str | None = None
    photo: tuple[str, bytes] | None = None  # (filename, content), uploaded: a chart
    video_file_id: str | None = None
    caption: str | None = None


class Drop(Exception):
    """Raised by a renderer when a row is no longer relevant: the row is marked dropped.

    ``stale`` marks the drops organizers should hear about: a reminder due while the bot was down
    whose moment has passed.
    """

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale = stale


# Renders a claimed row into messages; ``None`` means "no longer relevant": the row is dropped.
Renderer = Callable[["Services", OutboxMessage], Awaitable[list[Outgoing] | None]]


class OutboxService(Service):
    @property
    def repo(self) -> OutboxRepository:
        return OutboxRepository(self.session)

    async def enqueue(
        self,
        kind: OutboxKind,
        *,
        dedupe_key: str,
        chat_id: int,
        due_at: datetime | None = None,
        payload: dict[str, Any] | None = None,
        org_id: int | None = None,
        webinar_id: int | None = None,
        ticket_id: int | None = None,
        broadcast_id: int | None = None,
    ) -> bool:
        """Plan a delivery in the caller's transaction (no commit here). Idempotent by key."""
        now = self.clock.now()
        return await self.repo.enqueue(
            kind=kind,
            dedupe_key=dedupe_key,
            chat_id=chat_id,
            due_at=due_at or now,
            now=now,
            payload=payload,
            org_id=org_id,
            webinar_id=webinar_id,
            ticket_id=ticket_id,
            broadcast_id=broadcast_id,
        )

    async def notice(
        self,
        *,
        dedupe_key: str,
        chat_id: int,
        text: str,
        org_id: int | None = None,
        webinar_id: int | None = None,
        ticket_id: int | None = None,
    ) -> bool:
        """Plan a one-off text message, already rendered in the recipient's language."""
        return await self.enqueue(
            OutboxKind.NOTICE,
            dedupe_key=dedupe_key,
            chat_id=chat_id,
            payload={"text": text},
            org_id=org_id,
            webinar_id=webinar_id,
            ticket_id=ticket_id,
        )

    async def notice_each(
        self,
        recipient_ids: Iterable[int],
        *,
        dedupe_key: str,
        render: Callable[[str], str],
        org_id: int | None = None,
        webinar_id: int | None = None,
    ) -> None:
        """Plan one notice per recipient, each rendered by ``render(locale)`` in the recipient's
        own language (organizers and owners: their chosen one, else their client's)."""
        users = UserService(self.session, self.app)
        ids = list(recipient_ids)
        known = await users.repo.by_ids(ids)
        for recipient_id in ids:
            await self.notice(
                dedupe_key=f"{dedupe_key}:{recipient_id}",
                chat_id=recipient_id,
                text=render(users.locale_of(known.get(recipient_id))),
                org_id=org_id,
                webinar_id=webinar_id,
            )


async def render_notice(_services: Services, row: OutboxMessage) -> list[Outgoing] | None:
    text = row.payload.get("text")
    return [Outgoing(text=text)] if text else None
