from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Update, bindparam, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.direct import Prebuilt, rows_insert
from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage, Ticket
from storage.repositories.base import DirectRepository, built

OPEN_STATUSES = (OutboxStatus.PENDING, OutboxStatus.SENDING)
_COLUMNS = tuple(OutboxMessage.__table__.columns)
_KEYS = tuple(column.key for column in _COLUMNS)
ENQUEUE_CHUNK = 500  # rows per multi-row INSERT: well under every driver's parameter limit

# What a row of a purchase's enqueue_many may set; the statement also writes its status,
# attempts and creation time. Up to _FEW rows go as one prebuilt statement per row count.
_FEW = 16
_FEW_KEYS = frozenset(
    {
        "kind",
        "dedupe_key",
        "chat_id",
        "org_id",
        "webinar_id",
        "ticket_id",
        "broadcast_id",
        "payload",
        "due_at",
    }
)
_FEW_WRITTEN = (*sorted(_FEW_KEYS), "status", "attempts", "created_at")
_FEW_INSERTS: dict[tuple[str, int], Prebuilt] = {}


def _few_statement(dialect: str, rows: int) -> Prebuilt:
    """One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for ``rows`` outbox rows,
    built once per row count, its values bound per row (so compiled once)."""
    statement = _FEW_INSERTS.get((dialect, rows))
    if statement is None:
        table = OutboxMessage.__table__
        statement = _FEW_INSERTS[dialect, rows] = rows_insert(
            table, _FEW_WRITTEN, rows, dialect, conflict=("dedupe_key",), returning=(table.c.id,)
        )
    return statement


# The writes of every delivery, built once (per set of columns written) and run with their values
# as bound parameters: Core statements on the table, so neither the ORM's bulk-update path nor
# the statement's construction and cache key are paid again for each message (together about as
# much CPU as the statement itself). Every write to a held row is fenced by the claim's
# ``attempts`` (see :class:`Claim`).
_outbox = OutboxMessage.__table__
_tickets = Ticket.__table__


def _settle_statement(keys: tuple[str, ...]) -> Update:
    return (
        update(_outbox)
        .where(
            _outbox.c.id == bindparam("id_"),
            _outbox.c.attempts == bindparam("attempts_"),
            _outbox.c.status == OutboxStatus.SENDING,
        )
        .values({key: bindparam(f"{key}_", type_=_outbox.c[key].type) for key in keys})
    )


@functools.cache
def _settle(keys: tuple[str, ...]) -> Prebuilt:
    return Prebuilt(_settle_statement(keys))


# The first moment a ticket's access reached its holder; re-sends keep it.
_access_delivered = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id_"), _tickets.c.access_delivered_at.is_(None))
    .values(access_delivered_at=bindparam("now_", type_=_tickets.c.access_delivered_at.type))
)
_ACCESS_DELIVERED = Prebuilt(_access_delivered)

_SENT_AND_DELIVERED = Prebuilt(
    _settle_statement(("last_error", "lease_until", "sent_at", "status")).add_cte(
        _access_delivered.cte("delivered")
    )
)


# The claim (see ``OutboxRepository.claim_due``), built once: it is the dispatcher's most
# complex statement, and building it and deriving its cache key took more CPU than running it.
_now = bindparam("now_", type_=_outbox.c.due_at.type)
_CLAIM = Prebuilt(
    update(_outbox)
    .where(
        _outbox.c.id.in_(
            select(_outbox.c.id)
            .where(
                or_(
                    (_outbox.c.status == OutboxStatus.PENDING) & (_outbox.c.due_at <= _now),
                    (_outbox.c.status == OutboxStatus.SENDING) & (_outbox.c.lease_until < _now),
                )
            )
            .order_by(_outbox.c.due_at, _outbox.c.id)
            .limit(bindparam("limit_", type_=Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        status=OutboxStatus.SENDING,
        lease_until=bindparam("lease_until_", type_=_outbox.c.lease_until.type),
        attempts=_outbox.c.attempts + 1,
    )
    .returning(*_COLUMNS)
)


@dataclass(frozen=True, slots=True)
class Claim:
    """One row a worker holds. ``attempts`` (bumped by every claim) is the fencing token: a worker
    whose lease expired and was claimed again can no longer renew or mark the row.

    ``message`` is the row as the claim left it, returned by the claim itself: a detached
    object, so renderers read it without a query of their own. Nothing writes its fields (every
    write to a held row is a fenced UPDATE), so what the claim exposes is read from it."""

    message: OutboxMessage

    @property
    def id(self) -> int:
        return self.message.id

    @property
    def chat_id(self) -> int:
        return self.message.chat_id

    @property
    def attempts(self) -> int:
        return self.message.attempts

    @property
    def due_at(self) -> datetime:
        return self.message.due_at

    @property
    def kind(self) -> OutboxKind:
        return self.message.kind

    @property
    def broadcast_id(self) -> int | None:
        return self.message.broadcast_id


class OutboxRepository(DirectRepository):
    """The outbox's table. Claiming, settling and marking sent are prebuilt statements, run in a
    session's transaction or in a direct one (the dispatcher's own writes); the rest needs a
    session."""

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
        result = await self._orm.execute(statement)
        return bool(result.rowcount)

    async def drop_open(
        self,
        *,
        reason: str,
        kinds: Iterable[OutboxKind],
        ticket_id: int | None = None,
        webinar_id: int | None = None,
        key_prefix: str | None = None,
    ) -> int:
        """Drop deliveries that are no longer relevant (refunded ticket, cancelled webinar).

        Only pending rows: a row in flight is re-checked by its renderer just before it is sent.
        """
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
        if key_prefix is not None:
            statement = statement.where(
                OutboxMessage.dedupe_key.startswith(key_prefix, autoescape=True)
            )
        result = await self._orm.execute(
            statement.values(status=OutboxStatus.DROPPED, last_error=reason).execution_options(
                synchronize_session=False
            )
        )
        return int(result.rowcount or 0)

    # The INSERT of enqueue_many, built once per dialect and run with the rows as parameters:
    # SQLAlchemy sends them as one multi-row INSERT ... RETURNING from a statement it compiled
    # once ("insertmanyvalues"). One built with ``.values(rows)`` is compiled anew on every call:
    # some 5 ms of CPU for the five rows of a new ticket, against under 1 ms.
    _enqueue_many = {
        dialect: insert(OutboxMessage.__table__)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(OutboxMessage.__table__.c.id)
        for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
    }

    async def enqueue_many(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> int:
        """Plan many deliveries at once (each a dict of :meth:`enqueue`'s keywords but ``now``,
        all with the same keys); idempotent by ``dedupe_key``. Returns how many were new."""
        if len(rows) <= _FEW and all(row.keys() <= _FEW_KEYS for row in rows):
            return await self._enqueue_few(rows, now=now)
        statement = self._enqueue_many[self.dialect]
        planned = 0
        for start in range(0, len(rows), ENQUEUE_CHUNK):
            values = [
                {
                    "org_id": None,
                    "webinar_id": None,
                    "ticket_id": None,
                    "broadcast_id": None,
                    **row,
                    "payload": row.get("payload") or {},
                    "status": OutboxStatus.PENDING,
                    "attempts": 0,
                    "created_at": now,
                }
                for row in rows[start : start + ENQUEUE_CHUNK]
            ]
            planned += len((await self._orm.execute(statement, values)).all())
        return planned

    async def _enqueue_few(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> int:
        """:meth:`enqueue_many` for the few rows of a purchase (the access message and the
        ticket's reminders): one statement prebuilt for as many rows, run on the driver
        (``storage.direct``), without SQLAlchemy's execution of a statement per call."""
        values: dict[str, Any] = {}
        for index, row in enumerate(rows):
            for key in _FEW_KEYS:
                values[f"{key}_{index}"] = row.get(key)
            values[f"payload_{index}"] = row.get("payload") or {}
            values[f"status_{index}"] = OutboxStatus.PENDING
            values[f"attempts_{index}"] = 0
            values[f"created_at_{index}"] = now
        return len(await _few_statement(self.dialect, len(rows)).rows(self.session, values))

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[Claim]:
        """Move up to ``limit`` due rows to ``sending`` under a lease and load them, in one
        statement (``UPDATE ... RETURNING`` every column, on both backends).

        Due means pending and due, or sending with an expired lease (its worker died). On
        PostgreSQL the inner ``FOR UPDATE SKIP LOCKED`` lets concurrent workers take disjoint
        rows without waiting on each other; a row another worker changed meanwhile is re-checked
        by PostgreSQL against the WHERE clause and skipped. SQLite ignores the lock clause: its
        engine has one writer (``BEGIN IMMEDIATE``), which makes the statement just as atomic.
        """
        rows = await _CLAIM.rows(
            self.session, {"now_": now, "lease_until_": lease_until, "limit_": limit}
        )
        claims = []
        for values in rows:
            # Built, not loaded: the session's identity map and unit of work are not needed for
            # a row that is only read, and every write to it is a fenced UPDATE (``settle``).
            claims.append(Claim(built(OutboxMessage, _KEYS, values)))
        claims.sort(key=lambda claim: (claim.due_at, claim.id))
        return claims

    async def renew(self, claims: Iterable[Claim], *, lease_until: datetime) -> set[int]:
        """Extend the lease of rows this worker still holds; returns the ids it still holds."""
        keys = [(claim.id, claim.attempts) for claim in claims]
        if not keys:
            return set()
        result = await self._orm.execute(
            update(OutboxMessage)
            .where(
                tuple_(OutboxMessage.id, OutboxMessage.attempts).in_(keys),
                OutboxMessage.status == OutboxStatus.SENDING,
            )
            .values(lease_until=lease_until)
            .returning(OutboxMessage.id)
            .execution_options(synchronize_session=False)
        )
        return set(result.scalars().all())

    async def settle(self, claim: Claim, **values: Any) -> bool:
        """Write a held row (its result, or progress); False if the lease was lost meanwhile."""
        return bool(
            await _settle(tuple(sorted(values))).rowcount(
                self.session,
                {"id_": claim.id, "attempts_": claim.attempts}
                | {f"{key}_": value for key, value in values.items()},
            )
        )

    async def mark_sent(self, claim: Claim, *, now: datetime, access_of: int | None) -> bool:
        """Record a held row as sent; with ``access_of``, also the first moment that ticket's
        access reached its holder (organizers see it in /participants). In the caller's
        transaction: two statements on SQLite, one on PostgreSQL. False if the lease was lost
        meanwhile (the ticket is marked all the same: the message did go out)."""
        sent = {"status": OutboxStatus.SENT, "lease_until": None, "last_error": None}
        if access_of is not None and self.dialect == "postgresql":
            # One round trip: the ticket's mark rides on the row's as a data-modifying CTE,
            # which PostgreSQL runs whether or not the outer statement matches a row.
            return bool(
                await _SENT_AND_DELIVERED.rowcount(
                    self.session,
                    {"id_": claim.id, "attempts_": claim.attempts, "ticket_id_": access_of}
                    | {f"{key}_": value for key, value in sent.items()}
                    | {"sent_at_": now, "now_": now},
                )
            )
        settled = await self.settle(claim, **sent, sent_at=now)
        if access_of is not None:
            await _ACCESS_DELIVERED.rowcount(self.session, {"ticket_id_": access_of, "now_": now})
        return settled

    async def due_summary(self, now: datetime) -> tuple[int, datetime | None]:
        """How many pending rows are due at ``now``, and the due time of the oldest (the
        ``status, due_at`` index answers both)."""
        row = (
            await self._orm.execute(
                select(func.count(), func.min(OutboxMessage.due_at)).where(
                    OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.due_at <= now
                )
            )
        ).one()
        return int(row[0]), row[1]

    async def count_by_status(self, **where: Any) -> dict[OutboxStatus, int]:
        """Rows per status, filtered by column values (``broadcast_id=...``)."""
        statement = select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        for column, value in where.items():
            statement = statement.where(getattr(OutboxMessage, column) == value)
        rows = (await self._orm.execute(statement)).all()
        return {OutboxStatus(status): int(count) for status, count in rows}

    async def latest_payload(self, *, webinar_id: int, kind: OutboxKind) -> dict[str, Any] | None:
        """The payload of the webinar's newest row of ``kind`` (None if there is none)."""
        return await self._orm.scalar(
            select(OutboxMessage.payload)
            .where(OutboxMessage.webinar_id == webinar_id, OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        )

    async def later_due_exists(
        self,
        *,
        ticket_id: int | None,
        kind: OutboxKind,
        key_prefix: str,
        other_than: int,
        after: datetime,
        until: datetime,
        statuses: Iterable[OutboxStatus],
    ) -> bool:
        """Whether another row of the ticket, of ``kind``, in one of ``statuses`` and with a key
        under ``key_prefix``, falls due after ``after`` and no later than ``until``."""
        found = await self._orm.scalar(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.ticket_id == ticket_id,
                OutboxMessage.kind == kind,
                OutboxMessage.dedupe_key.startswith(key_prefix, autoescape=True),
                OutboxMessage.id != other_than,
                OutboxMessage.due_at <= until,
                OutboxMessage.due_at > after,
                OutboxMessage.status.in_(list(statuses)),
            )
            .limit(1)
        )
        return found is not None
