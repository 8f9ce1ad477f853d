"""``/start inv_<code>``: a co-organizer opens a team invite link and joins the organization."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from bot.commands import set_organizer_commands
from bot.formatting import escape
from bot.i18n import _
from bot.services import Services
from bot.services.organizations import INVITE_PREFIX
from storage.models import User

router = Router(name=__name__)
log = logging.getLogger(__name__)


@router.message(CommandStart(deep_link=True, magic=F.args.startswith(INVITE_PREFIX)))
async def accept_invite(
    message: Message,
    command: CommandObject,
    user: User,
    services: Services,
    state: FSMContext,
    bot: Bot,
    locale: str,
) -> None:
    """Join the team the link invites to and get the organizer menu."""
    code = (command.args or "").removeprefix(INVITE_PREFIX)
    joined = await services.organizations.accept_invite(user, code)
    await state.clear()
    await set_organizer_commands(bot, user.id, locale)
    await message.answer(
        _(
            "Welcome to the team of <b>{org}</b>! You can now manage its webinars.\n\n"
            "/webinars lists them, /newwebinar creates one, /org shows the settings.",
            org=escape(joined.org.name),
        )
    )
    owner = joined.org.created_by
    try:
        owner_user = await services.users.repo.get(owner)
        await bot.send_message(
            owner,
            _(
                "{name} joined the team of {org}.",
                locale=services.users.locale_of(owner_user),
                name=escape(user.full_name),
                org=escape(joined.org.name),
            ),
        )
    except TelegramAPIError:
        # The owner may have blocked the bot; the new member is in the team all the same.
        log.info("could not tell the owner of org %s about a new member", joined.org.id)
