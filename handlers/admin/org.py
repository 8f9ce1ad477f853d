"""/org: the organization's card, a button per setting, payment methods, switching organizations."""

from __future__ import annotations

from datetime import time, timedelta

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder
from babel.dates import format_time

from bot.formatting import babel_locale, escape
from bot.i18n import LANGUAGE_NAMES, _, current_locale
from bot.services import Services
from bot.services.organizations import FEEDBACK_DELAYS, SUMMARY_HOURS, Membership, OrgField
from bot.services.reminders import time_left
from handlers.admin.base import IsOrganizer, OrgAction, WizardChoice, reply, show
from handlers.admin.neworg import currency_choices, language_choices, timezone_choices
from storage.enums import PaymentMethod, Role
from storage.models import Organization, User

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

PREVIEW = 300
METHOD_NAMES = {
    PaymentMethod.STARS: "⭐ Telegram Stars",
    PaymentMethod.STRIPE: "💳 Stripe",
    PaymentMethod.YOOKASSA: "💳 YooKassa",
}


class OrgEdit(StatesGroup):
    value = State()


def role_name(role: Role) -> str:
    return _("owner") if role == Role.OWNER else _("admin")


def accepts(org: Organization, method: PaymentMethod) -> bool:
    return {
        PaymentMethod.STARS: org.accept_stars,
        PaymentMethod.STRIPE: org.accept_stripe,
        PaymentMethod.YOOKASSA: org.accept_yookassa,
    }[method]


def card(membership: Membership, configured: tuple[PaymentMethod, ...]) -> str:
    org = membership.org
    methods = []
    for method in PaymentMethod:
        if method not in configured:
            state = _("not configured on this bot")
        else:
            state = _("on") if accepts(org, method) else _("off")
        methods.append(f"  {METHOD_NAMES[method]}: {state}")
    terms = org.terms_text or ""
    if len(terms) > PREVIEW:
        terms = terms[:PREVIEW] + "…"
    return (
        _(
            "🏢 <b>{name}</b>\n"
            "Your role: {role}\n\n"
            "✉️ Contact e-mail: {email}\n"
            "🌐 Participants' language: {language}\n"
            "💱 Currency: {currency}\n"
            "🕒 Time zone: {timezone}\n"
            "🆘 Support contact: {support}\n"
            "📜 Terms of sale: {terms}\n\n"
            "Payment methods:\n{methods}",
            name=escape(org.name),
            role=role_name(membership.role),
            email=escape(org.contact_email),
            language=LANGUAGE_NAMES.get(org.language, org.language),
            currency=org.currency,
            timezone=org.timezone,
            support=escape(org.support_contact) if org.support_contact else _("not set"),
            terms=escape(terms) if terms else _("not set"),
            methods="\n".join(methods),
        )
        + "\n\n"
        + insights_lines(org)
    )


def delay_name(minutes: int | None) -> str:
    if minutes is None:
        return _("never")
    return _("{delay} after the end", delay=time_left(timedelta(minutes=minutes), current_locale()))


def hour_name(hour: int, locale: str) -> str:
    return format_time(time(hour), format="short", locale=babel_locale(locale))


def insights_lines(org: Organization) -> str:
    locale = current_locale()
    return "\n".join(
        [
            _(
                "📬 Daily summary at {time} ({timezone}): {state}",
                time=hour_name(org.summary_hour, locale),
                timezone=org.timezone,
                state=_("on") if org.daily_summary else _("off"),
            ),
            _(
                "🙏 Participants asked for a rating: {when}",
                when=delay_name(org.feedback_delay_minutes),
            ),
        ]
    )


def card_keyboard(
    membership: Membership, configured: tuple[PaymentMethod, ...], several: bool
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    labels = [
        (OrgField.NAME, _("✏️ Name")),
        (OrgField.EMAIL, _("✏️ E-mail")),
        (OrgField.LANGUAGE, _("✏️ Language")),
        (OrgField.CURRENCY, _("✏️ Currency")),
        (OrgField.TIMEZONE, _("✏️ Time zone")),
        (OrgField.SUPPORT, _("✏️ Support contact")),
        (OrgField.TERMS, _("✏️ Terms of sale")),
    ]
    for field, label in labels:
        builder.button(text=label, callback_data=OrgAction(action="edit", value=field))
    for method in configured:
        mark = "✅" if accepts(membership.org, method) else "⬜"
        builder.button(
            text=f"{mark} {METHOD_NAMES[method]}",
            callback_data=OrgAction(action="pay", value=method),
        )
    summary_mark = "✅" if membership.org.daily_summary else "⬜"
    builder.button(
        text=_("{mark} 📬 Daily summary", mark=summary_mark),
        callback_data=OrgAction(action="summary"),
    )
    builder.button(text=_("🙏 Ratings after webinars"), callback_data=OrgAction(action="fbdelay"))
    if several:
        builder.button(text=_("🔀 Switch organization"), callback_data=OrgAction(action="orgs"))
    builder.adjust(2, 2, 2, 1, *([1] * (len(configured) + 2 + several)))
    return builder.as_markup()


async def render(
    membership: Membership, services: Services, user_id: int
) -> tuple[str, InlineKeyboardMarkup]:
    configured = services.organizations.configured_methods()
    several = len(await services.organizations.memberships(user_id)) > 1
    return card(membership, configured), card_keyboard(membership, configured, several)


@router.message(Command("org"))
async def org_card(
    message: Message, membership: Membership, services: Services, user: User
) -> None:
    """Show the organization's card."""
    text, markup = await render(membership, services, user.id)
    await message.answer(text, reply_markup=markup)


@router.callback_query(OrgAction.filter(F.action == "card"))
async def back_to_card(
    query: CallbackQuery, membership: Membership, services: Services, user: User
) -> None:
    """Show the card again in place."""
    await query.answer()
    await show(query, *await render(membership, services, user.id))


def edit_prompt(field: OrgField, org: Organization) -> tuple[str, InlineKeyboardMarkup | None]:
    if field == OrgField.LANGUAGE:
        return _("Which language will participants read?"), language_choices("org_set")
    if field == OrgField.CURRENCY:
        return (
            _("The currency of card prices (webinars created before keep theirs):"),
            currency_choices("org_set"),
        )
    if field == OrgField.TIMEZONE:
        return _("Choose a time zone or send its name, like Europe/Rome:"), timezone_choices(
            "org_set"
        )
    texts = {
        OrgField.NAME: _("Send the new name:"),
        OrgField.EMAIL: _("Send the new contact e-mail:"),
        OrgField.SUPPORT: _(
            "Send the contact participants should write to about payments and access "
            "(an @username, e-mail or link). Send - to remove it."
        ),
        OrgField.TERMS: _(
            "Send the terms of sale participants see with /terms: refunds, recordings, "
            "anything they agree to by paying. Send - to remove them."
        ),
    }
    return texts[field], None


@router.callback_query(OrgAction.filter(F.action == "edit"))
async def edit_field(
    query: CallbackQuery, callback_data: OrgAction, membership: Membership, state: FSMContext
) -> None:
    """Ask for the new value of one setting."""
    if callback_data.value not in set(OrgField):
        await query.answer(_("This button is no longer active."))
        return
    field = OrgField(callback_data.value)
    await state.set_state(OrgEdit.value)
    await state.set_data({"field": field.value, "org_id": membership.org.id})
    await query.answer()
    await reply(query, *edit_prompt(field, membership.org))


async def apply(
    message: Message,
    raw: str,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    data = await state.get_data()
    if data.get("org_id") != membership.org.id:
        # The organizer switched organizations mid-edit: the question was about the other one.
        await state.clear()
        await message.answer(_("This is no longer available."))
        return
    await services.organizations.update(membership, OrgField(data["field"]), raw)
    await state.clear()
    text, markup = await render(membership, services, message.chat.id)
    await message.answer(_("Saved."))
    await message.answer(text, reply_markup=markup)


@router.message(OrgEdit.value, F.text, ~F.text.startswith("/"))
async def typed_value(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """Save a typed setting."""
    await apply(message, message.text or "", membership, services, state)


@router.callback_query(OrgEdit.value, WizardChoice.filter(F.step == "org_set"))
async def chosen_value(
    query: CallbackQuery,
    callback_data: WizardChoice,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Save a setting chosen with a button."""
    await query.answer()
    if isinstance(query.message, Message):
        await apply(query.message, callback_data.value, membership, services, state)


@router.callback_query(OrgAction.filter(F.action == "pay"))
async def toggle_method(
    query: CallbackQuery, callback_data: OrgAction, membership: Membership, services: Services
) -> None:
    """Switch a payment method on or off."""
    if callback_data.value not in set(PaymentMethod):
        await query.answer(_("This button is no longer active."))
        return
    org = await services.organizations.toggle_method(membership, PaymentMethod(callback_data.value))
    on = accepts(org, PaymentMethod(callback_data.value))
    await query.answer(_("Switched on.") if on else _("Switched off."))
    await show(query, *await render(membership, services, query.from_user.id))


@router.callback_query(OrgAction.filter(F.action == "summary"))
async def summary_hours(query: CallbackQuery, membership: Membership) -> None:
    """When the daily summary comes, or never: the choices."""
    org, locale = membership.org, current_locale()
    builder = InlineKeyboardBuilder()
    for hour in SUMMARY_HOURS:
        mark = "✓ " if org.daily_summary and hour == org.summary_hour else ""
        builder.button(
            text=mark + hour_name(hour, locale),
            callback_data=OrgAction(action="sumset", value=str(hour)),
        )
    builder.button(
        text=("✓ " if not org.daily_summary else "") + _("off"),
        callback_data=OrgAction(action="sumset", value="off"),
    )
    builder.button(text=_("⬅️ Back"), callback_data=OrgAction(action="card"))
    builder.adjust(4, 4, 1)
    await query.answer()
    await show(
        query,
        _(
            "Each day, every organizer can get a summary of the day before: tickets sold, "
            "revenue, refunds and the coming webinars, with a chart. At what time ({timezone})?",
            timezone=org.timezone,
        ),
        builder.as_markup(),
    )


@router.callback_query(OrgAction.filter(F.action == "sumset"))
async def set_summary(
    query: CallbackQuery,
    callback_data: OrgAction,
    membership: Membership,
    services: Services,
    user: User,
) -> None:
    """Save when the daily summary comes, or switch it off."""
    was_on = membership.org.daily_summary
    org = await services.organizations.set_daily_summary(membership, callback_data.value)
    if not org.daily_summary:
        await query.answer(_("Switched off."))
    else:
        await query.answer(_("Saved.") if was_on else _("Switched on."))
    await show(query, *await render(membership, services, user.id))


@router.callback_query(OrgAction.filter(F.action == "fbdelay"))
async def feedback_delays(query: CallbackQuery, membership: Membership) -> None:
    """When participants are asked for a rating: the choices."""
    builder = InlineKeyboardBuilder()
    for minutes in FEEDBACK_DELAYS:
        mark = "✓ " if minutes == membership.org.feedback_delay_minutes else ""
        builder.button(
            text=mark + delay_name(minutes),
            callback_data=OrgAction(action="fbset", value=str(minutes) if minutes else "off"),
        )
    builder.button(text=_("⬅️ Back"), callback_data=OrgAction(action="card"))
    builder.adjust(1)
    await query.answer()
    await show(
        query,
        _(
            "After each webinar, participants can be asked once to rate it from 1 to 5 and "
            "leave a comment. When should they be asked?"
        ),
        builder.as_markup(),
    )


@router.callback_query(OrgAction.filter(F.action == "fbset"))
async def set_feedback_delay(
    query: CallbackQuery,
    callback_data: OrgAction,
    membership: Membership,
    services: Services,
    user: User,
) -> None:
    """Save when participants are asked for a rating."""
    await services.organizations.set_feedback_delay(membership, callback_data.value)
    await query.answer(_("Saved."))
    await show(query, *await render(membership, services, user.id))


@router.callback_query(OrgAction.filter(F.action == "orgs"))
async def list_orgs(
    query: CallbackQuery, membership: Membership, user: User, services: Services
) -> None:
    """The organizations this user belongs to, to act for another one."""
    builder = InlineKeyboardBuilder()
    for item in await services.organizations.memberships(user.id):
        mark = "✓ " if item.org.id == membership.org.id else ""
        builder.button(
            text=f"{mark}{item.org.name} ({role_name(item.role)})",
            callback_data=OrgAction(action="switch", value=str(item.org.id)),
        )
    builder.adjust(1)
    await query.answer()
    await show(query, _("Which organization do you want to manage?"), builder.as_markup())


@router.callback_query(OrgAction.filter(F.action == "switch"))
async def switch(
    query: CallbackQuery,
    callback_data: OrgAction,
    user: User,
    services: Services,
    state: FSMContext,
) -> None:
    """Act for the chosen organization from now on."""
    if not callback_data.value.isdigit():
        await query.answer(_("This button is no longer active."))
        return
    chosen = await services.organizations.switch(user, int(callback_data.value))
    # A half-finished wizard belongs to the organization it was started for.
    await state.clear()
    await query.answer(_("Now managing {name}.", name=chosen.org.name))
    await show(query, *await render(chosen, services, user.id))
