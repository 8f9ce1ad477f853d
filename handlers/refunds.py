"""Organizer refunds: ``/refund <ticket id>`` or a participant list's button, then a confirmation.

Authorization is checked against the ticket's organization by the service: an organizer of one
organization cannot see or refund another's tickets (they look like unknown ids).
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import BaseFilter, Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.formatting import escape, money
from bot.i18n import _
from bot.services import Services
from bot.services.refunds import RefundOutcome, RefundStatusCode, TicketPreview
from payments.base import ErrorCode
from storage.models import User


class ManagesTicket(BaseFilter):
    """Passes a refund button only for an organizer of the ticket's organization.

    On the router, so no refund button can say or change anything before the check: a forged
    or foreign one falls through to the common "no longer active" answer, which tells nothing
    about the ticket. The service checks again when it refunds.
    """

    async def __call__(
        self, query: CallbackQuery, services: Services, user: User | None = None
    ) -> bool:
        try:
            data = RefundCallback.unpack(query.data or "")
        except (TypeError, ValueError):
            return False
        return await services.organizations.manages_ticket(user, data.ticket_id)


router = Router(name=__name__)
router.message.filter(F.chat.type == "private")
router.callback_query.filter(ManagesTicket())


class RefundCallback(CallbackData, prefix="refund"):
    """``ask`` shows the confirmation (a participant list's button), ``yes`` refunds, ``no``
    keeps the ticket."""

    ticket_id: int
    action: str = "ask"


def confirmation(preview: TicketPreview) -> tuple[str, InlineKeyboardMarkup]:
    ticket, payment = preview.ticket, preview.payment
    amount = money(payment.amount_minor, payment.currency, preview.org.language) if payment else "-"
    text = _(
        "Refund ticket #{ticket}?\n\n"
        "Participant: {name}\nWebinar: «{title}»\nPaid: {amount}\n\n"
        "The money goes back the way it was paid, the participant loses access and is told.",
        ticket=ticket.id,
        name=escape(preview.buyer_name),
        title=escape(preview.webinar.title),
        amount=amount,
    )
    builder = InlineKeyboardBuilder()
    builder.button(
        text=_("💸 Refund {amount}", amount=amount),
        callback_data=RefundCallback(ticket_id=ticket.id, action="yes"),
    )
    builder.button(
        text=_("Keep the ticket"), callback_data=RefundCallback(ticket_id=ticket.id, action="no")
    )
    builder.adjust(1)
    return text, builder.as_markup()


def failure_reason(outcome: RefundOutcome) -> str:
    code = outcome.error_code
    if code == ErrorCode.NOT_CONFIGURED:
        return _("refunds for this payment method are not configured")
    if code == ErrorCode.NETWORK_ERROR:
        return _("the payment provider did not answer; try again in a minute")
    if code == ErrorCode.NOT_FOUND:
        return _("the payment provider does not know this payment")
    return _("the payment provider refused: {detail}", detail=escape(outcome.detail or code or "?"))


def result_text(ticket_id: int, outcome: RefundOutcome) -> str:
    status = outcome.status
    if status == RefundStatusCode.REFUNDED:
        payment = outcome.payment
        lang = outcome.org.language if outcome.org else "en"
        amount = money(payment.amount_minor, payment.currency, lang) if payment else "-"
        return _(
            "✅ Ticket #{ticket} refunded ({amount}). Its access is revoked and the participant "
            "has been told.",
            ticket=ticket_id,
            amount=amount,
        )
    if status == RefundStatusCode.PROCESSING:
        payment = outcome.payment
        lang = outcome.org.language if outcome.org else "en"
        amount = money(payment.amount_minor, payment.currency, lang) if payment else "-"
        return _(
            "⏳ The payment provider accepted the refund of ticket #{ticket} ({amount}) and is "
            "still processing it. The ticket stays active until the money is back; then its "
            "access is revoked and the participant told. If the provider cancels the refund, "
            "you will be alerted.",
            ticket=ticket_id,
            amount=amount,
        )
    if status == RefundStatusCode.ALREADY_REFUNDED:
        return _("Ticket #{ticket} was already refunded.", ticket=ticket_id)
    if status == RefundStatusCode.NOT_ACTIVE:
        return _("Ticket #{ticket} is no longer active.", ticket=ticket_id)
    if status == RefundStatusCode.FAILED:
        return _(
            "❌ The refund of ticket #{ticket} failed: {reason}. Nothing was refunded and the "
            "ticket is still active: you can try again.",
            ticket=ticket_id,
            reason=failure_reason(outcome),
        )
    return _("I found no ticket #{ticket} in your organizations.", ticket=ticket_id)


def retry_keyboard(ticket_id: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(
        text=_("Try again"), callback_data=RefundCallback(ticket_id=ticket_id, action="yes")
    )
    return builder.as_markup()


async def _ask(
    ticket_id: int, user: User, services: Services
) -> tuple[str, InlineKeyboardMarkup | None]:
    preview = await services.refunds.preview(ticket_id, requested_by=user.id)
    if isinstance(preview, RefundOutcome):
        return result_text(ticket_id, preview), None
    return confirmation(preview)


@router.message(Command("refund"))
async def refund_command(
    message: Message, command: CommandObject, user: User, services: Services
) -> None:
    """``/refund <ticket id>``: ask for confirmation first."""
    arg = (command.args or "").strip().lstrip("#")
    if not arg.isdigit():
        await message.answer(
            _(
                "Send /refund followed by the ticket number, e.g. <code>/refund 42</code>. "
                "The participant list shows ticket numbers."
            )
        )
        return
    text, markup = await _ask(int(arg), user, services)
    await message.answer(text, reply_markup=markup)


@router.callback_query(RefundCallback.filter(F.action.in_(["ask", "yes", "no"])))
async def refund_button(
    query: CallbackQuery, callback_data: RefundCallback, user: User, services: Services
) -> None:
    """Confirmation buttons (and the participant list's refund button)."""
    ticket_id = callback_data.ticket_id
    message = query.message if isinstance(query.message, Message) else None
    if callback_data.action == "ask":
        text, markup = await _ask(ticket_id, user, services)
        await query.answer()
        if message is not None:
            await message.answer(text, reply_markup=markup)
        return
    if callback_data.action == "no":
        await query.answer()
        if message is not None:
            await message.edit_text(_("Kept: ticket #{ticket} was not refunded.", ticket=ticket_id))
        return
    await query.answer(_("Refunding…"))
    outcome = await services.refunds.refund_ticket(ticket_id, requested_by=user.id)
    text = result_text(ticket_id, outcome)
    markup = retry_keyboard(ticket_id) if outcome.status == RefundStatusCode.FAILED else None
    if message is not None:
        await message.edit_text(text, reply_markup=markup)
