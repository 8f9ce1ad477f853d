"""/newwebinar: the creation wizard, one question per step, every answer checked in place.

The access steps (room link, password, group) also serve "change the access mode" on an existing
webinar: then ``edit_id`` is in the wizard data and the last access step saves instead of going on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    MessageOriginChannel,
    MessageOriginChat,
)

from bot.formatting import escape
from bot.i18n import _
from bot.services import Services
from bot.services.admin_input import (
    DATE_FORMATS,
    DEFAULT_OFFSETS,
    date_example,
    format_offset,
    parse_chat_ref,
)
from bot.services.link_templates import EXAMPLE as TEMPLATE_EXAMPLE
from bot.services.organizations import Membership
from bot.services.webinars import WebinarDraft, WebinarField
from handlers.admin.base import IsOrganizer, WizardChoice
from handlers.admin.neworg import choices
from handlers.admin.webinars import access_mode_name, render_card
from storage.enums import AccessMode
from storage.models import Organization, User

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

STEPS = 9
NO_VALUE = "-"


class NewWebinar(StatesGroup):
    title = State()
    description = State()
    start = State()
    duration = State()
    price = State()
    stars = State()
    seats = State()
    mode = State()
    room_url = State()
    password = State()
    group = State()
    template = State()
    reminders = State()


# The field each typed step fills, parsed by the webinar service.
FIELDS: dict[str, WebinarField] = {
    NewWebinar.title.state: WebinarField.TITLE,
    NewWebinar.description.state: WebinarField.DESCRIPTION,
    NewWebinar.start.state: WebinarField.START,
    NewWebinar.duration.state: WebinarField.DURATION,
    NewWebinar.price.state: WebinarField.PRICE,
    NewWebinar.stars.state: WebinarField.STARS,
    NewWebinar.seats.state: WebinarField.SEATS,
    NewWebinar.room_url.state: WebinarField.ROOM_URL,
    NewWebinar.password.state: WebinarField.PASSWORD,
    NewWebinar.template.state: WebinarField.TEMPLATE,
    NewWebinar.reminders.state: WebinarField.REMINDERS,
}
NEXT: dict[str, State] = {
    NewWebinar.title.state: NewWebinar.description,
    NewWebinar.description.state: NewWebinar.start,
    NewWebinar.start.state: NewWebinar.duration,
    NewWebinar.duration.state: NewWebinar.price,
    NewWebinar.price.state: NewWebinar.stars,
    NewWebinar.stars.state: NewWebinar.seats,
    NewWebinar.seats.state: NewWebinar.mode,
    NewWebinar.room_url.state: NewWebinar.password,
    NewWebinar.password.state: NewWebinar.reminders,
    NewWebinar.group.state: NewWebinar.reminders,
    NewWebinar.template.state: NewWebinar.reminders,
}


# Link-based modes together, the Telegram group last.
MODE_ORDER = (AccessMode.PASSWORD, AccessMode.LINKS, AccessMode.TEMPLATE, AccessMode.GROUP)


def mode_choices() -> InlineKeyboardMarkup:
    return choices(
        "wb_mode", [(access_mode_name(mode), mode.value) for mode in MODE_ORDER], width=1
    )


def prompt(
    state: str | None, org: Organization, now: datetime, *, editing: bool = False
) -> tuple[str, Any]:
    """The question of a step (asked again when the organizer comes back to the wizard)."""

    def step(n: int) -> str:
        return "" if editing else _("Step {n} of {total}.", n=n, total=STEPS) + " "

    if state == NewWebinar.description.state:
        return (
            step(2) + _("A description: what participants will learn, who it is for."),
            choices("wb_skip", [(_("No description"), NO_VALUE)]),
        )
    if state == NewWebinar.start.state:
        example = date_example(org.timezone, now)
        local = datetime.strptime(example, DATE_FORMATS[0])
        return (
            step(3)
            + _(
                "When does it start? Date and time in {timezone}, for example {example} "
                "or {other}.",
                timezone=org.timezone,
                example=example,
                other=local.strftime(DATE_FORMATS[1]),
            ),
            None,
        )
    if state == NewWebinar.duration.state:
        return (
            step(4) + _("How long is it? In minutes (90) or hours and minutes (1:30)."),
            choices("wb_duration", [("45", "45"), ("60", "60"), ("90", "90"), ("120", "120")], 4),
        )
    if state == NewWebinar.price.state:
        return (
            step(5)
            + _(
                "The price for card payments in {currency}, like 19.99. "
                "Without a card price, the webinar is sold for Stars only (or is free).",
                currency=org.currency,
            ),
            choices("wb_skip", [(_("No card price"), NO_VALUE)]),
        )
    if state == NewWebinar.stars.state:
        return (
            step(6)
            + _("The price in Telegram Stars, a whole number like 250. No price at all: free."),
            choices("wb_skip", [(_("No Stars price"), NO_VALUE)]),
        )
    if state == NewWebinar.seats.state:
        return (
            step(7) + _("How many seats? Send a number."),
            choices("wb_skip", [(_("Unlimited"), NO_VALUE)]),
        )
    if state == NewWebinar.mode.state:
        return step(8) + _("How will participants get in?"), mode_choices()
    if state == NewWebinar.room_url.state:
        return _("The room link participants open, starting with https://"), None
    if state == NewWebinar.password.state:
        return (
            _("The room password participants type, if the room has one."),
            choices("wb_skip", [(_("No password"), NO_VALUE)]),
        )
    if state == NewWebinar.group.state:
        return (
            _(
                "Add me to the private group or channel as an administrator with the rights to "
                "invite users and to ban users (I remove refunded participants). Then send its "
                "@username or id, or forward me any message from it."
            ),
            None,
        )
    if state == NewWebinar.template.state:
        return (
            _(
                "The link template of your webinar platform. I fill in {name} with the "
                "participant's name and {token} with a personal code, for example:\n{example}",
                name="<code>{name}</code>",
                token="<code>{token}</code>",
                example=escape(TEMPLATE_EXAMPLE),
            ),
            None,
        )
    if state == NewWebinar.reminders.state:
        default = ", ".join(format_offset(offset) for offset in DEFAULT_OFFSETS)
        return (
            step(9)
            + _(
                "Reminders before the start. Send your own times, like 48h, 2h, 15m, "
                "or keep the usual ones."
            )
            + "\n\n"
            + _(
                "Buyers get every reminder due after their purchase. One that would come less "
                "than a minute after it is part of their access message instead."
            ),
            choices(
                "wb_reminders",
                [(_("Usual: {times}", times=default), "default"), (_("No reminders"), NO_VALUE)],
                width=1,
            ),
        )
    return step(1) + _("The webinar's title (at most 128 characters):"), None


async def ask(target: Message, state: FSMContext, org: Organization, services: Services) -> None:
    editing = bool((await state.get_data()).get("edit_id"))
    text, markup = prompt(await state.get_state(), org, services.app.clock.now(), editing=editing)
    await target.answer(text, reply_markup=markup)


@router.message(Command("newwebinar"))
async def new_webinar(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """Start the wizard."""
    await state.set_state(NewWebinar.title)
    await state.set_data({"org_id": membership.org.id})
    await message.answer(
        _(
            "Let's create a webinar for {org}. /cancel stops at any step.",
            org=escape(membership.org.name),
        )
    )
    await ask(message, state, membership.org, services)


async def advance(
    message: Message,
    raw: str,
    membership: Membership,
    services: Services,
    state: FSMContext,
    user: User,
) -> None:
    """Check the answer of the current step, keep it, and ask the next question."""
    current = await state.get_state()
    data = await state.get_data()
    if data.get("org_id") != membership.org.id or current not in FIELDS:
        await state.clear()
        await message.answer(_("This is no longer available."))
        return
    field = FIELDS[current]
    value = services.webinars.parse(field, raw, membership.org)
    if isinstance(value, datetime):
        value = value.isoformat()
    await state.update_data({field.value: value})
    if current == NewWebinar.password.state and data.get("edit_id"):
        await save_access(message, membership, services, state, AccessMode.PASSWORD)
        return
    if current == NewWebinar.template.state and data.get("edit_id"):
        await save_access(message, membership, services, state, AccessMode.TEMPLATE)
        return
    if current == NewWebinar.reminders.state:
        await create(message, membership, services, state, user)
        return
    await state.set_state(NEXT[current])
    await ask(message, state, membership.org, services)


@router.message(NewWebinar.title, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.description, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.start, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.duration, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.price, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.stars, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.seats, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.room_url, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.password, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.template, F.text, ~F.text.startswith("/"))
@router.message(NewWebinar.reminders, F.text, ~F.text.startswith("/"))
async def typed_answer(
    message: Message, membership: Membership, services: Services, state: FSMContext, user: User
) -> None:
    """A typed answer to the current step."""
    await advance(message, message.text or "", membership, services, state, user)


@router.callback_query(WizardChoice.filter(F.step.in_({"wb_skip", "wb_duration"})))
async def chosen_answer(
    query: CallbackQuery,
    callback_data: WizardChoice,
    membership: Membership,
    services: Services,
    state: FSMContext,
    user: User,
) -> None:
    """A button answering the current step, as if its value was typed."""
    if await state.get_state() not in FIELDS or not isinstance(query.message, Message):
        await query.answer(_("This button is no longer active."))
        return
    await query.answer()
    await advance(query.message, callback_data.value, membership, services, state, user)


@router.callback_query(NewWebinar.reminders, WizardChoice.filter(F.step == "wb_reminders"))
async def chosen_reminders(
    query: CallbackQuery,
    callback_data: WizardChoice,
    membership: Membership,
    services: Services,
    state: FSMContext,
    user: User,
) -> None:
    """The usual reminders, or none."""
    await query.answer()
    if not isinstance(query.message, Message):
        return
    raw = NO_VALUE if callback_data.value == NO_VALUE else ", ".join(map(str, DEFAULT_OFFSETS))
    await advance(query.message, raw, membership, services, state, user)


@router.callback_query(NewWebinar.mode, WizardChoice.filter(F.step == "wb_mode"))
async def chosen_mode(
    query: CallbackQuery,
    callback_data: WizardChoice,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Step 8: the access mode, then what that mode needs."""
    if callback_data.value not in set(AccessMode) or not isinstance(query.message, Message):
        await query.answer(_("This button is no longer active."))
        return
    mode = AccessMode(callback_data.value)
    await query.answer(access_mode_name(mode))
    await state.update_data(mode=mode.value)
    data = await state.get_data()
    if mode == AccessMode.LINKS:
        if data.get("edit_id"):
            await save_access(query.message, membership, services, state, mode)
            return
        await query.message.answer(
            _("Good: after creating the webinar, import the links with the button on its card.")
        )
        await state.set_state(NewWebinar.reminders)
    elif mode == AccessMode.PASSWORD:
        await state.set_state(NewWebinar.room_url)
    elif mode == AccessMode.TEMPLATE:
        await state.set_state(NewWebinar.template)
    else:
        await state.set_state(NewWebinar.group)
    await ask(query.message, state, membership.org, services)


@router.message(NewWebinar.mode, F.text, ~F.text.startswith("/"))
async def typed_mode(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """Step 8 is answered with a button: show them again."""
    await message.answer(_("Please choose with a button."))
    await ask(message, state, membership.org, services)


@router.message(NewWebinar.group, ~F.text.startswith("/"))
async def got_group(
    message: Message,
    membership: Membership,
    services: Services,
    state: FSMContext,
    user: User,
    bot: Bot,
) -> None:
    """The group: typed as @username or id, or a message forwarded from it."""
    origin = message.forward_origin
    if isinstance(origin, MessageOriginChannel):
        ref: int | str = origin.chat.id
    elif isinstance(origin, MessageOriginChat):
        ref = origin.sender_chat.id
    else:
        ref = parse_chat_ref(message.text or "")
    checked = await services.webinars.check_group(ref, user.id)
    await state.update_data(group_chat_id=checked.chat_id)
    connected = _("Connected: {title}.", title=escape(checked.title))
    if (await state.get_data()).get("edit_id"):
        # Saved before anything is said: "Connected" on an existing webinar means it is stored.
        await save_access(
            message, membership, services, state, AccessMode.GROUP, first_say=connected
        )
        return
    await message.answer(connected)
    await state.set_state(NewWebinar.reminders)
    await ask(message, state, membership.org, services)


async def save_access(
    message: Message,
    membership: Membership,
    services: Services,
    state: FSMContext,
    mode: AccessMode,
    *,
    first_say: str | None = None,
) -> None:
    """End of the "change access mode" flow on an existing webinar."""
    data = await state.get_data()
    webinar = await services.webinars.set_access(
        membership.org.id,
        int(data["edit_id"]),
        mode,
        room_url=data.get(WebinarField.ROOM_URL.value),
        room_password=data.get(WebinarField.PASSWORD.value),
        group_chat_id=data.get("group_chat_id"),
        link_template=data.get(WebinarField.TEMPLATE.value),
    )
    await state.clear()
    if first_say:
        await message.answer(first_say)
    await message.answer(_("Saved."))
    text, markup = await render_card(membership, services, webinar.id)
    await message.answer(text, reply_markup=markup)


async def create(
    message: Message,
    membership: Membership,
    services: Services,
    state: FSMContext,
    user: User,
) -> None:
    data = await state.get_data()
    draft = WebinarDraft(
        title=data[WebinarField.TITLE.value],
        description=data[WebinarField.DESCRIPTION.value],
        starts_at=datetime.fromisoformat(data[WebinarField.START.value]),
        duration_minutes=data[WebinarField.DURATION.value],
        price_minor=data.get(WebinarField.PRICE.value),
        price_stars=data.get(WebinarField.STARS.value),
        capacity=data.get(WebinarField.SEATS.value),
        access_mode=AccessMode(data["mode"]),
        room_url=data.get(WebinarField.ROOM_URL.value),
        room_password=data.get(WebinarField.PASSWORD.value),
        group_chat_id=data.get("group_chat_id"),
        link_template=data.get(WebinarField.TEMPLATE.value),
        reminder_offsets=data[WebinarField.REMINDERS.value],
    )
    webinar = await services.webinars.create(membership, draft, user.id)
    await state.clear()
    await message.answer(
        _(
            "✅ Webinar created as a draft. Check it, then press Publish to start selling.",
        )
    )
    text, markup = await render_card(membership, services, webinar.id)
    await message.answer(text, reply_markup=markup)
