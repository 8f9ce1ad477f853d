"""What people are told when money moves: buyers (in the organization's language), organizers
and the bot's owners (each in their own). Pure renderers: no database, no network.
"""

from __future__ import annotations

from bot.formatting import escape, local_datetime, money
from bot.i18n import _
from bot.services.orders import RefundStatusCode
from payments.base import ErrorCode
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


def failure_reason(error_code: str | None, detail: str | None, locale: str | None = None) -> str:
    """Why a provider did not refund, in words an organizer can act on."""
    code = error_code
    if code == ErrorCode.NOT_CONFIGURED:
        return _("refunds for this payment method are not configured", locale=locale)
    if code == ErrorCode.NETWORK_ERROR:
        return _("the payment provider did not answer; try again in a minute", locale=locale)
    if code == ErrorCode.NOT_FOUND:
        return _("the payment provider does not know this payment", locale=locale)
    return _(
        "the payment provider refused: {detail}",
        locale=locale,
        detail=escape(detail or code or "?"),
    )


def refund_result(
    status: RefundStatusCode,
    *,
    ticket_id: int | None,
    payment: Payment | None,
    org_language: str | None,
    error_code: str | None,
    detail: str | None,
    locale: str | None = None,
) -> str:
    """What the organizer who asked for a refund is told about it (``locale``: theirs; money is
    formatted as the organization writes it)."""
    lang = org_language or locale or "en"
    amount = money(payment.amount_minor, payment.currency, lang) if payment else "-"
    reason = failure_reason(error_code, detail, locale)
    if ticket_id is None:
        return _charge_result(status, payment, amount, reason, locale)
    if status == RefundStatusCode.REFUNDED:
        return _(
            "✅ Ticket #{ticket} refunded ({amount}). Its access is revoked and the participant "
            "has been told.",
            locale=locale,
            ticket=ticket_id,
            amount=amount,
        )
    if status == RefundStatusCode.PROCESSING:
        return _(
            "⏳ The payment provider accepted the refund of ticket #{ticket} ({amount}) and is "
            "still processing it. The ticket stays active until the money is back; then its "
            "access is revoked and the participant told. If the provider cancels the refund, "
            "you will be alerted.",
            locale=locale,
            ticket=ticket_id,
            amount=amount,
        )
    if status == RefundStatusCode.QUEUED:
        return _(
            "⏳ Refunding ticket #{ticket} ({amount}): I will tell you here as soon as the "
            "payment provider answers.",
            locale=locale,
            ticket=ticket_id,
            amount=amount,
        )
    if status == RefundStatusCode.ALREADY_REFUNDED:
        return _("Ticket #{ticket} was already refunded.", locale=locale, ticket=ticket_id)
    if status == RefundStatusCode.NOT_ACTIVE:
        return _("Ticket #{ticket} is no longer active.", locale=locale, ticket=ticket_id)
    if status == RefundStatusCode.FAILED:
        return _(
            "❌ The refund of ticket #{ticket} failed: {reason}. Nothing was refunded and the "
            "ticket is still active: you can try again.",
            locale=locale,
            ticket=ticket_id,
            reason=reason,
        )
    return _("I found no ticket #{ticket} in your organizations.", locale=locale, ticket=ticket_id)


def _charge_result(
    status: RefundStatusCode, payment: Payment | None, amount: str, reason: str, locale: str | None
) -> str:
    """The same for a charge that bought no ticket (``/refund p<id>``)."""
    charge = payment.id if payment is not None else 0
    if status in (RefundStatusCode.REFUNDED, RefundStatusCode.ALREADY_REFUNDED):
        return _(
            "✅ Payment {payment} ({amount}) is refunded.",
            locale=locale,
            payment=charge,
            amount=amount,
        )
    if status == RefundStatusCode.FAILED:
        return _(
            "❌ The refund of payment {payment} ({amount}) failed: {reason}. /refund p{payment} "
            "tries again.",
            locale=locale,
            payment=charge,
            amount=amount,
            reason=reason,
        )
    if status == RefundStatusCode.NOT_FOUND:
        return _(
            "I found no payment {payment} in your organizations.", locale=locale, payment=charge
        )
    return _(
        "⏳ Refunding payment {payment} ({amount}): I will tell you here as soon as the "
        "payment provider answers.",
        locale=locale,
        payment=charge,
        amount=amount,
    )
