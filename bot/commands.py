"""The command menu Telegram shows, in every supported language."""

from __future__ import annotations

import asyncio

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeAllPrivateChats, BotCommandScopeChat

from bot.i18n import LOCALES, N_, _

PARTICIPANT_COMMANDS: list[tuple[str, str]] = [
    ("start", N_("Start")),
    ("my", N_("My webinars")),
    ("language", N_("Language")),
    ("timezone", N_("Your time zone")),
    ("paysupport", N_("Help with a payment")),
    ("terms", N_("Terms of sale")),
    ("help", N_("Help")),
]

ORGANIZER_COMMANDS: list[tuple[str, str]] = [
    ("webinars", N_("Webinars, links and sales")),
    ("newwebinar", N_("Create a webinar")),
    ("participants", N_("Participants and CSV export")),
    ("refund", N_("Refund a ticket")),
    ("stats", N_("Sales figures")),
    ("broadcast", N_("Message the participants")),
    ("org", N_("Organization settings")),
    ("team", N_("Co-organizers")),
    ("neworg", N_("Create an organization")),
    ("cancel", N_("Leave the current step")),
]


def commands_for(locale: str, items: list[tuple[str, str]]) -> list[BotCommand]:
    return [BotCommand(command=name, description=_(text, locale=locale)) for name, text in items]


async def set_commands(bot: Bot) -> None:
    """Register the menu for every language; Telegram picks one by the client's language."""
    scope = BotCommandScopeAllPrivateChats()
    # Six independent calls at each start, before the first update is taken: sent together,
    # they cost one round trip to Telegram instead of six.
    await asyncio.gather(
        bot.set_my_commands(commands_for("en", PARTICIPANT_COMMANDS), scope=scope),
        *(
            bot.set_my_commands(
                commands_for(locale, PARTICIPANT_COMMANDS),
                scope=scope,
                language_code=locale.split("_")[0],
            )
            for locale in LOCALES
        ),
    )


async def set_organizer_commands(bot: Bot, chat_id: int, locale: str) -> None:
    """Give one organizer the organizer menu, in their language, in their chat only."""
    await bot.set_my_commands(
        commands_for(locale, [*ORGANIZER_COMMANDS, *PARTICIPANT_COMMANDS]),
        scope=BotCommandScopeChat(chat_id=chat_id),
    )


async def clear_organizer_commands(bot: Bot, chat_id: int) -> None:
    """Back to the participant menu, for someone who no longer organizes anything."""
    await bot.delete_my_commands(scope=BotCommandScopeChat(chat_id=chat_id))
