from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage
from storage.repositories.base import Repository

OPEN_STATUSES = (OutboxStatus.PENDING, OutboxStatus.SENDING)


class OutboxRepository(Repository):
    async def enqueue(
        self,
        *,
        kind: OutboxKind,
        dedupe_key: str,
        chat_id: int,
        due_at: datetime,
        now: datetime,
        payload: dict[str, Any] | None = None,
        org_id: int | None = None,
        webinar_id: int | None = None,
        ticket_id: int | None = None,
        broadcast_id: int | None = None,
    ) -> bool:
        """Plan a delivery once: True if planned now, False if ``dedupe_key`` was planned before."""
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        statement = (
            insert(OutboxMessage)
            .values(
                kind=kind,
                dedupe_key=dedupe_key,
                chat_id=chat_id,
                due_at=due_at,
                payload=payload or {},
                org_id=org_id,
                webinar_id=webinar_id,
                ticket_id=ticket_id,
                broadcast_id=broadcast_id,
                status=OutboxStatus.PENDING,
                attempts=0,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
        result = await self.session.execute(statement)
        return bool(result.rowcount)

    async def drop_open(
        self,
        *,
        reason: str,
        kinds: Iterable[OutboxKind],
        ticket_id: int | None = None,
        webinar_id: int | None = None,
    ) -> int:
        """Drop deliveries that are no longer relevant (refunded ticket, cancelled webinar)."""
        if ticket_id is None and webinar_id is None:
            msg = "drop_open needs a ticket_id or a webinar_id"
            raise ValueError(msg)
        statement = update(OutboxMessage).where(
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.kind.in_(list(kinds)),
        )
        if ticket_id is not None:
            statement = statement.where(OutboxMessage.ticket_id == ticket_id)
        if webinar_id is not None:
            statement = statement.where(OutboxMessage.webinar_id == webinar_id)
        result = await self.session.execute(
            statement.values(status=OutboxStatus.DROPPED, last_error=reason)
        )
        return int(result.rowcount or 0)
