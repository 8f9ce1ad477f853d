"""/neworg: a five-step wizard that creates an organization (name, e-mail, language, currency,
time zone). Open to the bot's owners, or to everyone when registration is open."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.commands import set_organizer_commands
from bot.formatting import escape
from bot.i18n import LANGUAGE_NAMES, LOCALES, _
from bot.services import Services
from bot.services.admin_input import COMMON_TIMEZONES, CURRENCIES, parse_email, parse_org_name
from bot.services.admin_input import parse_timezone as check_timezone
from bot.services.organizations import OrganizationService, OrgDraft
from handlers.admin.base import WizardChoice, reply
from storage.models import User

router = Router(name=__name__)


class NewOrg(StatesGroup):
    name = State()
    email = State()
    language = State()
    currency = State()
    timezone = State()


def choices(step: str, options: list[tuple[str, str]], width: int = 2) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for text, value in options:
        builder.button(text=text, callback_data=WizardChoice(step=step, value=value))
    builder.adjust(width)
    return builder.as_markup()


def language_choices(step: str) -> InlineKeyboardMarkup:
    return choices(step, [(LANGUAGE_NAMES[code], code) for code in LOCALES])


def currency_choices(step: str) -> InlineKeyboardMarkup:
    return choices(step, [(code, code) for code in CURRENCIES], width=3)


def timezone_choices(step: str) -> InlineKeyboardMarkup:
    return choices(step, [(zone, zone) for zone in COMMON_TIMEZONES])


def prompt(state: str | None) -> tuple[str, InlineKeyboardMarkup | None]:
    """The question of a step, asked again when the organizer comes back to it."""
    if state == NewOrg.email.state:
        return _("Step 2 of 5. A contact e-mail for participants, like team@example.org:"), None
    if state == NewOrg.language.state:
        return (
            _("Step 3 of 5. Which language will participants read?"),
            language_choices("org_language"),
        )
    if state == NewOrg.currency.state:
        return _("Step 4 of 5. The currency of card prices:"), currency_choices("org_currency")
    if state == NewOrg.timezone.state:
        return (
            _(
                "Step 5 of 5. Your time zone: webinar times are typed and shown in it. "
                "Choose one or send its name, like Europe/Rome or Asia/Tokyo."
            ),
            timezone_choices("org_timezone"),
        )
    return _("Step 1 of 5. The organization's name, as participants will see it:"), None


@router.message(Command("neworg"))
async def new_org(message: Message, user: User, services: Services, state: FSMContext) -> None:
    """Start the wizard, or explain who may create organizations."""
    if not services.organizations.can_create(user.id):
        await message.answer(
            _(
                "Creating organizations is not open on this bot. Ask the bot's owner for access, "
                "or ask an organizer for a team invite link."
            )
        )
        return
    await state.set_state(NewOrg.name)
    await state.set_data({})
    await message.answer(_("Let's create your organization. /cancel stops at any step."))
    await message.answer(prompt(NewOrg.name.state)[0])


@router.message(NewOrg.name, F.text, ~F.text.startswith("/"))
async def got_name(message: Message, state: FSMContext) -> None:
    """Step 1: the name."""
    await state.update_data(name=parse_org_name(message.text or ""))
    await state.set_state(NewOrg.email)
    await message.answer(prompt(NewOrg.email.state)[0])


@router.message(NewOrg.email, F.text, ~F.text.startswith("/"))
async def got_email(message: Message, state: FSMContext) -> None:
    """Step 2: the contact e-mail."""
    await state.update_data(email=parse_email(message.text or ""))
    await state.set_state(NewOrg.language)
    text, markup = prompt(NewOrg.language.state)
    await message.answer(text, reply_markup=markup)


@router.callback_query(NewOrg.language, WizardChoice.filter(F.step == "org_language"))
async def got_language(
    query: CallbackQuery, callback_data: WizardChoice, state: FSMContext
) -> None:
    """Step 3: the participants' language."""
    await state.update_data(language=OrganizationService.check_language(callback_data.value))
    await state.set_state(NewOrg.currency)
    await query.answer(LANGUAGE_NAMES[callback_data.value])
    await reply(query, *prompt(NewOrg.currency.state))


@router.callback_query(NewOrg.currency, WizardChoice.filter(F.step == "org_currency"))
async def got_currency(
    query: CallbackQuery, callback_data: WizardChoice, state: FSMContext
) -> None:
    """Step 4: the currency."""
    if callback_data.value not in CURRENCIES:
        await query.answer(_("Choose one of the currencies on the buttons."), show_alert=True)
        return
    await state.update_data(currency=callback_data.value)
    await state.set_state(NewOrg.timezone)
    await query.answer(callback_data.value)
    await reply(query, *prompt(NewOrg.timezone.state))


@router.message(NewOrg.language, F.text, ~F.text.startswith("/"))
@router.message(NewOrg.currency, F.text, ~F.text.startswith("/"))
async def typed_instead_of_choosing(message: Message, state: FSMContext) -> None:
    """Steps 3 and 4 are answered with buttons: show them again."""
    text, markup = prompt(await state.get_state())
    await message.answer(_("Please choose with a button."))
    await message.answer(text, reply_markup=markup)


@router.callback_query(NewOrg.timezone, WizardChoice.filter(F.step == "org_timezone"))
async def chose_timezone(
    query: CallbackQuery,
    callback_data: WizardChoice,
    state: FSMContext,
    user: User,
    services: Services,
    bot: Bot,
    locale: str,
) -> None:
    """Step 5 by button: create the organization."""
    await query.answer()
    if isinstance(query.message, Message):
        await finish(query.message, callback_data.value, state, user, services, bot, locale)


@router.message(NewOrg.timezone, F.text, ~F.text.startswith("/"))
async def typed_timezone(
    message: Message, state: FSMContext, user: User, services: Services, bot: Bot, locale: str
) -> None:
    """Step 5 typed: create the organization."""
    await finish(message, message.text or "", state, user, services, bot, locale)


async def finish(
    message: Message,
    timezone: str,
    state: FSMContext,
    user: User,
    services: Services,
    bot: Bot,
    locale: str,
) -> None:
    data = await state.get_data()
    draft = OrgDraft(
        name=data["name"],
        contact_email=data["email"],
        language=data["language"],
        currency=data["currency"],
        timezone=check_timezone(timezone),
    )
    org = await services.organizations.create(user, draft)
    await state.clear()
    await set_organizer_commands(bot, user.id, locale)
    await message.answer(
        _(
            "🎉 <b>{name}</b> is ready.\n\n"
            "/newwebinar creates your first webinar.\n"
            "/org shows the settings and payment methods (Telegram Stars are on).\n"
            "/team invites co-organizers.",
            name=escape(org.name),
        )
    )
