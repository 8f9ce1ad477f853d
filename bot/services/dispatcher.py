"""The outbox dispatcher: claims due rows, renders, sends through the paced sender, marks.

A claim moves rows to ``sending`` with a lease in one statement (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas never claim the same row; SQLite has one writer). A worker that dies
leaves its lease to expire and the row is claimed again: nothing is lost, and the only possible
duplicate is the one message in flight at the crash. Multi-part rows (text, then a calendar
file) record each part as sent, so a retry resumes after the last part that went out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramServerError,
)
from sqlalchemy import or_, select, update

from bot.context import AppContext
from bot.services import Services
from bot.services.outbox import renderers
from bot.services.sender import PacedSender
from storage.enums import OutboxStatus
from storage.models import OutboxMessage

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (5, 30, 120, 600, 1800)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: DispatchStats) -> None:
        for name in ("claimed", "sent", "blocked", "failed", "dropped", "retried"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, count in other.by_kind.items():
            self.by_kind[kind] += count


class OutboxDispatcher:
    def __init__(
        self,
        app: AppContext,
        sender: PacedSender,
        *,
        batch_size: int = 100,
        lease: timedelta = timedelta(minutes=10),
    ) -> None:
        self.app = app
        self.sender = sender
        self.batch_size = batch_size
        self.lease = lease
        self._renderers = renderers()
        self._again = False
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Dispatch soon, without waiting for the next scheduler tick (after a payment, say)."""
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._again:
            self._again = False
            try:
                while (await self.run_once()).claimed:
                    pass
            except Exception:
                log.exception("outbox dispatch failed; the next tick retries")

    async def idle(self) -> None:
        """Wait until a kicked dispatch has finished (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def claim(self) -> list[int]:
        now = self.app.clock.now()
        async with self.app.session_factory() as session:
            due = (
                select(OutboxMessage.id)
                .where(
                    or_(
                        (OutboxMessage.status == OutboxStatus.PENDING)
                        & (OutboxMessage.due_at <= now),
                        (OutboxMessage.status == OutboxStatus.SENDING)
                        & (OutboxMessage.lease_until < now),
                    )
                )
                .order_by(OutboxMessage.due_at, OutboxMessage.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            claimed = await session.scalars(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(due.scalar_subquery()))
                .values(
                    status=OutboxStatus.SENDING,
                    lease_until=now + self.lease,
                    attempts=OutboxMessage.attempts + 1,
                )
                .returning(OutboxMessage.id)
                .execution_options(synchronize_session=False)
            )
            ids = sorted(claimed.all())
            await session.commit()
        return ids

    async def run_once(self) -> DispatchStats:
        """Claim one batch and deliver it; chats in parallel, each chat's rows in order."""
        ids = await self.claim()
        stats = DispatchStats(claimed=len(ids))
        if not ids:
            return stats
        async with self.app.session_factory() as session:
            rows = (
                await session.execute(
                    select(OutboxMessage.id, OutboxMessage.chat_id)
                    .where(OutboxMessage.id.in_(ids))
                    .order_by(OutboxMessage.due_at, OutboxMessage.id)
                )
            ).all()
        by_chat: dict[int, list[int]] = defaultdict(list)
        for row_id, chat_id in rows:
            by_chat[chat_id].append(row_id)
        results = await asyncio.gather(
            *(self._deliver_chat(chat_rows) for chat_rows in by_chat.values())
        )
        for result in results:
            stats.add(result)
        return stats

    async def _deliver_chat(self, row_ids: list[int]) -> DispatchStats:
        stats = DispatchStats()
        for row_id in row_ids:
            try:
                await self._deliver(row_id, stats)
            except Exception:
                log.exception("outbox row %s could not be processed", row_id)
        return stats

    async def _deliver(self, row_id: int, stats: DispatchStats) -> None:
        async with self.app.session_factory() as session:
            services = Services(session, self.app)
            row = await session.get(OutboxMessage, row_id)
            if row is None or row.status != OutboxStatus.SENDING:
                return
            renderer = self._renderers.get(row.kind)
            with self.app.translator.context():
                parts = await renderer(services, row) if renderer else None
            if not parts:
                self._finish(row, OutboxStatus.DROPPED, "nothing to send")
                stats.dropped += 1
                await session.commit()
                return
            await session.commit()  # end the read transaction before the network calls
            start = int(row.payload.get("parts_sent", 0))
            try:
                for index in range(start, len(parts)):
                    await self.sender.send(row.chat_id, parts[index])
                    row.payload = {**row.payload, "parts_sent": index + 1}
                    await session.commit()
            except TelegramForbiddenError as error:
                self._finish(row, OutboxStatus.BLOCKED, error.message)
                await services.users.repo.mark_blocked(row.chat_id, self.app.clock.now())
                stats.blocked += 1
            except TelegramBadRequest as error:
                self._finish(row, OutboxStatus.FAILED, error.message)
                stats.failed += 1
            except (TelegramNetworkError, TelegramServerError, TimeoutError, OSError) as error:
                self._retry_later(row, str(error), stats)
            else:
                self._finish(row, OutboxStatus.SENT, None)
                row.sent_at = self.app.clock.now()
                stats.sent += 1
                stats.by_kind[row.kind] += 1
            await session.commit()

    def _finish(self, row: OutboxMessage, status: OutboxStatus, error: str | None) -> None:
        row.status = status
        row.lease_until = None
        row.last_error = error

    def _retry_later(self, row: OutboxMessage, error: str, stats: DispatchStats) -> None:
        if row.attempts >= MAX_ATTEMPTS:
            self._finish(row, OutboxStatus.FAILED, error)
            stats.failed += 1
            return
        delay = BACKOFF_SECONDS[min(row.attempts, len(BACKOFF_SECONDS)) - 1]
        row.status = OutboxStatus.PENDING
        row.lease_until = None
        row.last_error = error
        row.due_at = self.app.clock.now() + timedelta(seconds=delay)
        stats.retried += 1


async def dispatch_outbox(app: AppContext) -> None:
    """The scheduler's job: wake the dispatcher of this process."""
    if app.dispatcher is not None:
        app.dispatcher.kick()
