"""/broadcast: an organizer writes to every paid participant of a webinar.

Pick a webinar, write the message (text, or a photo or document with a caption), look at the
preview, confirm. The confirmation message then becomes the progress report, edited as the
deliveries go out; a final report follows as a new message.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.filters import BaseFilter, Command
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, TelegramObject
from aiogram.utils.keyboard import InlineKeyboardBuilder
from babel.dates import format_date

from bot.context import AppContext
from bot.formatting import babel_locale, escape, local_datetime
from bot.i18n import _, _n, current_locale
from bot.services import Services
from bot.services.broadcasts import BroadcastCounts, outgoing, progress_text, too_long_by
from storage.models import Organization, User

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")


class Organizer(BaseFilter):
    """Passes organizers of their active organization and hands the handler ``org``."""

    async def __call__(
        self, event: TelegramObject, services: Services, user: User | None = None
    ) -> bool | dict[str, Any]:
        org = await services.broadcasts.organizer_org(user)
        return {"org": org} if org is not None else False


class BroadcastForm(StatesGroup):
    message = State()


class BroadcastCallback(CallbackData, prefix="bcast"):
    action: str  # "pick" (id: webinar), "send" / "drop" (id: broadcast)
    id: int


def _webinar_keyboard(choices: list[Any], org: Organization) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for choice in choices:
        local = choice.webinar.starts_at.astimezone(ZoneInfo(org.timezone))
        when = format_date(local.date(), format="medium", locale=babel_locale(current_locale()))
        builder.button(
            text=f"{choice.webinar.title} · {when} · 👥 {choice.participants}",
            callback_data=BroadcastCallback(action="pick", id=choice.webinar.id),
        )
    builder.adjust(1)
    return builder.as_markup()


@router.message(Command("broadcast"), Organizer())
async def broadcast_command(
    message: Message, services: Services, org: Organization, state: FSMContext
) -> None:
    """Offer the organization's webinars to write to."""
    await state.clear()
    choices = await services.broadcasts.choices(org.id)
    if not choices:
        await message.answer(_("You have no webinars yet. /newwebinar creates one."))
        return
    await message.answer(
        _("Whose participants do you want to write to? Choose the webinar:"),
        reply_markup=_webinar_keyboard(choices, org),
    )


@router.message(Command("broadcast"))
async def broadcast_not_organizer(message: Message) -> None:
    """Someone who organizes nothing asked for /broadcast."""
    await message.answer(_("Only organizers can send broadcasts. /neworg creates an organization."))


@router.callback_query(BroadcastCallback.filter(F.action == "pick"), Organizer())
async def webinar_picked(
    query: CallbackQuery,
    callback_data: BroadcastCallback,
    services: Services,
    org: Organization,
    state: FSMContext,
) -> None:
    """Ask for the message."""
    choice = await services.broadcasts.choice(org.id, callback_data.id)
    if choice is None:
        await query.answer(_("This webinar is no longer available."), show_alert=True)
        return
    if not choice.participants:
        await query.answer(
            _("Nobody has paid for this webinar yet: there is no one to write to."),
            show_alert=True,
        )
        return
    await state.set_state(BroadcastForm.message)
    await state.update_data(webinar_id=choice.webinar.id)
    await query.answer()
    text = _n(
        "Write the message for the {n} participant of «{title}» ({when}): text, or a photo or "
        "a document with a caption. I will show you a preview before sending.\n/cancel to stop.",
        "Write the message for the {n} participants of «{title}» ({when}): text, or a photo or "
        "a document with a caption. I will show you a preview before sending.\n/cancel to stop.",
        choice.participants,
        title=escape(choice.webinar.title),
        when=local_datetime(choice.webinar.starts_at, org.timezone, current_locale()),
    )
    if isinstance(query.message, Message):
        await query.message.edit_text(text)


@router.message(
    BroadcastForm.message, Organizer(), F.text | F.photo | F.document, ~F.text.startswith("/")
)
async def message_written(
    message: Message, services: Services, org: Organization, user: User, state: FSMContext
) -> None:
    """Keep the message as a draft and show it exactly as participants will get it."""
    data = await state.get_data()
    choice = await services.broadcasts.choice(org.id, int(data.get("webinar_id", 0)))
    if choice is None:
        await state.clear()
        await message.answer(_("This webinar is no longer available."))
        return
    text = message.html_text or None
    photo = message.photo[-1].file_id if message.photo else None
    document = message.document.file_id if message.document else None
    excess = too_long_by(choice.webinar, text or "", media=bool(photo or document))
    if excess:
        await message.answer(
            _n(
                "The message is {n} character too long for Telegram. Please shorten it and send "
                "it again.",
                "The message is {n} characters too long for Telegram. Please shorten it and send "
                "it again.",
                excess,
            )
        )
        return
    broadcast = await services.broadcasts.create_draft(
        choice.webinar, user.id, text=text, photo_file_id=photo, document_file_id=document
    )
    await state.clear()
    await message.answer(_("Preview: this is what participants will receive."))
    preview = outgoing(broadcast, choice.webinar)
    if preview.photo_file_id:
        await message.answer_photo(preview.photo_file_id, caption=preview.caption)
    elif preview.document_file_id:
        await message.answer_document(preview.document_file_id, caption=preview.caption)
    else:
        await message.answer(preview.text or "")
    builder = InlineKeyboardBuilder()
    builder.button(
        text=_n("✅ Send to {n} participant", "✅ Send to {n} participants", choice.participants),
        callback_data=BroadcastCallback(action="send", id=broadcast.id),
    )
    builder.button(
        text=_("✖ Cancel"), callback_data=BroadcastCallback(action="drop", id=broadcast.id)
    )
    builder.adjust(1)
    await message.answer(
        _n(
            "Send it to the {n} participant of «{title}»?",
            "Send it to the {n} participants of «{title}»?",
            choice.participants,
            title=escape(choice.webinar.title),
        ),
        reply_markup=builder.as_markup(),
    )


@router.message(BroadcastForm.message, ~F.text.startswith("/"))
async def message_not_supported(message: Message) -> None:
    """Stickers, videos, voice notes...: not something a broadcast carries."""
    await message.answer(
        _("Please send text, a photo or a document (with a caption if you like). /cancel to stop.")
    )


@router.callback_query(BroadcastCallback.filter(F.action == "send"), Organizer())
async def confirmed(
    query: CallbackQuery,
    callback_data: BroadcastCallback,
    services: Services,
    org: Organization,
    app: AppContext,
) -> None:
    """Plan the deliveries and turn this message into the progress report."""
    if not isinstance(query.message, Message):
        await query.answer()
        return
    total = await services.broadcasts.start(
        org.id,
        callback_data.id,
        progress_chat_id=query.message.chat.id,
        progress_message_id=query.message.message_id,
    )
    if total is None:
        await query.answer(_("This broadcast was already sent or cancelled."), show_alert=True)
        return
    await query.answer(_("Sending…"))
    loaded = await services.broadcasts.get(org.id, callback_data.id)
    if loaded is not None:
        _broadcast, webinar = loaded
        counts = BroadcastCounts(total=total, pending=total)
        await query.message.edit_text(progress_text(webinar, counts, current_locale()))
    app.wake.outbox()


@router.callback_query(BroadcastCallback.filter(F.action == "drop"), Organizer())
async def dropped(
    query: CallbackQuery, callback_data: BroadcastCallback, services: Services, org: Organization
) -> None:
    """Forget the draft."""
    if not await services.broadcasts.discard(org.id, callback_data.id):
        await query.answer(_("This broadcast was already sent or cancelled."), show_alert=True)
        return
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(_("Cancelled. Nothing was sent."))


@router.callback_query(BroadcastCallback.filter())
async def not_an_organizer(query: CallbackQuery) -> None:
    """A broadcast button pressed by someone who no longer organizes this organization."""
    await query.answer(_("Only organizers can send broadcasts."), show_alert=True)
