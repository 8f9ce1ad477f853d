"""What every organizer router shares: the organizer filter, callback data, refusals, replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import BaseFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, TelegramObject

from bot.services import Services
from bot.services.admin_input import AdminError
from storage.models import User

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class IsOrganizer(BaseFilter):
    """Passes members of an organization and hands the handler their ``membership``.

    Set on whole routers, so no organizer handler can forget the check; the membership it
    passes on is the only way handlers learn which organization's data they may touch.
    """

    async def __call__(
        self, event: TelegramObject, services: Services, user: User | None = None
    ) -> bool | dict[str, Any]:
        membership = await services.organizations.current(user)
        return {"membership": membership} if membership is not None else False


class AdminErrors(BaseMiddleware):
    """Turns a service's refusal into a reply in the organizer's language; nothing else changes.

    An outer middleware on the admin router: it runs inside the locale set for the update, which
    the dispatcher-wide error handler does not.
    """

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        try:
            return await handler(event, data)
        except AdminError as error:
            text = error.render()
            if isinstance(event, CallbackQuery):
                await event.answer(text, show_alert=True)
            elif isinstance(event, Message):
                await event.answer(text)
            return None


class OrgAction(CallbackData, prefix="ao"):
    action: str  # edit, pay, orgs, switch, card
    value: str = ""


class TeamAction(CallbackData, prefix="at"):
    action: str  # show, invite, remove, remove_yes, leave, leave_yes
    user_id: int = 0


class WebinarAction(CallbackData, prefix="aw"):
    action: str
    id: int = 0
    value: str = ""


class WizardChoice(CallbackData, prefix="az"):
    """A button answering the current wizard step, instead of typing."""

    step: str
    value: str = ""


ADMIN_PREFIXES = ("ao:", "at:", "aw:", "az:")


async def show(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Replace the pressed message (a card changes in place), or send anew if it is gone."""
    message = query.message
    if isinstance(message, Message):
        try:
            await message.edit_text(text, reply_markup=markup)
            return
        except TelegramBadRequest as error:
            # Pressing the same button twice asks for an identical edit: nothing to do.
            if "not modified" in error.message:
                return
    await reply(query, text, markup)


async def reply(
    query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """A new message below the pressed one (prompts, results that must stay in the chat)."""
    if query.bot is not None:
        await query.bot.send_message(query.from_user.id, text, reply_markup=markup)
