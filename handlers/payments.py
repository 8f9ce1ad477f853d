"""Telegram's payment updates: pre-checkout queries, successful payments, refunded payments."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.types import Message, PreCheckoutQuery

from bot.faults import crash_point
from bot.formatting import escape
from bot.i18n import _
from bot.services import Services
from bot.services.purchases import PaymentResult
from storage.enums import Product, TicketStatus

router = Router(name=__name__)
log = logging.getLogger(__name__)


@router.pre_checkout_query()
async def pre_checkout(query: PreCheckoutQuery, services: Services) -> None:
    """Accept the checkout only if the order is valid and a seat could be held."""
    try:
        answer = await services.sales.pre_checkout(
            user_id=query.from_user.id,
            payload=query.invoice_payload,
            total_amount=query.total_amount,
            currency=query.currency,
        )
    except Exception:
        # Telegram waits 10 seconds for an answer: a failure must still answer, and refuse.
        log.exception("pre-checkout of %s failed", query.id)
        await query.answer(
            ok=False, error_message=_("Sorry, something went wrong. Please try again.")
        )
        return
    log.info(
        "pre-checkout %s from user %s: %s %s %s",
        query.id,
        query.from_user.id,
        "accepted" if answer.ok else "refused",
        query.total_amount,
        query.currency,
    )
    await query.answer(ok=answer.ok, error_message=answer.error_message)


@router.message(F.successful_payment)
async def successful_payment(message: Message, services: Services) -> None:
    """Record the payment and issue the ticket. The access message that follows from the
    outbox is the confirmation too ("Payment received ... Here is your access"), written in the
    payment's transaction: nothing to send here, and nothing to send again for a replay."""
    payment = message.successful_payment
    assert payment is not None
    assert message.from_user is not None
    outcome = await services.purchases.complete_payment(
        user_id=message.from_user.id,
        payload=payment.invoice_payload,
        total_amount=payment.total_amount,
        currency=payment.currency,
        telegram_charge_id=payment.telegram_payment_charge_id,
        provider_charge_id=payment.provider_payment_charge_id,
    )
    crash_point("payments.recorded")
    ticket = outcome.ticket
    if ticket is None or ticket.product != Product.RECORDING:
        # A seat: its access message confirms the payment. Waiting for a link and automatic
        # refunds (a payment that matches no order included) are told through the outbox too.
        return
    # A recording goes as a video or a file, which carries no confirmation. A replay whose
    # charge bought it is an update handled again after an attempt that did not finish
    # (Telegram's own redeliveries never get here: the intake drops them): the confirmation
    # may not have gone out, so it is sent (again).
    if outcome.result == PaymentResult.ISSUED or (
        outcome.result == PaymentResult.REPLAY and ticket.status == TicketStatus.ACTIVE
    ):
        assert outcome.org is not None
        assert outcome.webinar is not None
        await message.answer(
            _(
                "✅ Payment received: the recording of «{title}» is yours. "
                "It follows in the next message.",
                locale=outcome.org.language,
                title=escape(outcome.webinar.title),
            )
        )


@router.message(F.refunded_payment)
async def refunded_payment(message: Message, services: Services) -> None:
    """Telegram refunded a payment (support, or our own refund echoed): record it once."""
    refund = message.refunded_payment
    assert refund is not None
    assert message.from_user is not None
    await services.refunds.record_telegram_refund(
        user_id=message.from_user.id, telegram_charge_id=refund.telegram_payment_charge_id
    )
