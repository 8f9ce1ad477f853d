from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from storage.models import User
from storage.repositories.base import Repository


class UserRepository(Repository):
    async def get(self, user_id: int) -> User | None:
        return await self.session.get(User, user_id)

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
        """Create the user or refresh the profile fields Telegram sends with every update."""
        user = await self.session.get(User, user_id)
        if user is None:
            user = User(
                id=user_id,
                first_name=first_name,
                last_name=last_name,
                username=username,
                language_code=language_code,
                created_at=now,
            )
            self.session.add(user)
            await self.session.flush()
            return user
        changed = (user.first_name, user.last_name, user.username, user.language_code) != (
            first_name,
            last_name,
            username,
            language_code,
        )
        unblocked = reachable and user.blocked_at is not None
        if changed or unblocked:
            user.first_name, user.last_name = first_name, last_name
            user.username, user.language_code = username, language_code
            if unblocked:  # a user who writes to the bot has unblocked it
                user.blocked_at = None
            user.updated_at = now
            await self.session.flush()
        return user

    async def mark_blocked(self, user_id: int, now: datetime) -> None:
        await self.session.execute(
            update(User).where(User.id == user_id, User.blocked_at.is_(None)).values(blocked_at=now)
        )

    async def mark_reachable(self, user_id: int, now: datetime) -> None:
        await self.session.execute(
            update(User).where(User.id == user_id).values(blocked_at=None, updated_at=now)
        )

    async def by_ids(self, user_ids: list[int]) -> dict[int, User]:
        if not user_ids:
            return {}
        rows = await self.session.scalars(select(User).where(User.id.in_(user_ids)))
        return {user.id: user for user in rows}
