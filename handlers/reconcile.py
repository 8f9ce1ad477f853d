"""``/reconcile [days]``: the bot's owners check the payment providers against our payments now.

The same run as the hourly job (:mod:`bot.services.reconcile`), over the last ``days``; the
owner who asks always gets the report as the answer, the other owners only when it found
something. Everybody else is refused, by a filter on the router.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import BaseFilter, Command, CommandObject
from aiogram.types import Message

from bot.i18n import _
from bot.services import Services
from bot.services.reconcile import DEFAULT_DAYS, MAX_DAYS, report_text
from storage.models import User


class IsBotOwner(BaseFilter):
    """Passes messages from the bot's owners (``BOT_OWNER_IDS``) only."""

    async def __call__(self, message: Message, services: Services) -> bool:
        sender = message.from_user
        return sender is not None and sender.id in services.app.settings.bot_owner_ids


router = Router(name=__name__)
router.message.filter(F.chat.type == "private")
owners = Router(name=f"{__name__}.owners")
owners.message.filter(IsBotOwner())
others = Router(name=f"{__name__}.others")
router.include_routers(owners, others)


@owners.message(Command("reconcile"))
async def reconcile_command(
    message: Message, command: CommandObject, user: User, services: Services
) -> None:
    """Reconcile the last ``days`` (default 3) now and answer with the report."""
    arg = (command.args or "").strip()
    if arg and not (arg.isdigit() and 1 <= int(arg) <= MAX_DAYS):
        await message.answer(
            _(
                "Send /reconcile to check the last {default} days with the payment providers, "
                "or /reconcile followed by a number of days from 1 to {max}, e.g. "
                "<code>/reconcile 7</code>.",
                default=DEFAULT_DAYS,
                max=MAX_DAYS,
            )
        )
        return
    report = await services.reconcile.run(
        days=int(arg) if arg else DEFAULT_DAYS, requested_by=user.id
    )
    await message.answer(report_text(report))


@others.message(Command("reconcile"))
async def not_an_owner(message: Message) -> None:
    """Anyone else: refused, and nothing is checked."""
    await message.answer(_("This command is for the bot's owners."))
