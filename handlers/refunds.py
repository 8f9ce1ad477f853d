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
from bot.services.refunds import RefundOutcome, RefundStatusCode, TicketPreview, result_text
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


async def _ask(
    ticket_id: int, user: User, services: Services
) -> tuple[str, InlineKeyboardMarkup | None]:
    preview = await services.refunds.preview(ticket_id, requested_by=user.id)
    if isinstance(preview, RefundOutcome):
        return _ticket_result(ticket_id, preview), None
    return confirmation(preview)


def _ticket_result(ticket_id: int, outcome: RefundOutcome) -> str:
    if outcome.ticket is None:
        # Not found (or not yours): the id the organizer typed, nothing about the ticket.
        return _("I found no ticket #{ticket} in your organizations.", ticket=ticket_id)
    return result_text(outcome)


@router.message(Command("refund"))
async def refund_command(
    message: Message, command: CommandObject, user: User, services: Services
) -> None:
    """``/refund <ticket id>`` asks for confirmation first; ``/refund p<payment id>`` queues
    again the refund of a charge that bought no ticket (one an alert named)."""
    arg = (command.args or "").strip().lstrip("#")
    if arg[:1].lower() == "p" and arg[1:].isdigit():
        outcome = await services.refunds.refund_charge(int(arg[1:]), requested_by=user.id)
        if outcome.status == RefundStatusCode.NOT_FOUND:
            await message.answer(
                _("I found no payment {payment} in your organizations.", payment=int(arg[1:]))
            )
            return
        await message.answer(result_text(outcome))
        return
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
    """Confirmation buttons (and the participant list's refund button); the router's
    :class:`ManagesTicket` filter has already checked the presser."""
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
    outcome = await services.refunds.refund_ticket(ticket_id, requested_by=user.id)
    await query.answer()
    # Queued: the refund worker calls the provider and the result comes as its own message.
    text = _ticket_result(ticket_id, outcome)
    if message is not None:
        await message.edit_text(text)
