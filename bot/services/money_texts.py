"""What people are told when money moves: buyers (in the organization's language), organizers
and the bot's owners (each in their own). Pure renderers: no database, no network.
"""

from __future__ import annotations

from bot.formatting import escape, local_datetime, money
from bot.i18n import _
from storage.enums import RefundReason
from storage.models import Organization, Payment, Webinar


def automatic_refund_notice(
    reason: RefundReason, payment: Payment, webinar: Webinar, org: Organization
) -> str:
    """Why a charge that bought nothing is being paid back, told to its buyer."""
    lang = org.language
    amount = money(payment.amount_minor, payment.currency, lang)
    title = escape(webinar.title)
    if reason == RefundReason.NO_SEAT:
        return _(
            "Sorry: the last seats of «{title}» were taken while you were paying. "
            "Your payment of {amount} is being refunded to you.",
            locale=lang,
            title=title,
            amount=amount,
        )
    if reason == RefundReason.CANCELLED:
        return _(
            "«{title}» has been cancelled, so your payment of {amount} is being refunded to you.",
            locale=lang,
            title=title,
            amount=amount,
        )
    if reason == RefundReason.MISMATCH:
        return _(
            "Your payment of {amount} for «{title}» does not match the invoice it was made "
            "for, so it bought no ticket and is being refunded to you. Please open the "
            "webinar link again for a new invoice. Questions: /paysupport",
            locale=lang,
            title=title,
            amount=amount,
        )
    return _(
        "You already paid for «{title}», so this extra payment of {amount} "
        "is being refunded to you. Your ticket stays valid: /my shows it.",
        locale=lang,
        title=title,
        amount=amount,
    )


def unmatched_notice(total_amount: int, currency: str, lang: str) -> str:
    return _(
        "I received your payment of {amount} but it matches no order (the invoice may "
        "be outdated), so it is being refunded to you automatically. You need to do "
        "nothing. Questions: /paysupport",
        locale=lang,
        amount=money(total_amount, currency, lang),
    )


def revocation_notice(
    webinar: Webinar, org: Organization, reason: RefundReason, payment: Payment | None
) -> str | None:
    """What a participant whose ticket was revoked is told, in the organization's language."""
    lang = org.language
    title = escape(webinar.title)
    amount = money(payment.amount_minor, payment.currency, lang) if payment else None
    if reason == RefundReason.CANCELLED:
        starts = local_datetime(webinar.starts_at, org.timezone, lang)
        if amount is None:
            return _(
                "❌ «{title}» ({starts}) has been cancelled by the organizer. "
                "Sorry for the inconvenience.",
                locale=lang,
                title=title,
                starts=starts,
            )
        return _(
            "❌ «{title}» ({starts}) has been cancelled by the organizer. "
            "Your payment of {amount} has been refunded.",
            locale=lang,
            title=title,
            starts=starts,
            amount=amount,
        )
    if reason in (RefundReason.TELEGRAM, RefundReason.PROVIDER):
        return _(
            "Your payment for «{title}» was refunded, so your ticket is no longer valid.",
            locale=lang,
            title=title,
        )
    if amount is None:
        return _(
            "Your ticket for «{title}» was cancelled by the organizer.",
            locale=lang,
            title=title,
        )
    return _(
        "💸 The organizer refunded your ticket for «{title}»: {amount} is on its way back "
        "to you. Your access is no longer valid.",
        locale=lang,
        title=title,
        amount=amount,
    )


def failed_refund_alert(locale: str, payment: Payment, webinar: Webinar | None, detail: str) -> str:
    """An automatic refund the provider refused: somebody has to pay it back by hand."""
    amount = money(payment.amount_minor, payment.currency, locale)
    if webinar is None:
        return _(
            "⚠️ An automatic refund failed: payment {payment} of {amount} by user "
            "{user} matched no order. Please refund it from the payment provider's "
            "dashboard (Telegram charge {charge}). Reason: {detail}",
            locale=locale,
            payment=payment.id,
            amount=amount,
            user=payment.user_id,
            charge=escape(payment.telegram_payment_charge_id),
            detail=escape(detail),
        )
    return _(
        "⚠️ An automatic refund failed: payment {payment} of {amount} by user "
        "{user} for «{title}». Please refund it from the payment provider's "
        "dashboard, or try again with /refund p{payment}. Reason: {detail}",
        locale=locale,
        payment=payment.id,
        amount=amount,
        user=payment.user_id,
        title=escape(webinar.title),
        detail=escape(detail),
    )


def owed_refund_alert(
    locale: str, payment: Payment, webinar: Webinar | None, attempts: int, detail: str
) -> str:
    """A refund the provider has not answered for a while: still owed, still being retried."""
    amount = money(payment.amount_minor, payment.currency, locale)
    title = escape(webinar.title) if webinar is not None else "-"
    return _(
        "⚠️ A refund is still owed: payment {payment} of {amount} by user {user} "
        "(«{title}»). The payment provider has not answered {attempts} attempts; I keep "
        "trying every hour. Last error: {detail}",
        locale=locale,
        payment=payment.id,
        amount=amount,
        user=payment.user_id,
        title=title,
        attempts=attempts,
        detail=escape(detail),
    )


def canceled_refund_alert(
    locale: str,
    payment: Payment,
    webinar: Webinar,
    kept_ticket_id: int | None,
    detail: str,
) -> str:
    """The provider canceled a refund it had accepted: no money went back."""
    amount = money(payment.amount_minor, payment.currency, locale)
    title = escape(webinar.title)
    if kept_ticket_id is not None:
        return _(
            "⚠️ The payment provider canceled the refund of ticket #{ticket} ({amount}) "
            "for «{title}»: no money went back and the ticket is still active. "
            "/refund {ticket} tries again. Reason: {detail}",
            locale=locale,
            ticket=kept_ticket_id,
            amount=amount,
            title=title,
            detail=escape(detail),
        )
    return _(
        "⚠️ The payment provider canceled an automatic refund: payment {payment} of "
        "{amount} by user {user} for «{title}». No money went back: please refund it "
        "from the payment provider's dashboard. Reason: {detail}",
        locale=locale,
        payment=payment.id,
        amount=amount,
        user=payment.user_id,
        title=title,
        detail=escape(detail),
    )


def group_removal_failed_alert(locale: str, webinar: Webinar, user_id: int, ticket_id: int) -> str:
    return _(
        "⚠️ Ticket #{ticket} of «{title}» was revoked, but I could not remove user {user} "
        "from the group: please remove them by hand and give me the right to ban members.",
        locale=locale,
        ticket=ticket_id,
        title=escape(webinar.title),
        user=user_id,
    )
