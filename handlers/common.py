"""Commands everyone has: /start without a payload, /help, /language, /cancel."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import (
    KICKED,
    MEMBER,
    ChatMemberUpdatedFilter,
    Command,
    CommandStart,
    StateFilter,
)
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, ChatMemberUpdated, Message

from bot.commands import set_organizer_commands
from bot.formatting import escape
from bot.i18n import LOCALES, N_, _
from bot.services import Services
from handlers.keyboards import LanguageCallback, language_keyboard
from storage.models import User

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")
router.my_chat_member.filter(F.chat.type == "private")


@router.message(CommandStart(deep_link=False))
async def start(message: Message, user: User) -> None:
    """Greet a user who opened the bot without a webinar link."""
    await message.answer(
        _(
            "Hello, {name}! I sell access to webinars.\n\n"
            "Open a webinar's link to see it and pay right here in the chat. "
            "/my shows the webinars you bought. /help lists everything I can do.",
            name=escape(user.first_name or user.full_name),
        )
    )


# /help, one catalog entry per line: a command is added where it belongs, not by editing one big
# translated text. Every command of the menu (bot.commands) is here, a test checks it.
HELP_SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        N_("<b>For participants</b>"),
        [
            ("my", N_("your webinars and their access")),
            ("language", N_("the language of my replies to you")),
            ("timezone", N_("your time zone")),
            ("paysupport", N_("help with a payment")),
            ("terms", N_("terms of sale")),
        ],
    ),
    (
        N_("<b>For organizers</b>"),
        [
            ("neworg", N_("create an organization")),
            ("org", N_("your organization's settings")),
            ("team", N_("co-organizers")),
            ("newwebinar", N_("create a webinar")),
            ("webinars", N_("your webinars, their links and sales")),
            ("participants", N_("who paid, with a CSV export")),
            ("stats", N_("sales figures")),
            ("refund", N_("refund a ticket")),
            ("broadcast", N_("message every participant of a webinar")),
            ("cancel", N_("leave the current step")),
        ],
    ),
]


@router.message(Command("help"))
async def help_command(message: Message) -> None:
    """List the commands."""
    await message.answer(
        "\n\n".join(
            "\n".join([_(heading), *(f"/{name}: {_(text)}" for name, text in lines)])
            for heading, lines in HELP_SECTIONS
        )
    )


@router.message(Command("language"))
async def language_command(message: Message, user: User, locale: str) -> None:
    """Offer the interface languages."""
    await message.answer(_("Choose your language:"), reply_markup=language_keyboard(locale))


@router.callback_query(LanguageCallback.filter(F.locale.in_(LOCALES)))
async def language_chosen(
    query: CallbackQuery, callback_data: LanguageCallback, user: User, services: Services
) -> None:
    """Store the chosen language and answer in it."""
    await services.users.set_locale(user, callback_data.locale)
    text = _("Done: I will talk to you in English.", locale=callback_data.locale)
    if query.bot is not None and await services.organizations.memberships(user.id):
        # An organizer's menu is set per chat in their language: follow the new choice.
        await set_organizer_commands(query.bot, user.id, callback_data.locale)
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(text)


@router.message(Command("cancel"))
async def cancel(message: Message, state: FSMContext) -> None:
    """Leave any wizard."""
    if await state.get_state() is None:
        await message.answer(_("There is nothing to cancel."))
        return
    await state.clear()
    await message.answer(_("Cancelled. Nothing was changed."))


@router.callback_query()
async def stale_button(query: CallbackQuery) -> None:
    """A button from an old message, or data we do not know: say so instead of spinning."""
    await query.answer(_("This button is no longer active."), show_alert=False)


@router.message(StateFilter(None), F.text.startswith("/"))
async def unknown_command(message: Message) -> None:
    """An unknown command."""
    await message.answer(_("I don't know this command. /help lists what I can do."))


@router.my_chat_member(ChatMemberUpdatedFilter(member_status_changed=KICKED))
async def bot_blocked(event: ChatMemberUpdated, services: Services) -> None:
    """The user blocked the bot: organizers see them as unreachable."""
    await services.users.mark_blocked(event.from_user.id)


@router.my_chat_member(ChatMemberUpdatedFilter(member_status_changed=MEMBER))
async def bot_unblocked(event: ChatMemberUpdated, services: Services) -> None:
    """The user unblocked the bot: reachable again."""
    await services.users.mark_reachable(event.from_user.id)
