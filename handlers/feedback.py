"""A participant rates a webinar they attended (the buttons under the question sent after its
end), then may add a comment as their next message. Replies come in the organization's
language, like everything else about its webinar."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.i18n import _
from bot.services import Services
from bot.services.admin_input import InvalidInput
from bot.services.feedback import FeedbackCallback, rating_keyboard
from storage.models import User

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")


class FeedbackComment(StatesGroup):
    text = State()


@router.callback_query(FeedbackCallback.filter())
async def rated(
    query: CallbackQuery,
    callback_data: FeedbackCallback,
    user: User,
    services: Services,
    state: FSMContext,
) -> None:
    """Record the rating, mark the choice under the question, invite a comment."""
    outcome = await services.feedback.rate(user.id, callback_data.ticket_id, callback_data.rating)
    if outcome is None:
        # Someone else's ticket (a forged button), or one no longer active: nothing to say,
        # not even that the ticket exists.
        await query.answer()
        return
    locale = outcome.locale
    await query.answer(_("Thank you!", locale=locale))
    await state.set_state(FeedbackComment.text)
    await state.set_data({"ticket_id": outcome.ticket_id})
    text = (
        outcome.question
        + "\n\n"
        + _(
            "Your rating: {stars} of 5. You can change it with the buttons. Anything to tell "
            "the organizer? Send it as a message.",
            locale=locale,
            stars=outcome.rating,
        )
    )
    if isinstance(query.message, Message):
        try:
            await query.message.edit_text(
                text, reply_markup=rating_keyboard(outcome.ticket_id, outcome.rating)
            )
        except TelegramBadRequest as error:
            # The same button pressed twice asks for an identical edit: nothing to change.
            if "not modified" not in error.message:
                raise


@router.message(FeedbackComment.text, F.text, ~F.text.startswith("/"))
async def commented(message: Message, user: User, services: Services, state: FSMContext) -> None:
    """Store the comment that follows a rating."""
    ticket_id = (await state.get_data()).get("ticket_id")
    if not isinstance(ticket_id, int):
        await state.clear()
        return
    try:
        outcome = await services.feedback.comment(user.id, ticket_id, message.text or "")
    except InvalidInput as error:
        locale = await services.feedback.locale_of_ticket(ticket_id)
        await message.answer(error.render(locale=locale))
        return
    await state.clear()
    if outcome is None:
        await message.answer(_("This is no longer available."))
        return
    await message.answer(
        _("Thank you! The organizer will read your comment.", locale=outcome.locale)
    )


@router.message(FeedbackComment.text, ~F.text.startswith("/"))
async def not_text(message: Message, services: Services, state: FSMContext) -> None:
    """A sticker or a photo where a comment was invited."""
    ticket_id = (await state.get_data()).get("ticket_id")
    locale = await services.feedback.locale_of_ticket(ticket_id) if ticket_id else None
    await message.answer(
        _("Please send your comment as text, or /cancel if you have nothing to add.", locale=locale)
    )
