"""Planning outbox rows in one statement: the few rows of a purchase and bulk plans alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage
from storage.repositories import outbox as outbox_module
from storage.repositories.outbox import OutboxRepository
from tests.factories import NOW

WRITTEN = ("kind", "dedupe_key", "chat_id", "org_id", "webinar_id", "ticket_id", "broadcast_id")


def _purchase_rows(ticket_id: int) -> list[dict[str, Any]]:
    """What a purchase plans: its access message and two reminders (one without a payload)."""
    rows: list[dict[str, Any]] = [
        {
            "kind": OutboxKind.ACCESS,
            "dedupe_key": f"access:{ticket_id}",
            "chat_id": 500 + ticket_id,
            "due_at": NOW,
            "ticket_id": ticket_id,
            "webinar_id": 7,
            "org_id": 3,
        }
    ]
    for hours in (24, 1):
        rows.append(
            {
                "kind": OutboxKind.REMINDER,
                "dedupe_key": f"reminder:{ticket_id}:{hours}",
                "chat_id": 500 + ticket_id,
                "due_at": NOW + timedelta(hours=hours),
                "ticket_id": ticket_id,
                "webinar_id": 7,
                "org_id": 3,
                "payload": {"offset_minutes": hours * 60} if hours == 24 else None,
            }
        )
    return rows


async def _stored(session: AsyncSession, ticket_id: int) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.ticket_id == ticket_id)
        .order_by(OutboxMessage.dedupe_key)
    )
    return [
        {
            **{key: getattr(row, key) for key in WRITTEN},
            "payload": row.payload,
            "due_at": row.due_at,
            "status": row.status,
            "attempts": row.attempts,
            "created_at": row.created_at,
            "lease_until": row.lease_until,
            "sent_at": row.sent_at,
        }
        for row in found
    ]


@pytest.mark.parametrize("few", [True, False], ids=["prebuilt", "bulk"])
async def test_both_ways_write_the_same_rows_once(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch, few: bool
) -> None:
    monkeypatch.setattr(outbox_module, "_FEW_INSERTS", {})
    if not few:  # every plan the size of a purchase's takes the bulk statement instead
        monkeypatch.setattr(outbox_module, "_FEW", 0)
    repo = OutboxRepository(session)
    assert await repo.enqueue_many(_purchase_rows(1), now=NOW) == 3
    await session.commit()
    prebuilt = (session.get_bind().dialect.name, 3) in outbox_module._FEW_INSERTS
    assert prebuilt == few
    # A plan made again (an update handled twice) writes nothing and says so.
    assert await repo.enqueue_many(_purchase_rows(1), now=NOW + timedelta(minutes=1)) == 0
    # A plan partly new writes the new rows only.
    again = [*_purchase_rows(1), *_purchase_rows(2)]
    assert await repo.enqueue_many(again, now=NOW) == 3
    await session.commit()

    rows = await _stored(session, 1)
    assert [row["dedupe_key"] for row in rows] == [
        "access:1",
        "reminder:1:1",
        "reminder:1:24",
    ]
    access, last, first = rows
    assert access["kind"] == OutboxKind.ACCESS
    assert (access["chat_id"], access["webinar_id"], access["org_id"]) == (501, 7, 3)
    assert access["broadcast_id"] is None
    assert access["payload"] == {}
    assert last["payload"] == {}
    assert first["payload"] == {"offset_minutes": 1440}
    assert first["due_at"] == NOW + timedelta(hours=24)
    for row in rows:
        assert row["status"] == OutboxStatus.PENDING
        assert row["attempts"] == 0
        assert row["created_at"] == NOW
        assert row["lease_until"] is None
        assert row["sent_at"] is None
    assert len(await _stored(session, 2)) == 3


async def test_a_row_setting_more_than_a_purchase_does_takes_the_bulk_statement(
    session: AsyncSession,
) -> None:
    row = {**_purchase_rows(3)[0], "last_error": "planned with a note"}
    assert await OutboxRepository(session).enqueue_many([row], now=NOW) == 1
    await session.commit()
    stored = await session.scalar(select(OutboxMessage).where(OutboxMessage.ticket_id == 3))
    assert stored is not None
    assert stored.last_error == "planned with a note"
