"""Editing a webinar from its card: one field at a time, checked like in the creation wizard."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.i18n import _, _n
from bot.services import Services
from bot.services.admin_input import DEFAULT_OFFSETS
from bot.services.organizations import Membership
from bot.services.webinars import WebinarField
from handlers.admin.base import IsOrganizer, WebinarAction, WizardChoice, reply, show
from handlers.admin.newwebinar import NO_VALUE, NewWebinar, ask, mode_choices
from handlers.admin.newwebinar import prompt as wizard_prompt
from handlers.admin.webinars import render_card
from storage.enums import AccessMode
from storage.models import Webinar

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())


class WebinarEdit(StatesGroup):
    value = State()


def field_names() -> dict[WebinarField, str]:
    return {
        WebinarField.TITLE: _("Title"),
        WebinarField.DESCRIPTION: _("Description"),
        WebinarField.START: _("Start"),
        WebinarField.DURATION: _("Duration"),
        WebinarField.PRICE: _("Card price"),
        WebinarField.STARS: _("Stars price"),
        WebinarField.SEATS: _("Seats"),
        WebinarField.REMINDERS: _("Reminders"),
        WebinarField.ROOM_URL: _("Room link"),
        WebinarField.PASSWORD: _("Room password"),
    }


def edit_menu(webinar: Webinar) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for field, name in field_names().items():
        if field in (WebinarField.ROOM_URL, WebinarField.PASSWORD) and (
            webinar.access_mode != AccessMode.PASSWORD
        ):
            continue
        builder.button(
            text=name, callback_data=WebinarAction(action="field", id=webinar.id, value=field)
        )
    if webinar.access_mode == AccessMode.GROUP:
        builder.button(
            text=_("Telegram group"), callback_data=WebinarAction(action="group", id=webinar.id)
        )
    builder.button(text=_("Access mode"), callback_data=WebinarAction(action="mode", id=webinar.id))
    builder.button(text=_("⬅️ Back"), callback_data=WebinarAction(action="open", id=webinar.id))
    builder.adjust(2)
    return builder.as_markup()


# The wizard step whose question (and buttons) an edit of the field reuses.
WIZARD_STEP: dict[WebinarField, State] = {
    WebinarField.TITLE: NewWebinar.title,
    WebinarField.DESCRIPTION: NewWebinar.description,
    WebinarField.START: NewWebinar.start,
    WebinarField.DURATION: NewWebinar.duration,
    WebinarField.PRICE: NewWebinar.price,
    WebinarField.STARS: NewWebinar.stars,
    WebinarField.SEATS: NewWebinar.seats,
    WebinarField.REMINDERS: NewWebinar.reminders,
    WebinarField.ROOM_URL: NewWebinar.room_url,
    WebinarField.PASSWORD: NewWebinar.password,
}


def edit_prompt(field: WebinarField, membership: Membership, services: Services) -> tuple[str, Any]:
    text, markup = wizard_prompt(
        WIZARD_STEP[field].state, membership.org, services.app.clock.now(), editing=True
    )
    if markup is not None:
        # Same buttons as in the wizard, answering this edit instead.
        builder = InlineKeyboardBuilder()
        for row in markup.inline_keyboard:
            for button in row:
                value = WizardChoice.unpack(button.callback_data or "").value
                if field == WebinarField.REMINDERS and value != NO_VALUE:
                    value = ", ".join(map(str, DEFAULT_OFFSETS))
                builder.button(
                    text=button.text, callback_data=WizardChoice(step="we_value", value=value)
                )
        builder.adjust(2)
        markup = builder.as_markup()
    return _("{question}\n\n/cancel keeps the current value.", question=text), markup


@router.callback_query(WebinarAction.filter(F.action == "edit"))
async def menu(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Which field to change."""
    webinar = await services.webinars.get(membership.org.id, callback_data.id)
    await query.answer()
    await show(query, _("What do you want to change?"), edit_menu(webinar))


@router.callback_query(WebinarAction.filter(F.action == "field"))
async def choose_field(
    query: CallbackQuery,
    callback_data: WebinarAction,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Ask for the new value of a field."""
    webinar = await services.webinars.get(membership.org.id, callback_data.id)
    if callback_data.value not in set(WebinarField):
        await query.answer(_("This button is no longer active."))
        return
    field = WebinarField(callback_data.value)
    await state.set_state(WebinarEdit.value)
    await state.set_data({"org_id": membership.org.id, "webinar_id": webinar.id, "field": field})
    await query.answer()
    await reply(query, *edit_prompt(field, membership, services))


async def save(
    message: Message, raw: str, membership: Membership, services: Services, state: FSMContext
) -> None:
    data = await state.get_data()
    if data.get("org_id") != membership.org.id:
        await state.clear()
        await message.answer(_("This is no longer available."))
        return
    field = WebinarField(data["field"])
    value = services.webinars.parse(field, raw, membership.org)
    outcome = await services.webinars.edit(membership.org.id, data["webinar_id"], field, value)
    await state.clear()
    await message.answer(_("Saved."))
    text, markup = await render_card(membership, services, outcome.webinar.id)
    await message.answer(text, reply_markup=markup)
    if outcome.to_notify:
        builder = InlineKeyboardBuilder()
        builder.button(
            text=_("📨 Send the new access"),
            callback_data=WebinarAction(action="resend", id=outcome.webinar.id),
        )
        await message.answer(
            _n(
                "{n} participant has the old access. Send them the new one?",
                "{n} participants have the old access. Send them the new one?",
                outcome.to_notify,
            ),
            reply_markup=builder.as_markup(),
        )


@router.message(WebinarEdit.value, F.text, ~F.text.startswith("/"))
async def typed_value(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """Save a typed value."""
    await save(message, message.text or "", membership, services, state)


@router.callback_query(WebinarEdit.value, WizardChoice.filter(F.step == "we_value"))
async def chosen_value(
    query: CallbackQuery,
    callback_data: WizardChoice,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Save a value chosen with a button (no price, unlimited seats, the usual reminders)."""
    await query.answer()
    if isinstance(query.message, Message):
        await save(query.message, callback_data.value, membership, services, state)


@router.callback_query(WebinarAction.filter(F.action == "mode"))
async def change_mode(
    query: CallbackQuery,
    callback_data: WebinarAction,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Change how participants get in: only before anyone holds a ticket."""
    webinar = await services.webinars.check_access_change(membership.org.id, callback_data.id)
    await state.set_state(NewWebinar.mode)
    await state.set_data({"org_id": membership.org.id, "edit_id": webinar.id})
    await query.answer()
    await reply(query, _("How will participants get in?"), mode_choices())


@router.callback_query(WebinarAction.filter(F.action == "group"))
async def change_group(
    query: CallbackQuery,
    callback_data: WebinarAction,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Connect another group to a group-mode webinar."""
    webinar = await services.webinars.get(membership.org.id, callback_data.id)
    await state.set_state(NewWebinar.group)
    await state.set_data({"org_id": membership.org.id, "edit_id": webinar.id})
    await query.answer()
    if isinstance(query.message, Message):
        await ask(query.message, state, membership.org, services)
