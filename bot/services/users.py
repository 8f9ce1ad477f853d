from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import LOCALES, normalize_locale
from bot.services.base import Service
from storage.direct import Transaction
from storage.models import User
from storage.repositories.users import UserRepository


@dataclass(slots=True)
class Touch:
    """The user behind an update, left by the user middleware for the update's use case to store
    in its own transaction (``bot.middlewares.UserMiddleware``): the profile Telegram sent, and
    whether the update is a sign of life. :meth:`UserService.store` fills in the rest."""

    user_id: int
    first_name: str
    last_name: str | None
    username: str | None
    language_code: str | None
    reachable: bool
    locale: str  # the user's locale: the middleware's guess until the user is stored
    user: User | None = None  # the stored row (read-only), once stored


class UserService(Service):
    @property
    def repo(self) -> UserRepository:
        return UserRepository(self.session)

    async def touch(
        self,
        user_id: int,
        *,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        reachable: bool = True,
    ) -> User:
        """Create or refresh the user behind an update (``reachable``: they wrote to the bot).

        Not committed here: the change rides on the update's transaction, which the handler's
        service commits, or the bot before its first reply, or the update's end (see
        ``bot.middlewares``): one transaction per update instead of two.
        """
        return await self.repo.upsert(
            user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            now=self.clock.now(),
            reachable=reachable,
        )

    async def store(self, on: AsyncSession | Transaction, touch: Touch) -> User:
        """Store the user of ``touch`` in ``on``, the use case's transaction, as the middleware
        would have in the update's (see :meth:`touch`); the touch then knows the row and the
        user's locale."""
        user = await UserRepository(on).upsert(
            touch.user_id,
            first_name=touch.first_name,
            last_name=touch.last_name,
            username=touch.username,
            language_code=touch.language_code,
            now=self.clock.now(),
            reachable=touch.reachable,
        )
        touch.user = user
        touch.locale = self.locale_of(user)
        return user

    async def set_locale(self, user: User, locale: str) -> User:
        if locale not in LOCALES:
            msg = f"unknown locale {locale!r}"
            raise ValueError(msg)
        user.locale = locale
        user.updated_at = self.clock.now()
        await self.session.commit()
        return user

    def locale_of(self, user: User | None) -> str:
        """The locale an organizer's own replies use: chosen, else client's, else default."""
        if user is not None and user.locale:
            return user.locale
        return self.client_locale(user.language_code if user is not None else None)

    def client_locale(self, language_code: str | None) -> str:
        """The locale of a Telegram client's language, else the default."""
        return normalize_locale(language_code) or self.app.settings.default_locale

    async def mark_blocked(self, user_id: int) -> None:
        await self.repo.mark_blocked(user_id, self.clock.now())
        await self.session.commit()

    async def mark_reachable(self, user_id: int) -> None:
        await self.repo.mark_reachable(user_id, self.clock.now())
        await self.session.commit()
