"""A finished webinar's recording, from its card: the link or file, an expiry, and the prices it
is sold at after the event (none: only ticket holders get it)."""

from __future__ import annotations

from datetime import datetime

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.i18n import _, _n
from bot.services import Services
from bot.services.admin_input import (
    date_example,
    is_empty_mark,
    parse_price,
    parse_stars,
    parse_start,
    parse_url,
)
from bot.services.organizations import Membership
from bot.services.recordings import DOCUMENT, VIDEO, RecordingDraft
from handlers.admin.base import IsOrganizer, WebinarAction, WizardChoice, reply
from handlers.admin.neworg import choices
from handlers.admin.webinars import render_card

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

NO_VALUE = "-"
STEP = "rec_skip"


class RecordingInput(StatesGroup):
    source = State()
    expiry = State()
    price = State()
    stars = State()


def prompt(state: str | None, membership: Membership, now: datetime) -> tuple[str, object]:
    org = membership.org
    if state == RecordingInput.expiry.state:
        return (
            _(
                "Until when can participants watch it? Date and time in {timezone}, for "
                "example {example}.",
                timezone=org.timezone,
                example=date_example(org.timezone, now),
            ),
            choices(STEP, [(_("No expiry"), NO_VALUE)]),
        )
    if state == RecordingInput.price.state:
        return (
            _(
                "Sell the recording to people who missed the webinar? Its card price in "
                "{currency}, like 9.99. Ticket holders get it included either way.",
                currency=org.currency,
            ),
            choices(STEP, [(_("No card price"), NO_VALUE)]),
        )
    if state == RecordingInput.stars.state:
        return (
            _("Its price in Telegram Stars, a whole number like 100."),
            choices(STEP, [(_("No Stars price"), NO_VALUE)]),
        )
    return (
        _(
            "Send the recording: a link to it (https://…), or the video or file itself. "
            "Every ticket holder gets it here once. /cancel stops."
        ),
        None,
    )


async def ask(target: Message, state: FSMContext, membership: Membership, services: Services):  # type: ignore[no-untyped-def]
    text, markup = prompt(await state.get_state(), membership, services.app.clock.now())
    await target.answer(text, reply_markup=markup)


@router.callback_query(WebinarAction.filter(F.action == "recording"))
async def start(
    query: CallbackQuery,
    callback_data: WebinarAction,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """Add (or replace) the recording of a finished webinar."""
    webinar = await services.recordings.check_can_add(membership.org.id, callback_data.id)
    await state.set_state(RecordingInput.source)
    await state.set_data({"org_id": membership.org.id, "webinar_id": webinar.id})
    await query.answer()
    text, markup = prompt(RecordingInput.source.state, membership, services.app.clock.now())
    await reply(query, text, markup)


@router.message(RecordingInput.source, ~F.text.startswith("/"))
async def got_source(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """The recording: a video, a file, or a link."""
    if message.video is not None:
        source = {"file_id": message.video.file_id, "file_kind": VIDEO}
    elif message.document is not None:
        source = {"file_id": message.document.file_id, "file_kind": DOCUMENT}
    else:
        source = {"url": parse_url(message.text or "")}
    await state.update_data(source)
    await state.set_state(RecordingInput.expiry)
    await ask(message, state, membership, services)


async def advance(
    message: Message, raw: str, membership: Membership, services: Services, state: FSMContext
) -> None:
    """Check the answer of the current step, keep it, ask the next question or save."""
    current = await state.get_state()
    data = await state.get_data()
    if data.get("org_id") != membership.org.id:
        await state.clear()
        await message.answer(_("This is no longer available."))
        return
    org, skip = membership.org, is_empty_mark(raw)
    if current == RecordingInput.expiry.state:
        expires = None if skip else parse_start(raw, org.timezone, services.app.clock.now())
        await state.update_data(expires_at=expires.isoformat() if expires else None)
        await state.set_state(RecordingInput.price)
    elif current == RecordingInput.price.state:
        await state.update_data(price_minor=None if skip else parse_price(raw, org.currency))
        await state.set_state(RecordingInput.stars)
    else:
        await state.update_data(price_stars=None if skip else parse_stars(raw))
        await save(message, membership, services, state)
        return
    await ask(message, state, membership, services)


@router.message(RecordingInput.expiry, F.text, ~F.text.startswith("/"))
@router.message(RecordingInput.price, F.text, ~F.text.startswith("/"))
@router.message(RecordingInput.stars, F.text, ~F.text.startswith("/"))
async def typed_answer(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    """A typed answer to the current step."""
    await advance(message, message.text or "", membership, services, state)


@router.callback_query(WizardChoice.filter(F.step == STEP))
async def chosen_answer(
    query: CallbackQuery,
    callback_data: WizardChoice,
    membership: Membership,
    services: Services,
    state: FSMContext,
) -> None:
    """A "none" button, as if a dash was typed."""
    steps = {RecordingInput.expiry.state, RecordingInput.price.state, RecordingInput.stars.state}
    if await state.get_state() not in steps or not isinstance(query.message, Message):
        await query.answer(_("This button is no longer active."))
        return
    await query.answer()
    await advance(query.message, callback_data.value, membership, services, state)


async def save(
    message: Message, membership: Membership, services: Services, state: FSMContext
) -> None:
    data = await state.get_data()
    expires = data.get("expires_at")
    outcome = await services.recordings.set_recording(
        membership.org.id,
        int(data["webinar_id"]),
        RecordingDraft(
            url=data.get("url"),
            file_id=data.get("file_id"),
            file_kind=data.get("file_kind"),
            expires_at=datetime.fromisoformat(expires) if expires else None,
            price_minor=data.get("price_minor"),
            price_stars=data.get("price_stars"),
        ),
    )
    await state.clear()
    text = _n(
        "🎬 Recording saved. It is on its way to {n} participant.",
        "🎬 Recording saved. It is on its way to {n} participants.",
        outcome.planned,
    )
    webinar = outcome.webinar
    if webinar.recording_price_minor or webinar.recording_price_stars:
        text += "\n" + _("The webinar's link now offers it for sale.")
    await message.answer(text)
    card, markup = await render_card(membership, services, webinar.id)
    await message.answer(card, reply_markup=markup)
