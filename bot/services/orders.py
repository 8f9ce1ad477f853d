"""The order, ticket, payment and refund state machine, with its invariants in one place.

::

    order:   created --(pre-checkout, seat held)--> held --(its charge buys the seat)--> paid
               |  ^                                  |
               |  +---(hold lapses)--- expired <-----+
               +--(a charge that buys nothing is refunded)--> refunded   (never reused)
             paid --(the ticket's payment is refunded)--> refunded

    ticket:  active --(its own payment refunded)--> refunded
             active --(free ticket withdrawn)--> cancelled

    refund:  pending --(provider: done)--> succeeded
             pending --(provider: accepted, finishes later)--> processing --> succeeded | failed
             pending --(provider: no answer)--> pending, later        (money owed is never dropped)
             pending --(provider: refused)--> failed --(/refund)--> pending

Invariants, held by constraints where a constraint can hold them:

- A payment is recorded once (unique Telegram charge id).
- A ticket names the payment that bought it (unique ``tickets.payment_id``). A refund acts on its
  own payment and on the ticket of *that* payment only: a late refund of an earlier charge can
  never revoke what a later charge bought.
- An order that took a charge is never reused for a new invoice: either the charge bought its
  ticket (paid) or the order is closed (refunded) while the charge is paid back.
- One active ticket per participant and webinar (a partial unique index).
- A refund has one idempotency key per attempt at moving money: retries of the same attempt reuse
  it, so a provider never pays twice; only a refund the provider canceled (no money moved) gets a
  new one.

These helpers change models in the caller's transaction; they never commit. The two transitions
of every sale (created -> held at pre-checkout, held -> paid at payment) are single Core
statements instead: ``CheckoutRepository.hold_seat`` and ``SalesRepository.mark_paid``.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from storage.enums import (
    OrderStatus,
    PaymentStatus,
    Product,
    RefundReason,
    RefundStatus,
    TicketStatus,
)
from storage.models import Order, Payment, Refund, Ticket


class RefundStatusCode(StrEnum):
    """Where a refund asked for stands, as its asker is told."""

    QUEUED = "queued"  # written; the refund worker calls the provider
    REFUNDED = "refunded"  # money back (or on its way), ticket revoked
    PROCESSING = "processing"  # the provider accepted it and finishes later; ticket still active
    RETRYING = "retrying"  # the provider did not answer; asked again later
    ALREADY_REFUNDED = "already_refunded"  # nothing to do: refunded before
    FAILED = "failed"  # the provider refused; ticket still active
    NOT_FOUND = "not_found"
    NOT_ACTIVE = "not_active"  # the ticket was cancelled without a payment to refund
    LOST = "lost"  # another worker holds this refund now: nothing recorded


OPEN_ORDER_STATUSES = (OrderStatus.CREATED, OrderStatus.HELD, OrderStatus.EXPIRED)

# Waits before asking a provider again, by attempt: soon at first, then hourly, forever.
RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=2),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
)
# A worker holds a claimed refund this long; if it dies, another one takes the refund after it.
REFUND_LEASE = timedelta(minutes=5)
# The buyer of a charge whose provider does not tell it (a card charge reconciliation found
# without Telegram's metadata): Telegram user ids are positive, so 0 is never a real one.
UNKNOWN_BUYER = 0
# After this many unanswered attempts at an automatic refund, people are told the money is owed.
OWED_ALERT_AFTER = 5


def retry_delay(attempts: int) -> timedelta:
    return RETRY_DELAYS[min(max(attempts, 0), len(RETRY_DELAYS) - 1)]


def refund_key(payment_id: int) -> str:
    """The idempotency key of a payment's refund: stable across retries and restarts."""
    return f"webinarpass-refund-{payment_id}"


def is_open(order: Order) -> bool:
    return OrderStatus(order.status) in OPEN_ORDER_STATUSES


def hold_until(now: datetime, minutes: int) -> datetime:
    """When a seat held now lapses (the hold itself: ``CheckoutRepository.hold_seat``)."""
    return now + timedelta(minutes=minutes)


def has_live_hold(order: Order, now: datetime) -> bool:
    return (
        order.status == OrderStatus.HELD
        and order.hold_expires_at is not None
        and order.hold_expires_at > now
    )


def close_unbought(order: Order, now: datetime) -> None:
    """A charge on this open order buys nothing and is refunded: the order is done for good."""
    if is_open(order):
        order.status = OrderStatus.REFUNDED
    order.hold_expires_at = None
    order.updated_at = now


def refund_order(order: Order, now: datetime) -> None:
    """The payment that bought this order's ticket is back with its buyer."""
    order.status = OrderStatus.REFUNDED
    order.hold_expires_at = None
    order.updated_at = now


def new_ticket(
    *, webinar_id: int, user_id: int, now: datetime, order: Order | None, payment_id: int | None
) -> Ticket:
    return Ticket(
        order_id=order.id if order is not None else None,
        payment_id=payment_id,
        # A ticket is for what its order bought: a seat, or the recording alone.
        product=Product(order.product) if order is not None else Product.SEAT,
        webinar_id=webinar_id,
        user_id=user_id,
        status=TicketStatus.ACTIVE,
        access_delivered_at=None,
        revoked_at=None,
        created_at=now,
    )


def revoke_ticket(ticket: Ticket, *, refunded: bool, now: datetime) -> None:
    ticket.status = TicketStatus.REFUNDED if refunded else TicketStatus.CANCELLED
    ticket.revoked_at = now


def queue_refund(
    payment: Payment,
    refund: Refund | None,
    *,
    reason: RefundReason,
    requested_by: int | None,
    now: datetime,
) -> Refund:
    """Put a payment's refund (new, or the failed one again) in the queue, due now."""
    if refund is None:
        refund = Refund(
            payment_id=payment.id,
            reason=reason,
            idempotency_key=refund_key(payment.id),
            created_at=now,
            attempts=0,
            checks=0,
        )
    else:
        refund.reason = reason if not RefundReason(refund.reason).automatic else refund.reason
        if refund.error_code == "refund_canceled":
            # No money moved; the old key would only get the canceled refund back.
            refund.idempotency_key = f"{refund_key(payment.id)}-{secrets.token_hex(6)}"
    refund.status = RefundStatus.PENDING
    refund.next_check_at = now
    refund.completed_at = None
    refund.error_code = None
    refund.detail = None
    refund.checks = 0
    if requested_by is not None:
        refund.requested_by = requested_by
    payment.status = PaymentStatus.REFUND_PENDING
    return refund


def refund_succeeded(payment: Payment, refund: Refund, now: datetime) -> None:
    refund.status = RefundStatus.SUCCEEDED
    refund.completed_at = now
    refund.next_check_at = None
    payment.status = PaymentStatus.REFUNDED
    payment.refunded_at = now


def refund_processing(refund: Refund, provider_refund_id: str, now: datetime) -> None:
    refund.status = RefundStatus.PROCESSING
    refund.provider_refund_id = provider_refund_id
    refund.completed_at = None
    refund.checks = 0
    refund.next_check_at = now + retry_delay(0)


def refund_failed(payment: Payment, refund: Refund, now: datetime) -> None:
    refund.status = RefundStatus.FAILED
    refund.completed_at = now
    refund.next_check_at = None
    payment.status = PaymentStatus.REFUND_FAILED


def refund_later(refund: Refund, now: datetime) -> None:
    """The provider did not answer: the refund stays owed and is asked again later."""
    refund.status = RefundStatus.PENDING
    refund.next_check_at = now + retry_delay(refund.attempts - 1)
