"""Outer middlewares on ``dp.update``: every update kind (payments and callbacks included) gets
one database session, the stored user, and the user's locale.

Two request middlewares sit on the bot's session. One keeps the rule "no database transaction
waits on Telegram": before the handler of an update calls the Bot API, the update's open
transaction is committed (services commit their writes before replying; what is left open is
reads). On SQLite, whose single connection every update shares, a read transaction held across a
network round trip would make every other update wait for that round trip; on PostgreSQL it would
be a connection "idle in transaction". The other lets a handler go on past a button's answer that
came too late for Telegram (:class:`LateCallbackAnswerMiddleware`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import TelegramObject, Update
from aiogram.types import User as TelegramUser

from bot.context import AppContext
from bot.logs import current_update_id
from bot.services import Services
from bot.services.users import Touch

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import TelegramType
    from aiogram.methods import Response, TelegramMethod
    from sqlalchemy.ext.asyncio import AsyncSession

    from storage.models import User

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
log = logging.getLogger(__name__)

# The session of the update being handled, with the task handling it: tasks started from a
# handler inherit the variable but must not touch a session that is not theirs.
_update_session: ContextVar[tuple[AsyncSession, asyncio.Task[Any] | None] | None] = ContextVar(
    "update_session", default=None
)


class LogContextMiddleware(BaseMiddleware):
    """Stamp the update's id on every log line written while it is handled."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        token = current_update_id.set(event.update_id if isinstance(event, Update) else None)
        try:
            return await handler(event, data)
        finally:
            current_update_id.reset(token)


class DatabaseMiddleware(BaseMiddleware):
    """One session per update; services commit, and what is left is committed at the end.

    An update whose handler fails is rolled back (the session closes without committing).
    """

    def __init__(self, app: AppContext) -> None:
        self.app = app

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        async with self.app.session_factory() as session:
            data["session"] = session
            data["services"] = Services(session, self.app)
            token = _update_session.set((session, asyncio.current_task()))
            try:
                result = await handler(event, data)
                if session.in_transaction():  # what no service committed: the user's profile
                    await session.commit()
                return result
            finally:
                _update_session.reset(token)


class EndTransactionMiddleware(BaseRequestMiddleware):
    """Commit the current update's open transaction before a Bot API call (see the module doc)."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        current = _update_session.get()
        if current is not None:
            session, task = current
            if task is asyncio.current_task() and session.in_transaction():
                await session.commit()
        return await make_request(bot, method)


# The callback query this update has answered: Telegram takes one answer per query, so an
# error's apology after it goes as a message (``handlers.errors``). Each update is handled in a
# task of its own, whose context this is.
answered_callback: ContextVar[str | None] = ContextVar("answered_callback", default=None)


class LateCallbackAnswerMiddleware(BaseRequestMiddleware):
    """An answer to a callback query that Telegram no longer takes is not the handler's failure.

    Telegram takes a button's answer for about 15 seconds. An update handled later (claimed
    again after a replica stopped or crashed, or retried after an error) gets "query is too old"
    for its ``answerCallbackQuery``: the user's spinner is long gone, so the answer has nothing
    left to do, while the rest of the handler (the invoice the user asked for) still has. Failing
    the update there would retry it until it is parked, and never send the invoice.

    It also records the query as answered (:data:`answered_callback`), either way: a second
    answer, an error's apology as an alert, would be refused.
    """

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if not isinstance(method, AnswerCallbackQuery):
            return await make_request(bot, method)
        try:
            response = await make_request(bot, method)
        except TelegramBadRequest as error:
            text = error.message.lower()
            if "query is too old" not in text and "query id is invalid" not in text:
                raise
            log.info("a callback query's answer came too late for Telegram; going on")
            response = True  # type: ignore[assignment] - the method's own result
        answered_callback.set(method.callback_query_id)
        return response


Profile = tuple[str, str | None, str | None, str | None]


class UserMiddleware(BaseMiddleware):
    """Store the user behind the update and use their locale for organizer-facing replies.

    A pre-checkout query skips the user's row when this process touched the same user, with the
    same profile and not blocked, on an earlier update: its handler reads nothing of the user
    (the answer is in the organization's language), the buyer's row exists (they hold an
    order), and what a touch would write is already there, so it costs no read and no write on
    the update that has Telegram's 10-second deadline. Its locale (only a failure's apology uses
    it) is the one that touch found; every other update reads the row again, so a locale changed
    on another replica is never used for more than that one query.

    Why every other update reads the row (one prebuilt statement, no ORM load: see
    ``storage.repositories.users``) rather than trust a copy kept from an earlier update: the
    row changes behind this process's back. Another replica switches the user's organization or
    records their block (a 403 seen by its outbox), a migration or a restored copy of the
    database rewrites it, and the schema itself would clear ``active_org_id`` on an
    organization's deletion (``ON DELETE SET NULL``), which no session event sees. A cache
    invalidated over Redis would still be stale between another replica's commit and the
    message reaching this one, and for good after a lost message (pub/sub delivers at most
    once); checking a version is a read of the same row. A stale organization would act on the
    wrong one, a stale "not blocked" would leave a user who writes recorded as blocked: the read
    costs less than either.

    The updates ``stored_by_handler`` picks (the webinar's deep link and the buy buttons: see
    ``handlers.participant``) are touched too, on every update, but not here: their handler's use
    case stores the user in the transaction of its own it runs anyway, from the :class:`Touch`
    left in the update's data (``touch``; ``user`` is then ``None``), instead of in the
    session's, which would cost a session's transaction for one or two statements. The locale
    the handler runs in is the one this process last found for the user, else the client's;
    the stored row's (``touch.locale``) is used once it is known, by the handler for what it
    says in the user's language and by an error's apology. An update no such use case takes
    (a malformed button, say) leaves the row as it was until the user's next update.
    """

    MAX_SEEN = 50_000  # users remembered per process; the oldest are forgotten first

    def __init__(
        self, app: AppContext, *, stored_by_handler: Callable[[Update], bool] | None = None
    ) -> None:
        self.app = app
        self._stored_by_handler = stored_by_handler or _never
        self._seen: dict[int, tuple[Profile, str]] = {}

    def _remember(self, user_id: int, profile: Profile, locale: str) -> None:
        seen = self._seen
        seen.pop(user_id, None)
        if len(seen) >= self.MAX_SEEN:
            del seen[next(iter(seen))]
        seen[user_id] = (profile, locale)

    def _found(self, user_id: int, profile: Profile, user: User, locale: str) -> None:
        """Note what a touch found: a user not blocked is remembered (see the class doc)."""
        if user.blocked_at is None:
            self._remember(user_id, profile, locale)
        else:
            self._seen.pop(user_id, None)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        telegram_user: TelegramUser | None = data.get("event_from_user")
        services: Services = data["services"]
        translator = self.app.translator
        user = None
        touch: Touch | None = None
        locale: str | None = None
        if telegram_user is not None and not telegram_user.is_bot:
            user_id = telegram_user.id
            profile: Profile = (
                telegram_user.first_name,
                telegram_user.last_name,
                telegram_user.username,
                telegram_user.language_code,
            )
            seen = self._seen.get(user_id)
            known = seen[1] if seen is not None and seen[0] == profile else None
            if isinstance(event, Update) and self._stored_by_handler(event):
                touch = Touch(
                    user_id,
                    *profile,
                    reachable=True,  # a message or a button: the user wrote to the bot
                    locale=known or services.users.client_locale(profile[3]),
                )
                data["touch"] = touch
                locale = touch.locale
            elif (
                known is not None
                and isinstance(event, Update)
                and event.pre_checkout_query is not None
            ):
                locale = known
            else:
                user = await services.users.touch(
                    user_id,
                    first_name=profile[0],
                    last_name=profile[1],
                    username=profile[2],
                    language_code=profile[3],
                    # "The bot was blocked" comes as an update from the user; it is no sign of life.
                    reachable=not (isinstance(event, Update) and event.my_chat_member is not None),
                )
                locale = services.users.locale_of(user)
                self._found(user_id, profile, user, locale)
        if locale is None:
            locale = services.users.locale_of(user)
        data["user"] = user
        data["locale"] = locale
        try:
            with translator.context(), translator.use_locale(locale):
                return await handler(event, data)
        finally:
            if touch is not None and touch.user is not None:
                data["locale"] = touch.locale  # for an error's apology, which runs after this
                self._found(touch.user_id, profile, touch.user, touch.locale)


def _never(_update: Update) -> bool:
    return False
