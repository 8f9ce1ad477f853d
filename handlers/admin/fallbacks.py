"""The last admin router: polite answers for non-organizers, stale buttons and stray input."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.i18n import _
from bot.services import Services
from handlers.admin.base import ADMIN_PREFIXES
from handlers.admin.wizard import ADMIN_STATES, ask_again
from storage.models import User

router = Router(name=__name__)

ORGANIZER_COMMANDS = ("org", "team", "newwebinar", "webinars", "participants", "stats")


@router.message(Command(*ORGANIZER_COMMANDS))
async def not_an_organizer(message: Message, services: Services, user: User) -> None:
    """An organizer command from someone who organizes nothing."""
    if services.organizations.can_create(user.id):
        await message.answer(
            _("You don't have an organization yet. /neworg creates one in a minute.")
        )
        return
    await message.answer(
        _(
            "This command is for webinar organizers. To sell your webinars here, ask an "
            "organizer for a team invite link, or the bot's owner for access."
        )
    )


@router.message(StateFilter(*ADMIN_STATES), ~F.text.startswith("/"))
async def unexpected_input(
    message: Message, state: FSMContext, services: Services, user: User
) -> None:
    """A sticker, photo or file where the wizard waits for something else."""
    await message.answer(_("That's not what I asked for. Answer the question, or /cancel."))
    await ask_again(message, state, services, user)


@router.callback_query(F.data.startswith(ADMIN_PREFIXES))
async def stale_admin_button(query: CallbackQuery) -> None:
    """A button from an old message, another chat's, or forged: change nothing."""
    await query.answer(_("This button is no longer active."), show_alert=True)
