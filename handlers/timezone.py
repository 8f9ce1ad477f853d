"""/timezone: the participant's own time zone, from a city name or a shared location.

Replies are in the participant's own language (this is about them, not about a webinar).
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import KeyboardButton, Message, ReplyKeyboardMarkup, ReplyKeyboardRemove

from bot.formatting import escape, local_datetime
from bot.i18n import _, current_locale
from bot.services import Services
from bot.services.admin_input import InvalidInput
from storage.models import User

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")


class TimezoneInput(StatesGroup):
    zone = State()


def location_keyboard() -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=_("📍 Share my location"), request_location=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


async def confirm(message: Message, services: Services, zone: str | None) -> None:
    if zone is None:
        text = _("Done: I show times in the organizer's time zone only.")
    else:
        text = _(
            "Done: your time zone is {zone} (now {now}). Webinar times also show your time "
            "when it differs from the organizer's. /timezone changes it, /timezone - forgets it.",
            zone=escape(zone),
            now=local_datetime(services.app.clock.now(), zone, current_locale()),
        )
    await message.answer(text, reply_markup=ReplyKeyboardRemove())


async def set_from_text(
    message: Message, raw: str, services: Services, user: User, state: FSMContext
) -> None:
    try:
        zone = await services.timezones.set_from_text(user, raw)
    except InvalidInput as error:
        await message.answer(error.render())  # nothing changed: the question stays open
        return
    await state.clear()
    await confirm(message, services, zone)


@router.message(Command("timezone"))
async def timezone(
    message: Message, command: CommandObject, services: Services, user: User, state: FSMContext
) -> None:
    """Set the time zone at once (``/timezone Rome``) or ask for a city or the location."""
    if command.args:
        await set_from_text(message, command.args, services, user, state)
        return
    await state.set_state(TimezoneInput.zone)
    current = (
        _("Your time zone now: {zone}.", zone=escape(user.timezone))
        if user.timezone
        else _("You have not set a time zone: times are shown in the organizer's.")
    )
    await message.answer(
        current
        + "\n\n"
        + _(
            "Send the name of your city (Rome, New York, Sao Paulo…) or share your location "
            "with the button. /cancel keeps it as it is."
        ),
        reply_markup=location_keyboard(),
    )


@router.message(TimezoneInput.zone, F.location)
async def shared_location(
    message: Message, services: Services, user: User, state: FSMContext
) -> None:
    """The zone of the shared location."""
    assert message.location is not None
    try:
        zone = await services.timezones.set_from_location(
            user, message.location.latitude, message.location.longitude
        )
    except InvalidInput as error:
        await message.answer(error.render())
        return
    await state.clear()
    await confirm(message, services, zone)


@router.message(TimezoneInput.zone, F.text, ~F.text.startswith("/"))
async def typed_city(message: Message, services: Services, user: User, state: FSMContext) -> None:
    """A city or zone name."""
    await set_from_text(message, message.text or "", services, user, state)
