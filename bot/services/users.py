from __future__ import annotations

from bot.i18n import LOCALES, normalize_locale
from bot.services.base import Service
from storage.models import User
from storage.repositories.users import UserRepository


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
        if user is not None:
            if user.locale:
                return user.locale
            client = normalize_locale(user.language_code)
            if client:
                return client
        return self.app.settings.default_locale

    async def mark_blocked(self, user_id: int) -> None:
        await self.repo.mark_blocked(user_id, self.clock.now())
        await self.session.commit()

    async def mark_reachable(self, user_id: int) -> None:
        await self.repo.mark_reachable(user_id, self.clock.now())
        await self.session.commit()
