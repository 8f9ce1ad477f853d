"""A command sent in the middle of an organizer wizard: say so, and ask the question again.

Checked before every other admin router, so starting /newwebinar while /neworg waits for an
answer never mixes the two; /cancel, /help and /language pass through to their usual handlers.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from bot.i18n import _
from bot.services import Services
from handlers.admin import neworg, newwebinar
from handlers.admin.edit import WebinarEdit
from handlers.admin.links import LinkImport
from handlers.admin.org import OrgEdit
from storage.models import User

router = Router(name=__name__)

ADMIN_STATES = (neworg.NewOrg, newwebinar.NewWebinar, OrgEdit, WebinarEdit, LinkImport)
PASS_THROUGH = r"^/(?!cancel\b|help\b|language\b)"


async def ask_again(message: Message, state: FSMContext, services: Services, user: User) -> None:
    """Repeat the question the wizard is waiting for."""
    current = await state.get_state()
    data = await state.get_data()
    if current in neworg.NewOrg.__all_states_names__:
        text, markup = neworg.prompt(current)
        await message.answer(text, reply_markup=markup)
        return
    membership = await services.organizations.current(user)
    if current in newwebinar.NewWebinar.__all_states_names__ and membership is not None:
        text, markup = newwebinar.prompt(
            current, membership.org, services.app.clock.now(), editing=bool(data.get("edit_id"))
        )
        await message.answer(text, reply_markup=markup)
        return
    await message.answer(_("Send the answer to the question above."))


@router.message(StateFilter(*ADMIN_STATES), F.text.regexp(PASS_THROUGH))
async def command_in_wizard(
    message: Message, state: FSMContext, services: Services, user: User
) -> None:
    """Another command while a wizard waits: finish it or /cancel it first."""
    current = await state.get_state()
    data = await state.get_data()
    if current in neworg.NewOrg.__all_states_names__:
        what = _("You are creating an organization.")
    elif current in newwebinar.NewWebinar.__all_states_names__ and not data.get("edit_id"):
        what = _("You are creating a webinar.")
    else:
        what = _("You are changing a setting.")
    await message.answer(
        _("{what} Answer the question below to go on, or /cancel to leave it.", what=what)
    )
    await ask_again(message, state, services, user)
