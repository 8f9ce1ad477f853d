"""ORM models: the whole schema webinarpass needs.

Money is an integer amount in minor units with an ISO currency code (``XTR`` for Telegram Stars,
whose minor unit is one star). Every datetime is aware UTC (see :class:`UTCDateTime`).
Invariants that protect money and access are constraints here, not conventions in code:
one payment per Telegram charge id, one ticket per order, one link per ticket, one active ticket
per participant and webinar, one outbox row per delivery key.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.enums import (
    AccessMode,
    BroadcastStatus,
    InboundStatus,
    OrderStatus,
    OutboxKind,
    OutboxStatus,
    PaymentMethod,
    PaymentStatus,
    Product,
    RefundReason,
    RefundStatus,
    Role,
    TicketStatus,
    WebinarStatus,
)
from storage.types import BigIntPK, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(enum_cls: type[enum.Enum]) -> SAEnum:
    return SAEnum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class User(TimestampMixin, Base):
    """A Telegram user who talked to the bot (participant, organizer, or both)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_name: Mapped[str] = mapped_column(String(255), default="")
    last_name: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(64))
    language_code: Mapped[str | None] = mapped_column(String(16))  # as the client reports it
    locale: Mapped[str | None] = mapped_column(String(8))  # chosen with /language
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA name, chosen with /timezone
    blocked_at: Mapped[datetime | None]  # the user blocked the bot (a 403 on send)
    active_org_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime | None]

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part) or str(self.id)


class Organization(TimestampMixin, Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    contact_email: Mapped[str] = mapped_column(String(254))
    language: Mapped[str] = mapped_column(String(8))  # en, ru, it, pt_BR, es
    currency: Mapped[str] = mapped_column(String(3))  # USD, EUR, RUB
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name
    terms_text: Mapped[str | None] = mapped_column(Text)
    support_contact: Mapped[str | None] = mapped_column(String(255))
    accept_stars: Mapped[bool] = mapped_column(Boolean, default=True)
    accept_stripe: Mapped[bool] = mapped_column(Boolean, default=False)
    accept_yookassa: Mapped[bool] = mapped_column(Boolean, default=False)
    yookassa_need_email: Mapped[bool] = mapped_column(Boolean, default=False)
    yookassa_receipt: Mapped[bool] = mapped_column(Boolean, default=False)
    yookassa_vat_code: Mapped[int] = mapped_column(Integer, default=1)
    # A morning message to each organizer about yesterday (off unless an organizer asks for it).
    daily_summary: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # The hour of the organization's local day from which that summary is sent.
    summary_hour: Mapped[int] = mapped_column(Integer, default=9, server_default=text("9"))
    # How long after a webinar's end its participants are asked for a rating; None: never.
    feedback_delay_minutes: Mapped[int | None] = mapped_column(
        Integer, default=60, server_default=text("60")
    )
    created_by: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime | None]


class OrgMember(TimestampMixin, Base):
    __tablename__ = "org_members"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role))


class OrgInvite(TimestampMixin, Base):
    """A one-time deep link that adds a co-organizer."""

    __tablename__ = "org_invites"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.ADMIN)
    created_by: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime]
    used_by: Mapped[int | None] = mapped_column(BigInteger)
    used_at: Mapped[datetime | None]


class Webinar(TimestampMixin, Base):
    __tablename__ = "webinars"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(32), unique=True)  # opaque share code
    title: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    starts_at: Mapped[datetime]
    duration_minutes: Mapped[int] = mapped_column(Integer, default=60)
    currency: Mapped[str] = mapped_column(String(3))  # of price_minor (card payments)
    price_minor: Mapped[int | None] = mapped_column(Integer)
    price_stars: Mapped[int | None] = mapped_column(Integer)
    capacity: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    access_mode: Mapped[AccessMode] = mapped_column(_enum(AccessMode))
    room_url: Mapped[str | None] = mapped_column(String(2048))
    room_password: Mapped[str | None] = mapped_column(String(255))
    group_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    # Template mode: a URL pattern with {name} and {token}, filled once per ticket.
    link_template: Mapped[str | None] = mapped_column(String(2048))
    # The recording, once the webinar is over: a link or a Telegram file (video or document).
    recording_url: Mapped[str | None] = mapped_column(String(2048))
    recording_file_id: Mapped[str | None] = mapped_column(String(255))
    recording_file_kind: Mapped[str | None] = mapped_column(String(16))  # "video" | "document"
    recording_expires_at: Mapped[datetime | None]
    # Bumped on each new recording, so every holder gets the newest one once.
    recording_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Sold after the event (None: not for sale; buyers of the live session have it included).
    recording_price_minor: Mapped[int | None] = mapped_column(Integer)
    recording_price_stars: Mapped[int | None] = mapped_column(Integer)
    reminder_offsets: Mapped[list[int]] = mapped_column(JSON, default=lambda: [1440, 60, 10])
    status: Mapped[WebinarStatus] = mapped_column(_enum(WebinarStatus), default=WebinarStatus.DRAFT)
    # Bumped whenever the start time moves, so reminders planned for an older time are told apart.
    schedule_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    # When the feedback requests were planned (one outbox row per active ticket); None: not yet.
    feedback_planned_at: Mapped[datetime | None]

    @property
    def is_free(self) -> bool:
        return not self.price_minor and not self.price_stars

    @property
    def has_recording(self) -> bool:
        return bool(self.recording_url or self.recording_file_id)

    def recording_available(self, now: datetime) -> bool:
        return self.has_recording and (
            self.recording_expires_at is None or self.recording_expires_at > now
        )


class AccessLink(TimestampMixin, Base):
    """One participant link from an imported pool. A link goes to at most one ticket, ever."""

    __tablename__ = "access_links"
    __table_args__ = (
        UniqueConstraint("webinar_id", "url"),
        Index("ix_access_links_free", "webinar_id", "ticket_id", "revoked_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    webinar_id: Mapped[int] = mapped_column(ForeignKey("webinars.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    label: Mapped[str | None] = mapped_column(String(255))
    # Template mode: the unguessable token filled into this ticket's link.
    token: Mapped[str | None] = mapped_column(String(64), unique=True)
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"), unique=True
    )
    assigned_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Order(TimestampMixin, Base):
    """A purchase attempt; its opaque ``token`` is the invoice payload."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_holds", "webinar_id", "status", "hold_expires_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    webinar_id: Mapped[int] = mapped_column(ForeignKey("webinars.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    method: Mapped[PaymentMethod] = mapped_column(_enum(PaymentMethod))
    product: Mapped[Product] = mapped_column(
        _enum(Product), default=Product.SEAT, server_default=Product.SEAT.value
    )
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus), default=OrderStatus.CREATED)
    hold_expires_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


# A ticket that takes a seat, in the words of the partial index that counts them. A query uses
# that index only if its own condition says the same, with the same literals.
SEAT_TICKET = f"status = '{TicketStatus.ACTIVE.value}' AND product = '{Product.SEAT.value}'"
SEAT_INDEX = "ix_tickets_seats"


class Ticket(TimestampMixin, Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index(
            "uq_tickets_active_per_user",
            "webinar_id",
            "user_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        # The seats a webinar's tickets take, counted on every card and every seat hold: a
        # count of this index alone, a few bytes per seat sold, where the plain webinar_id
        # index had the count read every ticket row of the webinar (storage.repositories.sales).
        Index(
            SEAT_INDEX,
            "webinar_id",
            sqlite_where=text(SEAT_TICKET),
            postgresql_where=text(SEAT_TICKET),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), unique=True)
    # The payment that bought this ticket (None: a free ticket). A refund revokes only the
    # ticket of its own payment, never "the ticket of the order", so a late refund of an
    # earlier charge can never take away what a later charge bought.
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), unique=True)
    webinar_id: Mapped[int] = mapped_column(
        ForeignKey("webinars.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # A recording ticket takes no seat, gets no room access and no reminders. Still one active
    # ticket per buyer and webinar: a seat includes the recording, so nobody needs both.
    product: Mapped[Product] = mapped_column(
        _enum(Product), default=Product.SEAT, server_default=Product.SEAT.value
    )
    status: Mapped[TicketStatus] = mapped_column(_enum(TicketStatus), default=TicketStatus.ACTIVE)
    access_delivered_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Payment(TimestampMixin, Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # None: the invoice payload matched no order. The charge is still recorded here (so the
    # charge id constraint and the refund path below are the same as for every payment) and
    # refunded automatically.
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[PaymentMethod] = mapped_column(_enum(PaymentMethod))
    # A replayed successful_payment hits this constraint and changes nothing.
    telegram_payment_charge_id: Mapped[str] = mapped_column(String(255), unique=True)
    provider_payment_charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PaymentStatus] = mapped_column(
        _enum(PaymentStatus), default=PaymentStatus.SUCCEEDED
    )
    is_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    refunded_at: Mapped[datetime | None]


class Refund(TimestampMixin, Base):
    """A refund is queued work: ``pending`` (due at ``next_check_at``) -> the refund worker calls
    the provider -> ``succeeded | failed``, or ``processing`` when the provider accepts it but
    finishes later (then the worker asks again when ``next_check_at`` is due). A provider that
    did not answer leaves it ``pending`` with a later ``next_check_at``: money owed is retried
    until it is paid back, never dropped. ``next_check_at`` doubles as the lease of the worker
    holding the row; ``attempts`` (pending) and ``checks`` (processing) are the fencing tokens."""

    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_followup", "status", "next_check_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    status: Mapped[RefundStatus] = mapped_column(_enum(RefundStatus), default=RefundStatus.PENDING)
    reason: Mapped[RefundReason] = mapped_column(_enum(RefundReason))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    provider_refund_id: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None]  # processing: when to ask the provider again
    checks: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class Feedback(TimestampMixin, Base):
    """A participant's rating (1-5) of a webinar, and an optional comment: one per ticket, so a
    second press or a replayed update can only change it, never count twice."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), unique=True
    )
    webinar_id: Mapped[int] = mapped_column(
        ForeignKey("webinars.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]


class Broadcast(TimestampMixin, Base):
    """A message an organizer sends to every paid participant of a webinar.

    Progress (sent / failed / blocked) is counted from its outbox rows, never stored twice.
    """

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    webinar_id: Mapped[int] = mapped_column(ForeignKey("webinars.id", ondelete="CASCADE"))
    created_by: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str | None] = mapped_column(Text)
    photo_file_id: Mapped[str | None] = mapped_column(String(255))
    document_file_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[BroadcastStatus] = mapped_column(
        _enum(BroadcastStatus), default=BroadcastStatus.DRAFT
    )
    progress_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[datetime | None]


class OutboxMessage(TimestampMixin, Base):
    """A message that must reach someone: written first, sent after, marked once Telegram answers.

    ``pending -> sending (one worker, under a lease) -> sent | blocked | failed | dropped``.
    ``dedupe_key`` makes enqueueing idempotent: the same delivery can never be planned twice.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[OutboxKind] = mapped_column(_enum(OutboxKind))
    dedupe_key: Mapped[str] = mapped_column(String(191), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    org_id: Mapped[int | None] = mapped_column(BigInteger)
    webinar_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    ticket_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    broadcast_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    due_at: Mapped[datetime]
    status: Mapped[OutboxStatus] = mapped_column(_enum(OutboxStatus), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]


class InboundUpdate(Base):
    """An update Telegram sent, stored before it is acknowledged and handled from here.

    ``pending`` (handled by the holder of ``lease_until``, or due at ``next_attempt_at``) ->
    ``done`` | ``parked``. Unique on (bot, update id): a redelivered update is stored once.
    ``attempts`` (bumped by every claim) fences a holder whose lease expired.
    """

    __tablename__ = "inbound_updates"
    __table_args__ = (
        UniqueConstraint("bot_id", "update_id"),
        Index("ix_inbound_updates_due", "status", "priority", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bot_id: Mapped[int] = mapped_column(BigInteger)
    update_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[InboundStatus] = mapped_column(
        _enum(InboundStatus), default=InboundStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(index=True)


class JobLease(Base):
    """Who runs a fleet-wide singleton job (reconciliation) until when.

    A replica runs such a job only after taking its row: inserting it, or taking over a lease
    that lapsed. A replica that dies mid-run leaves its lease to lapse, and the next run goes on.
    """

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    lease_until: Mapped[datetime]
