"""Closed sets of values stored as short strings (portable: no native ENUM types)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"


class AccessMode(StrEnum):
    PASSWORD = "password"  # room URL plus room password
    LINKS = "links"  # one link per participant from an imported pool
    GROUP = "group"  # a private Telegram group or channel, join requests approved per payer
    # A personal link made from the organizer's pattern: {name} and {token} filled per buyer.
    TEMPLATE = "template"


class Product(StrEnum):
    """What an order (and the ticket it buys) is for."""

    SEAT = "seat"  # the live session (its recording included, once there is one)
    RECORDING = "recording"  # the recording alone, sold after the event; takes no seat


class WebinarStatus(StrEnum):
    """Stored status. "sold out" and "finished" are derived from seats and time, never stored."""

    DRAFT = "draft"
    PUBLISHED = "published"
    CANCELLED = "cancelled"


class PaymentMethod(StrEnum):
    STARS = "stars"
    STRIPE = "stripe"
    YOOKASSA = "yookassa"


class OrderStatus(StrEnum):
    CREATED = "created"  # invoice sent, nothing held
    HELD = "held"  # pre-checkout accepted, a seat is held until hold_expires_at
    PAID = "paid"  # payment recorded, ticket issued
    EXPIRED = "expired"  # hold lapsed without payment
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class TicketStatus(StrEnum):
    ACTIVE = "active"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class PaymentStatus(StrEnum):
    SUCCEEDED = "succeeded"
    REFUND_PENDING = "refund_pending"
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"


class RefundStatus(StrEnum):
    PENDING = "pending"  # written before the provider is called (retried if a crash left it)
    PROCESSING = "processing"  # the provider accepted it and finishes later: polled by a job
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundReason(StrEnum):
    ORGANIZER = "organizer"  # /refund by an organizer
    CANCELLED = "cancelled"  # the webinar was cancelled
    DUPLICATE = "duplicate"  # a second charge for an order that was already paid
    NO_SEAT = "no_seat"  # the hold lapsed and the webinar filled up meanwhile
    TELEGRAM = "telegram"  # Telegram reported a refund we did not start
    PROVIDER = "provider"  # reconciliation found a refund made at the provider (its dashboard)
    UNMATCHED = "unmatched"  # a payment whose invoice payload matches no order
    # The charge does not match its order (another buyer, another amount or currency): it buys
    # nothing, and the buyer is told exactly that, not "you already paid".
    MISMATCH = "mismatch"

    @property
    def automatic(self) -> bool:
        """Decided by the bot, not by a person: the charge could not buy a seat."""
        return self in _AUTOMATIC_REASONS


_AUTOMATIC_REASONS = frozenset(
    {
        RefundReason.DUPLICATE,
        RefundReason.NO_SEAT,
        RefundReason.CANCELLED,
        RefundReason.UNMATCHED,
        RefundReason.MISMATCH,
    }
)


class OutboxKind(StrEnum):
    ACCESS = "access"  # the access message after payment (and again after a re-send)
    REMINDER = "reminder"
    NOTICE = "notice"  # one-off service messages: refunds, moved start, cancellations, alerts
    BROADCAST = "broadcast"
    FEEDBACK = "feedback"  # a participant asked to rate a webinar after its end
    SUMMARY = "summary"  # an organizer's daily summary of yesterday
    RECORDING = "recording"  # a webinar's recording, to each ticket holder once


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by one worker under a lease
    SENT = "sent"
    BLOCKED = "blocked"  # the user blocked the bot (403)
    FAILED = "failed"  # gave up after bounded retries
    DROPPED = "dropped"  # no longer relevant: refunded, cancelled, or a reminder past the start


class BroadcastStatus(StrEnum):
    DRAFT = "draft"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"


class InboundStatus(StrEnum):
    PENDING = "pending"  # stored and acknowledged; handled by whoever holds its lease
    DONE = "done"
    PARKED = "parked"  # failed its last attempt; the bot's owners were alerted
