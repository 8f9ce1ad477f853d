"""Inbound updates: stored before Telegram is told they arrived, then handled from the table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, or_, select, tuple_, update

from storage.direct import Prebuilt, rows_insert
from storage.enums import InboundStatus
from storage.models import InboundUpdate
from storage.repositories.base import DirectRepository

# The table, not the mapped class: these statements never load ORM objects, and Core statements
# skip the ORM's bulk-DML compilation (a measurable share of an update's CPU on this path).
_T = cast(Table, InboundUpdate.__table__)
_c = _T.c


_STORED = (
    "bot_id",
    "update_id",
    "kind",
    "priority",
    "payload",
    "status",
    "attempts",
    "lease_until",
    "next_attempt_at",
    "received_at",
)
_STORE: dict[tuple[str, int], Prebuilt] = {}


def _store_statement(dialect: str, rows: int) -> Prebuilt:
    """One multi-row ``INSERT ... RETURNING`` for ``rows`` updates, built once per row count (a
    batch has at most 100, ``getUpdates``' limit) and run on the driver (``storage.direct``):
    a statement whose values are bound per row, so SQLAlchemy compiles it once."""
    statement = _STORE.get((dialect, rows))
    if statement is None:
        statement = _STORE[dialect, rows] = rows_insert(
            _T,
            _STORED,
            rows,
            dialect,
            conflict=("bot_id", "update_id"),
            returning=(_c.id, _c.update_id),
        )
    return statement


# A row this process still holds: the same attempt (the fencing token), still pending.
_STILL_HELD = (
    (_c.id == bindparam("id_"))
    & (_c.attempts == bindparam("attempts_"))
    & (_c.status == InboundStatus.PENDING)
)
# Built once and run with one parameter set per update (an executemany): a statement built per
# batch, with the batch's (id, attempts) pairs in it, cost more to build than to run. Both run on
# the driver (``storage.direct``).
_FINISH = Prebuilt(
    update(_T)
    .where(_STILL_HELD)
    .values(
        status=InboundStatus.DONE,
        lease_until=None,
        finished_at=bindparam("now_"),
        last_error=bindparam("error_"),
    )
)
_RENEW = Prebuilt(update(_T).where(_STILL_HELD).values(lease_until=bindparam("until_")))


@dataclass(frozen=True, slots=True)
class Incoming:
    """One update as Telegram sent it, with what the intake derives from it."""

    update_id: int
    kind: str
    priority: int
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Held:
    """An update this process holds under a lease. ``attempts`` is the fencing token: once the
    lease expired and someone else claimed the row, this holder can no longer write it."""

    id: int
    update_id: int
    kind: str
    priority: int
    attempts: int
    payload: dict[str, Any]
    received_at: datetime


class InboundUpdateRepository(DirectRepository):
    """The intake's table. Storing, finishing and renewing run in a session's transaction or a
    direct one (the intake's own writes); the rest needs a session."""

    async def store(
        self,
        bot_id: int,
        updates: Sequence[Incoming],
        *,
        now: datetime,
        lease_until: datetime | None,
    ) -> list[Held]:
        """Insert the updates not stored before, in one statement; returns the new ones.

        With ``lease_until`` the new rows are held by the caller at once (its first attempt),
        so the common path costs this insert and the final update, nothing else.
        """
        if not updates:
            return []
        held = lease_until is not None
        values: dict[str, Any] = {}
        for row, item in enumerate(updates):
            values.update(
                {
                    f"bot_id_{row}": bot_id,
                    f"update_id_{row}": item.update_id,
                    f"kind_{row}": item.kind,
                    f"priority_{row}": item.priority,
                    f"payload_{row}": item.payload,
                    f"status_{row}": InboundStatus.PENDING,
                    f"attempts_{row}": 1 if held else 0,
                    f"lease_until_{row}": lease_until,
                    f"next_attempt_at_{row}": now,
                    f"received_at_{row}": now,
                }
            )
        result = await _store_statement(self.dialect, len(updates)).rows(self.session, values)
        new = {update_id: row_id for row_id, update_id in result}
        if not held:
            return []
        return [
            Held(new[i.update_id], i.update_id, i.kind, i.priority, 1, i.payload, now)
            for i in updates
            if i.update_id in new
        ]

    async def claim_due(
        self,
        bot_id: int,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        ignore_leases: bool = False,
    ) -> list[Held]:
        """Hold up to ``limit`` due updates, most urgent first, in one statement.

        Due: pending, its next attempt due, and nobody's lease running (``ignore_leases``: also
        rows leased by a process that is known to be gone). PostgreSQL's ``SKIP LOCKED`` lets
        replicas take disjoint rows; SQLite has one writer, which makes the statement atomic.
        """
        if limit <= 0:
            return []
        conditions = [
            _c.bot_id == bot_id,
            _c.status == InboundStatus.PENDING,
            _c.next_attempt_at <= now,
        ]
        if not ignore_leases:
            conditions.append(or_(_c.lease_until.is_(None), _c.lease_until < now))
        due = (
            select(_c.id)
            .where(*conditions)
            .order_by(_c.priority, _c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self._orm.execute(
            update(_T)
            .where(_c.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until, attempts=_c.attempts + 1)
            .returning(
                _c.id,
                _c.update_id,
                _c.kind,
                _c.priority,
                _c.attempts,
                _c.payload,
                _c.received_at,
            )
        )
        held = [Held(*row) for row in result.all()]
        held.sort(key=lambda item: (item.priority, item.id))
        return held

    def _held(self, items: Iterable[Held]) -> Any:
        return tuple_(_c.id, _c.attempts).in_([(item.id, item.attempts) for item in items])

    async def renew(self, items: Sequence[Held], *, lease_until: datetime) -> None:
        await _RENEW.many(
            self.session,
            [{"id_": item.id, "attempts_": item.attempts, "until_": lease_until} for item in items],
        )

    async def finish(
        self, items: Sequence[Held], *, now: datetime, error: str | None = None
    ) -> None:
        """Mark handled updates done: one statement, built once, run for each of them."""
        await _FINISH.many(
            self.session,
            [
                {"id_": item.id, "attempts_": item.attempts, "now_": now, "error_": error}
                for item in items
            ],
        )

    async def retry_later(self, item: Held, *, at: datetime, error: str) -> bool:
        result = await self._orm.execute(
            update(_T)
            .where(self._held([item]), _c.status == InboundStatus.PENDING)
            .values(lease_until=None, next_attempt_at=at, last_error=error)
        )
        return bool(result.rowcount)

    async def park(self, item: Held, *, now: datetime, error: str) -> bool:
        """Give up on an update; False if this holder had lost it meanwhile."""
        result = await self._orm.execute(
            update(_T)
            .where(self._held([item]), _c.status == InboundStatus.PENDING)
            .values(
                status=InboundStatus.PARKED, lease_until=None, finished_at=now, last_error=error
            )
        )
        return bool(result.rowcount)

    async def release(self, items: Sequence[Held], *, now: datetime) -> None:
        """Let go of held updates not finished (shutdown): due again at once, for anyone."""
        if items:
            await self._orm.execute(
                update(_T)
                .where(self._held(items), _c.status == InboundStatus.PENDING)
                .values(lease_until=None, next_attempt_at=now)
            )

    async def prune(self, before: datetime) -> int:
        """Forget handled updates finished before ``before`` (parked ones stay for a person)."""
        result = await self._orm.execute(
            delete(_T).where(_c.status == InboundStatus.DONE, _c.finished_at < before)
        )
        return int(result.rowcount or 0)
