"""Users: the row behind every update, read and written without the ORM's loading machinery.

Every update reads its user (``bot.middlewares.UserMiddleware``), so what that read costs is paid
on every update. ``Session.get`` builds a loading context, runs the ORM's row processing and
identity bookkeeping: on a profiled ticket rush it was about 7% of the bot's CPU, twice what a
Core ``SELECT`` of the same row costs. So :meth:`UserRepository.upsert` reads the row with a
statement built once (SQLAlchemy's statement cache then skips compilation), writes a changed
profile or an unblock with one prebuilt ``UPDATE`` (or a new user with one ``INSERT``), and
hands back an ordinary persistent ``User``: the row's values set as its committed state and the
instance put in the session's identity map, exactly as a load would. Handlers that change it
(locale, time zone, active organization) get their ``UPDATE`` flushed by the ORM as before, and
a later ``session.get`` in the same session returns the same object.

Nothing is cached between updates: the row is read again on each one, so a change made by
another process or replica (a switched organization, a block seen by the outbox) is never
missed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.direct import Prebuilt
from storage.models import User
from storage.repositories.base import DirectRepository

_USERS = User.__table__
_COLUMNS = tuple(column.key for column in _USERS.columns)
_BY_ID = Prebuilt(select(_USERS).where(_USERS.c.id == bindparam("user_id")))
_INSERT = {
    "postgresql": Prebuilt(pg_insert(_USERS).on_conflict_do_nothing(index_elements=["id"])),
    "sqlite": Prebuilt(sqlite_insert(_USERS).on_conflict_do_nothing(index_elements=["id"])),
}
_PROFILE = ("first_name", "last_name", "username", "language_code")
_REFRESH = update(_USERS).where(_USERS.c.id == bindparam("user_id"))
# A changed profile, with or without an unblock.
_NEW_PROFILE = Prebuilt(
    _REFRESH.values({key: bindparam(f"{key}_") for key in (*_PROFILE, "updated_at")})
)
_NEW_PROFILE_UNBLOCKED = Prebuilt(
    _REFRESH.values({key: bindparam(f"{key}_") for key in (*_PROFILE, "updated_at", "blocked_at")})
)


class UserRepository(DirectRepository):
    async def get(self, user_id: int) -> User | None:
        return await self._orm.get(User, user_id)

    async def upsert(
        self,
        user_id: int,
        *,
        first_name: str,
        last_name: str | None,
        username: str | None,
        language_code: str | None,
        now: datetime,
        reachable: bool = True,
    ) -> User:
        """Create the user or refresh the profile fields Telegram sends with every update.

        The first read of the user in the update's session (the middleware's); an instance the
        session already held would be handed back refreshed (``attached``). In a transaction
        without a session, a read-only ``User``.
        """
        session = self.session
        found = await _BY_ID.first(session, {"user_id": user_id})
        profile = {
            "first_name": first_name,
            "last_name": last_name,
            "username": username,
            "language_code": language_code,
        }
        if found is None:
            values = dict.fromkeys(_COLUMNS)
            values.update(profile, id=user_id, created_at=now)
            if await _INSERT[self.dialect].rowcount(session, values):
                return self._model(User, _COLUMNS, tuple(values[key] for key in _COLUMNS))
            # A new user's second update (a double tap) stored them first, in another
            # transaction: theirs is the row. A plain INSERT failed this update on PostgreSQL.
            found = await _BY_ID.first(session, {"user_id": user_id})
            assert found is not None
        row = dict(zip(_COLUMNS, found, strict=True))
        unblocked = reachable and row["blocked_at"] is not None
        if unblocked or any(row[key] != profile[key] for key in _PROFILE):
            changes: dict[str, Any] = {**profile, "updated_at": now}
            if unblocked:  # a user who writes to the bot has unblocked it
                changes["blocked_at"] = None
            # Only what this update knows better than the row: a block another transaction
            # records meanwhile (a 403 on a send) is not written over with the value read here.
            refresh = _NEW_PROFILE_UNBLOCKED if unblocked else _NEW_PROFILE
            values = {f"{key}_": value for key, value in changes.items()}
            await refresh.rowcount(session, {"user_id": user_id, **values})
            row.update(changes)
        return self._model(User, _COLUMNS, tuple(row[key] for key in _COLUMNS))

    async def mark_blocked(self, user_id: int, now: datetime) -> None:
        await self._orm.execute(
            update(User).where(User.id == user_id, User.blocked_at.is_(None)).values(blocked_at=now)
        )

    async def mark_reachable(self, user_id: int, now: datetime) -> None:
        await self._orm.execute(
            update(User).where(User.id == user_id).values(blocked_at=None, updated_at=now)
        )

    async def by_ids(self, user_ids: list[int]) -> dict[int, User]:
        if not user_ids:
            return {}
        rows = await self._orm.scalars(select(User).where(User.id.in_(user_ids)))
        return {user.id: user for user in rows}
