"""Reads and writes of the selling path: orders, seat holds, payments, tickets, links, refunds.

Row locks are taken only on PostgreSQL; SQLite has one writer and every transaction starts with
``BEGIN IMMEDIATE`` (see ``storage.database``), so it needs none. Lock order, everywhere: order,
then webinar, then payment. Keeping one order rules out deadlocks.

The webinar's row, by who locks it (PostgreSQL's row lock modes; each conflicts with the ones
marked against it):

- ``FOR UPDATE``: a cancellation, an edit, a free registration: against everything below;
- ``FOR NO KEY UPDATE``: what counts the seats to take one, a pre-checkout (inside one
  statement on the server: ``CheckoutRepository``) and a payment whose hold lapsed: against
  itself and the above, so seats are counted one decision at a time;
- ``FOR KEY SHARE``: a payment that takes no seat of its own (its order holds a live seat, the
  webinar has no seat limit, or it buys the recording; a hold becoming a ticket leaves the seats
  taken as they were): only against ``FOR UPDATE``. Such payments run side by side, and beside
  the pre-checkouts, and a cancellation still either sees their tickets or is seen by them.
  (Every insert that refers to the webinar takes this lock too, for its foreign key.)

One gap is left between a paying charge and a count that runs beside it: the charge judged its
hold live at its own moment, and the hold may have lapsed by the count's, before the ticket is
committed. So a count also takes as taken every lapsed hold whose order a payment holds (a
payment locks its order ``FOR UPDATE``; a pre-checkout ``FOR NO KEY UPDATE``, the hold sweep's
update too): the lapsed holds it sees, less those it can lock ``FOR KEY SHARE SKIP LOCKED``.

A transaction never moves to a stronger lock on the webinar (two doing so would deadlock): a
payment whose hold turns out lapsed ends its transaction and starts again with the counting lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal, replacement_traverse

from storage.direct import Prebuilt
from storage.enums import (
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
    Product,
    RefundStatus,
    Role,
    TicketStatus,
)
from storage.models import (
    SEAT_INDEX,
    SEAT_TICKET,
    AccessLink,
    Order,
    Organization,
    OrgMember,
    Payment,
    Refund,
    Ticket,
    User,
    Webinar,
)
from storage.repositories.base import (
    DirectRepository,
    Repository,
    adopt_inserted,
    attached,
    built,
    insert_values,
)

OPEN_ORDER_STATUSES = (OrderStatus.CREATED, OrderStatus.HELD, OrderStatus.EXPIRED)
OWED_STATUSES = (PaymentStatus.REFUND_PENDING, PaymentStatus.REFUND_FAILED)

# -- the selling path's statements, built once ----------------------------------------------------
#
# Each use case of the selling path (the card, the invoice, the pre-checkout, the payment) reads
# what it needs in one statement and writes with Core. The statements are module-level and take
# their values as bound parameters: SQLAlchemy memoizes a statement's cache key on the statement
# object, so running one of these skips rebuilding the statement and re-deriving its key, and
# goes straight to the cached compiled form.

_orders = Order.__table__
_tickets = Ticket.__table__
_payments = Payment.__table__
_webinars = Webinar.__table__
_orgs = Organization.__table__
_users = User.__table__
# Rows of these statements are cut into model instances (``attached``) by these keys.
_ORDER_KEYS = tuple(_orders.columns.keys())
_WEBINAR_KEYS = tuple(_webinars.columns.keys())
_ORG_KEYS = tuple(_orgs.columns.keys())
_KEYS: dict[type[Any], tuple[str, ...]] = {
    Order: _ORDER_KEYS,
    Webinar: _WEBINAR_KEYS,
    Organization: _ORG_KEYS,
}

# "Active" as a literal, not a bound parameter: only then can SQLite (and a generic PostgreSQL
# plan) use the partial unique index on active tickets, instead of walking every ticket of the
# webinar.
_ACTIVE = literal_column(f"'{TicketStatus.ACTIVE.value}'")


class _SeatTickets(ColumnElement[int]):
    """The active tickets of a webinar that take a seat (a recording takes none).

    Counted from the partial index ``ix_tickets_seats`` alone: its condition (``SEAT_TICKET``)
    with the same literals, which a planner can match (bound values it cannot), and ``count(*)``,
    which needs no column of the row. Through the webinar's plain index each count read every
    ticket row of the webinar: 390 us for a webinar of 1,000 tickets on SQLite, 75 us this way.
    SQLite is told the index by name (``INDEXED BY``, which SQLAlchemy has no construct for):
    without statistics its planner rates the partial unique index on active tickets the same,
    and takes whichever the schema happens to list first, which needs each row.
    """

    type = Integer()
    inherit_cache = True
    _traverse_internals = [("webinar_id", InternalTraversal.dp_clauseelement)]

    def __init__(self, webinar_id: ColumnElement[Any]) -> None:
        self.webinar_id = webinar_id


# The index's condition, each column named with its table: the count runs inside statements on
# orders, which has a status too.
_SEAT_TICKET_TERMS = " AND ".join(f"tickets.{term}" for term in SEAT_TICKET.split(" AND "))


def _seat_tickets_sql(element: _SeatTickets, compiler: Any, index_hint: str, **kw: Any) -> str:
    webinar_id = compiler.process(element.webinar_id, **kw)
    return (
        f"(SELECT count(*) FROM tickets{index_hint} "
        f"WHERE tickets.webinar_id = {webinar_id} AND {_SEAT_TICKET_TERMS})"
    )


@compiles(_SeatTickets)
def _seat_tickets_default(element: _SeatTickets, compiler: Any, **kw: Any) -> str:
    return _seat_tickets_sql(element, compiler, "", **kw)


@compiles(_SeatTickets, "sqlite")
def _seat_tickets_sqlite(element: _SeatTickets, compiler: Any, **kw: Any) -> str:
    return _seat_tickets_sql(element, compiler, f" INDEXED BY {SEAT_INDEX}", **kw)


def _live_holds(webinar_id: Any, *, other_than: Any = None) -> Any:
    """Orders holding a seat until a moment still ahead (``:now``)."""
    held = _orders.alias("held")
    statement = select(func.count(held.c.id)).where(
        held.c.webinar_id == webinar_id,
        held.c.product == Product.SEAT,
        held.c.status == OrderStatus.HELD,
        held.c.hold_expires_at > bindparam("now"),
    )
    if other_than is not None:
        statement = statement.where(held.c.id != other_than)
    return statement.scalar_subquery()


def _own_ticket(webinar_id: Any, user_id: Any) -> Any:
    """The id of the buyer's active ticket for the webinar, if they have one."""
    return (
        select(_tickets.c.id)
        .where(
            _tickets.c.webinar_id == webinar_id,
            _tickets.c.user_id == user_id,
            _tickets.c.status == _ACTIVE,
        )
        .limit(1)
        .scalar_subquery()
    )


# The card: the webinar with its organization, the seats taken (counted only when there is a
# limit), the viewer's own ticket and time zone.
_CARD = Prebuilt(
    select(
        *_webinars.columns,
        *_orgs.columns,
        case(
            (_webinars.c.capacity.is_(None), None),
            else_=_SeatTickets(_webinars.c.id) + _live_holds(_webinars.c.id),
        ),
        _own_ticket(_webinars.c.id, bindparam("user_id")),
        select(_users.c.timezone).where(_users.c.id == bindparam("user_id")).scalar_subquery(),
    )
    .select_from(_webinars)
    .join(_orgs, _orgs.c.id == _webinars.c.org_id)
    .where(_webinars.c.code == bindparam("code"))
)

# The invoice: the webinar with its organization, the buyer's own ticket and the newest order of
# the same purchase (buyer, method, product) that is still open and never took a charge, which a
# repeated press reuses.
_reusable = _orders.alias("reusable")
_INVOICE = Prebuilt(
    select(
        *_webinars.columns,
        *_orgs.columns,
        _own_ticket(bindparam("webinar_id"), bindparam("user_id")),
        *_orders.columns,
    )
    .select_from(_webinars)
    .join(_orgs, _orgs.c.id == _webinars.c.org_id)
    .outerjoin(
        _orders,
        _orders.c.id
        == select(func.max(_reusable.c.id))
        .where(
            _reusable.c.webinar_id == bindparam("webinar_id"),
            _reusable.c.user_id == bindparam("user_id"),
            _reusable.c.method == bindparam("method"),
            _reusable.c.product == bindparam("product"),
            or_(*(_reusable.c.status == status for status in OPEN_ORDER_STATUSES)),
            ~exists().where(_payments.c.order_id == _reusable.c.id),
        )
        .scalar_subquery(),
    )
    .where(_webinars.c.id == bindparam("webinar_id"))
)

# Pre-checkout and payment: the order behind an invoice payload, its webinar and organization,
# and the buyer's own ticket. On PostgreSQL the order's row and then the webinar's are locked
# (the locking clauses lock in the order they name the tables), in the modes of the module's
# docstring. SQLAlchemy renders one locking clause; a second one is a suffix.
_by_token = (
    select(
        *_orders.columns,
        *_webinars.columns,
        *_orgs.columns,
        _own_ticket(_orders.c.webinar_id, _orders.c.user_id),
    )
    .select_from(_orders)
    .join(_webinars, _webinars.c.id == _orders.c.webinar_id)
    .join(_orgs, _orgs.c.id == _webinars.c.org_id)
    .where(_orders.c.token == bindparam("token"))
)
_BY_TOKEN = Prebuilt(_by_token)
# PostgreSQL: with the version (``xmin``) of the order's and the webinar's rows as read.
_BY_TOKEN_VERSIONED = Prebuilt(
    _by_token.add_columns(
        literal_column("orders.xmin::text::bigint", BigInteger),
        literal_column("webinars.xmin::text::bigint", BigInteger),
    )
)


class OrderLock(StrEnum):
    """How :meth:`SalesRepository.order_context` locks the order's row and its webinar's."""

    PAYMENT = "payment"  # order FOR UPDATE, webinar FOR KEY SHARE: a payment taking no seat
    PAYMENT_COUNTING = "payment_counting"  # order FOR UPDATE, webinar FOR NO KEY UPDATE


_WEBINAR = Webinar.__tablename__
_BY_TOKEN_LOCKED = {
    OrderLock.PAYMENT: Prebuilt(
        _by_token.with_for_update(of=_orders).suffix_with(
            f"FOR KEY SHARE OF {_WEBINAR}", dialect="postgresql"
        )
    ),
    OrderLock.PAYMENT_COUNTING: Prebuilt(
        _by_token.with_for_update(of=_orders).suffix_with(
            f"FOR NO KEY UPDATE OF {_WEBINAR}", dialect="postgresql"
        )
    ),
}


def _paid_lapsed_holds(webinar_id: Any, *, other_than: Any) -> Any:
    """Seat orders whose hold lapsed (``:now``) and whose row a payment holds right now (see the
    module's docstring): the lapsed holds of the statement's snapshot, less those that can be
    locked ``FOR KEY SHARE SKIP LOCKED``, which skips only rows held ``FOR UPDATE``. Always 0 on
    SQLite (no row locks, one writer: no payment runs beside a count)."""

    def lapsed(alias: Any) -> Any:
        return and_(
            alias.c.webinar_id == webinar_id,
            alias.c.product == Product.SEAT,
            alias.c.status == OrderStatus.HELD,
            alias.c.hold_expires_at <= bindparam("now"),
            alias.c.id != other_than,
        )

    seen, free = _orders.alias("lapsed"), _orders.alias("lapsed_free")
    unlocked = (
        select(free.c.id)
        .where(lapsed(free))
        .with_for_update(read=True, key_share=True, skip_locked=True)
        .subquery()
    )
    return (
        select(func.count(seen.c.id)).where(lapsed(seen)).scalar_subquery()
        - select(func.count()).select_from(unlocked).scalar_subquery()
    )


# The seats of an order's webinar taken by everyone but the order: active tickets, live holds,
# and lapsed holds being paid right now.
_TAKEN_BY_OTHERS = (
    _SeatTickets(bindparam("webinar_id_"))
    + _live_holds(bindparam("webinar_id_"), other_than=bindparam("order_id_"))
    + _paid_lapsed_holds(bindparam("webinar_id_"), other_than=bindparam("order_id_"))
)

# What decides whether a seat hold may stand: the seats taken by everyone else and the buyer's
# own ticket. Counted after the webinar's lock was taken, by a statement of its own (on
# PostgreSQL a statement sees what committed while an earlier one waited for the lock; the
# statement that waited does not).
_hold_counts = select(
    _TAKEN_BY_OTHERS, _own_ticket(bindparam("webinar_id_"), bindparam("user_id_"))
)
_HOLD_COUNTS = Prebuilt(_hold_counts)
_HOLD = Prebuilt(
    update(_orders)
    .where(_orders.c.id == bindparam("order_id_"))
    .values(
        status=OrderStatus.HELD,
        hold_expires_at=bindparam("until_"),
        updated_at=bindparam("now"),
    )
)

# PostgreSQL: the checkout's whole hold in one statement (see :class:`CheckoutRepository`).
HOLD_SEAT_FUNCTION = "webinarpass_hold_seat"
_HOLD_SEAT = Prebuilt(
    text(
        f"SELECT outcome, others, own_ticket_id FROM {HOLD_SEAT_FUNCTION}("
        ":order_id_, :webinar_id_, :user_id_, :until_, :now, :order_version_, :webinar_version_)"
    )
    .bindparams(
        bindparam("order_id_", type_=BigInteger),
        bindparam("webinar_id_", type_=BigInteger),
        bindparam("user_id_", type_=BigInteger),
        bindparam("until_", type_=DateTime(timezone=True)),
        bindparam("now", type_=DateTime(timezone=True)),
        bindparam("order_version_", type_=BigInteger),
        bindparam("webinar_version_", type_=BigInteger),
    )
    .columns(outcome=String, others=BigInteger, own_ticket_id=BigInteger)
)


def hold_seat_function_sql() -> str:
    """The ``CREATE FUNCTION`` of :data:`HOLD_SEAT_FUNCTION`, its counts rendered from the same
    expressions as :data:`_HOLD_COUNTS`. A migration holds a copy of this text, and a test
    holds the two equal: a change to the counting rules needs a migration that replaces it.

    It locks the order, then the webinar (the lock order of the whole module, in the modes of
    the checkout: ``FOR NO KEY UPDATE``), each only if its row is still the version the caller
    read (``xmin``, which every update of a row changes): otherwise it changes nothing and says
    ``stale``. Then, in a snapshot taken after the locks (each statement of a volatile function
    takes its own), it counts; and it writes the hold only if it may stand. The locks end with
    the statement, when it runs outside a transaction, as :class:`CheckoutRepository` runs it.
    """
    names = {
        "order_id_": "p_order",
        "webinar_id_": "p_webinar",
        "user_id_": "p_user",
        "now": "p_now",
        "until_": "p_until",
    }

    def parameter(element: Any) -> Any:
        if isinstance(element, BindParameter) and element.key in names:
            return literal_column(names[element.key])
        return None

    def render(statement: Any) -> str:
        rendered = replacement_traverse(statement, {}, parameter).compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        return " ".join(str(rendered).split())

    counts = render(_hold_counts)
    assert counts.startswith("SELECT ")
    hold = render(_HOLD.statement)
    return f"""CREATE OR REPLACE FUNCTION {HOLD_SEAT_FUNCTION}(
    p_order bigint, p_webinar bigint, p_user bigint, p_until timestamptz, p_now timestamptz,
    p_order_version bigint, p_webinar_version bigint
) RETURNS TABLE (outcome text, others bigint, own_ticket_id bigint)
LANGUAGE plpgsql VOLATILE AS $function$
#variable_conflict use_column
DECLARE
    v_capacity integer;
BEGIN
    others := 0;
    SELECT webinars.capacity INTO v_capacity
        FROM orders JOIN webinars ON webinars.id = orders.webinar_id
        WHERE orders.id = p_order AND webinars.id = p_webinar
            AND orders.xmin::text::bigint = p_order_version
            AND webinars.xmin::text::bigint = p_webinar_version
        FOR NO KEY UPDATE OF orders, webinars;
    IF NOT FOUND THEN
        outcome := 'stale';
        RETURN NEXT;
        RETURN;
    END IF;
    {counts} INTO others, own_ticket_id;
    IF own_ticket_id IS NOT NULL THEN
        outcome := 'has_ticket';
    ELSIF v_capacity IS NOT NULL AND others >= v_capacity THEN
        outcome := 'full';
    ELSE
        {hold};
        outcome := 'held';
    END IF;
    RETURN NEXT;
END
$function$"""


_SEATS_TAKEN = Prebuilt(select(_TAKEN_BY_OTHERS))
_SEATS_TAKEN_BY_ALL = Prebuilt(
    select(_SeatTickets(bindparam("webinar_id_")) + _live_holds(bindparam("webinar_id_")))
)

_MARK_PAID = Prebuilt(
    update(_orders)
    .where(_orders.c.id == bindparam("order_id_"))
    .values(
        status=OrderStatus.PAID,
        paid_at=bindparam("now"),
        hold_expires_at=None,
        updated_at=bindparam("now"),
    )
)

# Every column but the id, each under its own name (see ``SalesRepository._inserted``).
_NEW_ORDER = Prebuilt(insert(_orders).returning(_orders.c.id), columns=_ORDER_KEYS[1:])
_NEW_TICKET = Prebuilt(
    insert(_tickets).returning(_tickets.c.id), columns=tuple(_tickets.columns.keys())[1:]
)


def _payment_insert(insert_: Any) -> Prebuilt:
    """Record a charge unless it was recorded before: under the same Telegram charge id (the
    unique constraint) or, for a card, under the same provider charge id (whatever Telegram id
    it came with: reconciliation records a charge it found under its own)."""
    columns = (
        "order_id",
        "user_id",
        "method",
        "telegram_payment_charge_id",
        "provider_payment_charge_id",
        "amount_minor",
        "currency",
        "status",
        "is_duplicate",
        "created_at",
    )
    values = select(
        *(bindparam(f"{name}_", type_=_payments.c[name].type) for name in columns)
    ).where(
        ~exists().where(
            _payments.c.provider_payment_charge_id
            == bindparam(
                "provider_payment_charge_id_", type_=_payments.c.provider_payment_charge_id.type
            )
        )
    )
    return Prebuilt(
        insert_(_payments)
        .from_select(columns, values)
        .on_conflict_do_nothing(index_elements=["telegram_payment_charge_id"])
        .returning(_payments.c.id)
    )


_NEW_PAYMENT = {"postgresql": _payment_insert(pg_insert), "sqlite": _payment_insert(sqlite_insert)}


@dataclass(frozen=True, slots=True)
class Card:
    """What the webinar card needs, read at once."""

    webinar: Webinar
    org: Organization
    seats_taken: int | None  # active seat tickets and live holds; None: no seat limit
    own_ticket_id: int | None
    viewer_timezone: str | None  # the viewer's own time zone, if they chose one


@dataclass(frozen=True, slots=True)
class Purchase:
    """What an invoice needs, read at once: ``open_order`` is the newest order of the same buyer,
    method and product that is open and never took a charge (whatever its amount)."""

    webinar: Webinar
    org: Organization
    own_ticket_id: int | None
    open_order: Order | None


@dataclass(frozen=True, slots=True)
class OrderContext:
    """An order with its webinar and organization (locked on PostgreSQL, order first), and the
    buyer's active ticket for that webinar as the statement's snapshot saw it (a statement that
    waited for a lock sees the locked rows as they are now, the rest as they were before)."""

    order: Order
    webinar: Webinar
    org: Organization
    own_ticket_id: int | None
    versions: tuple[int, int] | None = None  # the order's and the webinar's (PostgreSQL)


class HoldOutcome(StrEnum):
    HELD = "held"  # written
    HAS_TICKET = "has_ticket"  # the buyer already has a ticket: nothing written
    FULL = "full"  # every seat is taken: nothing written
    STALE = "stale"  # the order or the webinar changed since they were read: nothing written


@dataclass(frozen=True, slots=True)
class Hold:
    """What a checkout's seat hold came to, with what decided it."""

    outcome: HoldOutcome
    others_taken: int  # active seat tickets and other live holds of the webinar
    own_ticket_id: int | None


@dataclass(frozen=True, slots=True)
class QueuedRefund:
    """A pending refund one worker holds until its lease (``next_check_at``) lapses;
    ``attempts`` (bumped by every claim) is the fencing token of what the worker records."""

    refund_id: int
    payment_id: int
    attempts: int


@dataclass(frozen=True, slots=True)
class RefundClaim:
    """A processing refund one worker holds until its lease (``next_check_at``) lapses.
    ``checks`` (bumped by every claim) is the fencing token, as ``attempts`` is in the outbox."""

    refund_id: int
    payment_id: int
    checks: int
    method: PaymentMethod
    provider_refund_id: str


class SalesRepository(Repository):
    @property
    def locks(self) -> bool:
        return self.dialect == "postgresql"

    # -- the selling path: one read per use case, Core writes -----------------------------------

    async def order_context(
        self, token: str, *, lock: OrderLock | None = None
    ) -> OrderContext | None:
        """The order behind an invoice payload with its webinar and organization; ``lock``:
        their rows are locked (PostgreSQL), order first, for the rest of the transaction."""
        locked = lock is not None and self.locks
        statement = _BY_TOKEN_LOCKED[lock] if locked else _BY_TOKEN  # type: ignore[index]
        row = await statement.first(self.session, {"token": token})
        if row is None:
            return None
        order, webinar, org, (own_ticket_id,) = self._models(row, Order, Webinar, Organization)
        return OrderContext(order, webinar, org, own_ticket_id)

    async def seats_taken_by_others(self, order: Order, now: datetime) -> int:
        """The seats of the order's webinar taken by others: active seat tickets, live holds, and
        lapsed holds being paid right now (see the module's docstring). Call with the webinar
        locked for counting."""
        (taken,) = await _SEATS_TAKEN.rows(
            self.session, {"webinar_id_": order.webinar_id, "order_id_": order.id, "now": now}
        )
        return int(taken[0])

    async def mark_paid(self, order: Order, now: datetime) -> None:
        """The order's charge bought it: paid, no hold left. ``order`` shows the new state."""
        await _MARK_PAID.rowcount(self.session, {"order_id_": order.id, "now": now})
        for key, value in (
            ("status", OrderStatus.PAID),
            ("paid_at", now),
            ("hold_expires_at", None),
            ("updated_at", now),
        ):
            set_committed_value(order, key, value)

    async def insert_ticket(self, ticket: Ticket) -> Ticket:
        """Write a new ticket with one Core statement (see :meth:`_inserted`)."""
        return await self._inserted(_NEW_TICKET, ticket)

    def _models(self, row: Sequence[Any], *models: type[Any]) -> list[Any]:
        """The row cut into persistent instances of ``models`` (see ``attached``)."""
        session = self.session
        return _cut(row, models, lambda model, keys, values: attached(session, model, keys, values))

    async def _inserted(self, statement: Prebuilt, obj: Any) -> Any:
        """Insert a new object without the unit of work (a flush of one object costs about
        twice the statement), then attach it to the session as the persistent row it now is
        (every column but the id set: see ``insert_values``)."""
        found = await statement.first(self.session, insert_values(obj))
        assert found is not None
        obj.id = found[0]
        adopt_inserted(self.session, obj)
        return obj

    # -- webinars and organizations ------------------------------------------------------------

    # A webinar is always shown in its organization's language and currency: both are loaded
    # in one statement, so the ``org()`` that follows finds the organization in the session.
    # (The session's identity map holds unchanged objects weakly: ``session.info`` keeps it.)
    _with_org = select(Webinar, Organization).join(Organization, Organization.id == Webinar.org_id)

    async def _webinar_with_org(self, statement: Select[Any]) -> Webinar | None:
        row = (await self.session.execute(statement)).first()
        if row is None:
            return None
        webinar, org = row
        self.session.info.setdefault("organizations", {})[org.id] = org
        return webinar

    async def webinar(self, webinar_id: int, *, lock: bool = False) -> Webinar | None:
        statement = self._with_org.where(Webinar.id == webinar_id)
        if lock and self.locks:
            statement = statement.with_for_update(of=Webinar)
        return await self._webinar_with_org(statement)

    async def webinar_by_group(self, chat_id: int) -> list[Webinar]:
        rows = await self.session.scalars(select(Webinar).where(Webinar.group_chat_id == chat_id))
        return list(rows)

    async def org(self, org_id: int) -> Organization | None:
        return await self.session.get(Organization, org_id)

    async def user(self, user_id: int) -> User | None:
        return await self.session.get(User, user_id)

    async def is_member(self, org_id: int, user_id: int) -> bool:
        found = await self.session.scalar(
            select(OrgMember.id).where(OrgMember.org_id == org_id, OrgMember.user_id == user_id)
        )
        return found is not None

    async def member_ids(self, org_id: int) -> list[int]:
        rows = await self.session.scalars(
            select(OrgMember.user_id)
            .where(OrgMember.org_id == org_id)
            .order_by(OrgMember.role != Role.OWNER, OrgMember.id)
        )
        return list(rows)

    # -- seats ---------------------------------------------------------------------------------

    async def seats_taken(self, webinar_id: int, now: datetime) -> int:
        """Active seat tickets plus live holds (a recording takes no seat): a free ticket's
        seat check, which has no order of its own to leave out."""
        row = await _SEATS_TAKEN_BY_ALL.first(self.session, {"webinar_id_": webinar_id, "now": now})
        assert row is not None
        return int(row[0])

    async def expire_holds(self, now: datetime) -> int:
        result = await self.session.execute(
            update(Order)
            .where(Order.status == OrderStatus.HELD, Order.hold_expires_at <= now)
            .values(status=OrderStatus.EXPIRED, updated_at=now)
        )
        return int(result.rowcount or 0)

    # -- orders --------------------------------------------------------------------------------

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    # -- payments ------------------------------------------------------------------------------

    async def insert_payment(
        self,
        *,
        order_id: int | None,
        user_id: int,
        method: PaymentMethod,
        telegram_charge_id: str,
        provider_charge_id: str | None,
        amount_minor: int,
        currency: str,
        now: datetime,
    ) -> int | None:
        """Record a charge once; ``None`` when it was recorded before (a replay): under this
        Telegram charge id, or under this provider charge id (see ``_payment_insert``)."""
        values = {
            "order_id": order_id,
            "user_id": user_id,
            "method": method,
            "telegram_payment_charge_id": telegram_charge_id,
            "provider_payment_charge_id": provider_charge_id,
            "amount_minor": amount_minor,
            "currency": currency,
            "status": PaymentStatus.SUCCEEDED,
            "is_duplicate": False,
            "created_at": now,
        }
        found = await _NEW_PAYMENT[self.dialect].first(
            self.session, {f"{key}_": value for key, value in values.items()}
        )
        return None if found is None else found[0]

    async def payment(self, payment_id: int, *, lock: bool = False) -> Payment | None:
        statement = select(Payment).where(Payment.id == payment_id)
        if lock and self.locks:
            statement = statement.with_for_update()
        return (await self.session.scalars(statement)).one_or_none()

    async def payment_by_charge(self, telegram_charge_id: str) -> Payment | None:
        return (
            await self.session.scalars(
                select(Payment).where(Payment.telegram_payment_charge_id == telegram_charge_id)
            )
        ).one_or_none()

    async def payment_by_provider_charge(self, provider_charge_id: str) -> Payment | None:
        """The payment recorded for this provider charge id (Stripe ``ch_``/``pi_``, YooKassa's
        payment id), whatever Telegram charge id it was recorded under."""
        return (
            await self.session.scalars(
                select(Payment)
                .where(Payment.provider_payment_charge_id == provider_charge_id)
                .order_by(Payment.id)
                .limit(1)
            )
        ).first()

    async def payments_matching(
        self, *, telegram_charge_ids: Sequence[str], provider_charge_ids: Sequence[str]
    ) -> list[Payment]:
        """Payments recorded under any of these Telegram or provider charge ids
        (reconciliation with a provider's listing), read in chunks to keep statements small."""
        found: dict[int, Payment] = {}
        for column, ids in (
            (Payment.telegram_payment_charge_id, list(dict.fromkeys(telegram_charge_ids))),
            (Payment.provider_payment_charge_id, list(dict.fromkeys(provider_charge_ids))),
        ):
            for start in range(0, len(ids), 500):
                rows = await self.session.scalars(
                    select(Payment)
                    .where(column.in_(ids[start : start + 500]))
                    .execution_options(populate_existing=True)
                )
                found.update((payment.id, payment) for payment in rows)
        return list(found.values())

    async def ticket_of_payment(self, payment_id: int) -> Ticket | None:
        """The ticket this payment bought, if it bought one."""
        return (
            await self.session.scalars(select(Ticket).where(Ticket.payment_id == payment_id))
        ).one_or_none()

    async def order_has_charge(self, order_id: int) -> bool:
        found = await self.session.scalar(
            select(Payment.id).where(Payment.order_id == order_id).limit(1)
        )
        return found is not None

    # -- refunds -------------------------------------------------------------------------------

    async def refund_of(self, payment_id: int) -> Refund | None:
        return (
            await self.session.scalars(
                select(Refund).where(Refund.payment_id == payment_id).order_by(Refund.id).limit(1)
            )
        ).first()

    async def refund(self, refund_id: int, *, refresh: bool = False) -> Refund | None:
        return await self.session.get(Refund, refund_id, populate_existing=refresh)

    async def claim_refunds_to_follow(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[RefundClaim]:
        """Take up to ``limit`` processing refunds that are due a question to the provider.

        One statement, like the outbox's claim: the inner ``FOR UPDATE SKIP LOCKED`` lets
        replicas take disjoint rows on PostgreSQL (SQLite has one writer); moving
        ``next_check_at`` to ``lease_until`` hides the rows from everyone else meanwhile.
        """
        due = (
            select(Refund.id)
            .where(
                Refund.status == RefundStatus.PROCESSING,
                Refund.next_check_at <= now,
                Refund.provider_refund_id.is_not(None),
            )
            .order_by(Refund.next_check_at, Refund.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = (
            await self.session.execute(
                update(Refund)
                .where(Refund.id.in_(due.scalar_subquery()))
                .values(next_check_at=lease_until, checks=Refund.checks + 1)
                .returning(Refund.id, Refund.payment_id, Refund.checks, Refund.provider_refund_id)
                .execution_options(synchronize_session=False)
            )
        ).all()
        if not claimed:
            return []
        methods = dict(
            (
                await self.session.execute(
                    select(Payment.id, Payment.method).where(
                        Payment.id.in_([row.payment_id for row in claimed])
                    )
                )
            ).all()
        )
        return sorted(
            (
                RefundClaim(
                    row.id,
                    row.payment_id,
                    row.checks,
                    PaymentMethod(methods[row.payment_id]),
                    row.provider_refund_id,
                )
                for row in claimed
            ),
            key=lambda claim: claim.refund_id,
        )

    async def claim_due_refunds(
        self, *, now: datetime, lease_until: datetime, limit: int, refund_id: int | None = None
    ) -> list[QueuedRefund]:
        """Take up to ``limit`` pending refunds that are due (or the one ``refund_id``).

        The claim pattern of the outbox: ``FOR UPDATE SKIP LOCKED`` lets replicas take disjoint
        rows on PostgreSQL (SQLite has one writer); moving ``next_check_at`` to ``lease_until``
        hides the rows from everyone else until the lease lapses, so a worker that dies leaves
        its refunds to the next one, and ``attempts`` fences what a stale worker may record.
        """
        due = select(Refund.id).where(
            Refund.status == RefundStatus.PENDING, Refund.next_check_at <= now
        )
        if refund_id is not None:
            due = due.where(Refund.id == refund_id)
        due = due.order_by(Refund.next_check_at, Refund.id).limit(limit)
        if self.locks:
            due = due.with_for_update(skip_locked=True)
        claimed = (
            await self.session.execute(
                update(Refund)
                .where(Refund.id.in_(due.scalar_subquery()))
                .values(next_check_at=lease_until, attempts=Refund.attempts + 1)
                .returning(Refund.id, Refund.payment_id, Refund.attempts)
                .execution_options(synchronize_session=False)
            )
        ).all()
        return sorted(
            (QueuedRefund(row.id, row.payment_id, row.attempts) for row in claimed),
            key=lambda claim: claim.refund_id,
        )

    async def owed_refunds(self, org_id: int) -> list[tuple[Payment, Refund, int | None]]:
        """Charges of an organization's webinars being paid back (or whose refund failed), with
        their refund and the ticket they bought, oldest first: money owed, until it is back."""
        rows = await self.session.execute(
            select(Payment, Refund, Ticket.id)
            .join(Refund, Refund.payment_id == Payment.id)
            .join(Order, Order.id == Payment.order_id)
            .join(Webinar, Webinar.id == Order.webinar_id)
            .outerjoin(Ticket, Ticket.payment_id == Payment.id)
            .where(Webinar.org_id == org_id, Payment.status.in_(OWED_STATUSES))
            .order_by(Payment.id)
        )
        return [(payment, refund, ticket_id) for payment, refund, ticket_id in rows.all()]

    # -- tickets -------------------------------------------------------------------------------

    async def mark_access_delivered(self, ticket_id: int, now: datetime) -> None:
        """The first time a ticket's access message went out (re-sends keep the first moment)."""
        await self.session.execute(
            update(Ticket)
            .where(Ticket.id == ticket_id, Ticket.access_delivered_at.is_(None))
            .values(access_delivered_at=now)
        )

    async def ticket(self, ticket_id: int) -> Ticket | None:
        return await self.session.get(Ticket, ticket_id)

    async def ticket_is_active(self, ticket_id: int) -> bool:
        status = await self.session.scalar(select(Ticket.status).where(Ticket.id == ticket_id))
        return status == TicketStatus.ACTIVE

    async def active_ticket(self, webinar_id: int, user_id: int) -> Ticket | None:
        return (
            await self.session.scalars(
                select(Ticket).where(
                    Ticket.webinar_id == webinar_id,
                    Ticket.user_id == user_id,
                    Ticket.status == TicketStatus.ACTIVE,
                )
            )
        ).first()

    async def active_tickets(self, webinar_id: int) -> list[Ticket]:
        rows = await self.session.scalars(
            select(Ticket)
            .where(Ticket.webinar_id == webinar_id, Ticket.status == TicketStatus.ACTIVE)
            .order_by(Ticket.id)
        )
        return list(rows)

    async def active_ticket_chunks(
        self, webinar_id: int, size: int
    ) -> AsyncIterator[list[tuple[int, int]]]:
        """The webinar's active tickets as ``(ticket_id, user_id)``, by id, ``size`` at a time.

        Keyset paging (``id > last``), so memory stays flat for big webinars and writes made
        between chunks (outbox rows, say) do not shift the walk.
        """
        last_id = 0
        while True:
            rows = (
                await self.session.execute(
                    select(Ticket.id, Ticket.user_id)
                    .where(
                        Ticket.webinar_id == webinar_id,
                        Ticket.status == TicketStatus.ACTIVE,
                        Ticket.id > last_id,
                    )
                    .order_by(Ticket.id)
                    .limit(size)
                )
            ).all()
            if not rows:
                return
            last_id = rows[-1].id
            yield [(ticket_id, user_id) for ticket_id, user_id in rows]

    async def user_tickets(self, user_id: int) -> list[tuple[Ticket, Webinar, Organization]]:
        rows = await self.session.execute(
            select(Ticket, Webinar, Organization)
            .join(Webinar, Webinar.id == Ticket.webinar_id)
            .join(Organization, Organization.id == Webinar.org_id)
            .where(Ticket.user_id == user_id, Ticket.status == TicketStatus.ACTIVE)
            .order_by(Webinar.starts_at, Ticket.id)
        )
        return [(ticket, webinar, org) for ticket, webinar, org in rows.all()]

    async def latest_org_of_buyer(self, user_id: int) -> Organization | None:
        """The organization of the user's most recent order (paid or not)."""
        return (
            await self.session.scalars(
                select(Organization)
                .join(Webinar, Webinar.org_id == Organization.id)
                .join(Order, Order.webinar_id == Webinar.id)
                .where(Order.user_id == user_id)
                .order_by(Order.id.desc())
                .limit(1)
            )
        ).first()

    async def tickets_waiting_for_link(self, webinar_id: int) -> list[Ticket]:
        has_link = select(AccessLink.id).where(AccessLink.ticket_id == Ticket.id).exists()
        rows = await self.session.scalars(
            select(Ticket)
            .where(
                Ticket.webinar_id == webinar_id,
                Ticket.status == TicketStatus.ACTIVE,
                ~has_link,
            )
            .order_by(Ticket.id)
        )
        return list(rows)

    # -- links ---------------------------------------------------------------------------------

    async def take_link(self, webinar_id: int, ticket_id: int, now: datetime) -> int | None:
        """Give the ticket one free link of the pool, atomically: the link's id, or ``None`` if
        the pool is empty.

        One statement: the sub-select picks a free row (skipping rows another transaction is
        taking, on PostgreSQL) and the update re-checks it is still free.
        """
        free = (
            select(AccessLink.id)
            .where(
                AccessLink.webinar_id == webinar_id,
                AccessLink.ticket_id.is_(None),
                AccessLink.revoked_at.is_(None),
            )
            .order_by(AccessLink.id)
            .limit(1)
        )
        if self.locks:
            free = free.with_for_update(skip_locked=True)
        statement = (
            update(AccessLink)
            .where(AccessLink.id == free.scalar_subquery(), AccessLink.ticket_id.is_(None))
            .values(ticket_id=ticket_id, assigned_at=now)
            .returning(AccessLink.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def link_of(self, ticket_id: int) -> AccessLink | None:
        return (
            await self.session.scalars(select(AccessLink).where(AccessLink.ticket_id == ticket_id))
        ).one_or_none()

    async def links_of(self, ticket_ids: Sequence[int]) -> dict[int, AccessLink]:
        if not ticket_ids:
            return {}
        rows = await self.session.scalars(
            select(AccessLink).where(AccessLink.ticket_id.in_(list(ticket_ids)))
        )
        return {link.ticket_id: link for link in rows if link.ticket_id is not None}

    async def count_links(self, webinar_id: int) -> int:
        return int(
            await self.session.scalar(
                select(func.count(AccessLink.id)).where(AccessLink.webinar_id == webinar_id)
            )
            or 0
        )

    async def revoke_link_of(self, ticket_id: int, now: datetime) -> AccessLink | None:
        link = await self.link_of(ticket_id)
        if link is not None and link.revoked_at is None:
            link.revoked_at = now
            await self.session.flush()
        return link

    async def has_active_ticket_in_group(self, chat_id: int, user_id: int) -> bool:
        found = await self.session.scalar(
            select(Ticket.id)
            .join(Webinar, Webinar.id == Ticket.webinar_id)
            .where(
                and_(
                    Webinar.group_chat_id == chat_id,
                    Ticket.user_id == user_id,
                    Ticket.status == TicketStatus.ACTIVE,
                )
            )
            .limit(1)
        )
        return found is not None


def _cut(row: Sequence[Any], models: Sequence[type[Any]], make: Callable[..., Any]) -> list[Any]:
    """The row cut into instances of ``models`` (their columns first, in order), each made by
    ``make(model, keys, values)``, then a list of the values after them."""
    found: list[Any] = []
    start = 0
    for model in models:
        keys = _KEYS[model]
        found.append(make(model, keys, row[start : start + len(keys)]))
        start += len(keys)
    found.append(list(row[start:]))
    return found


class OfferRepository(DirectRepository):
    """The card's read and the invoice's read and order, in the update's transaction or, for an
    update whose user the use case stores itself, in a transaction of their own without a
    session (``storage.direct``; see ``SalesService.offer``). Rows come back as
    :meth:`DirectRepository._model` makes them: persistent in a session, read-only otherwise."""

    async def card(self, code: str, user_id: int, now: datetime) -> Card | None:
        """The webinar behind a deep-link code, with what its card shows to this viewer."""
        row = await _CARD.first(self.session, {"code": code, "user_id": user_id, "now": now})
        if row is None:
            return None
        webinar, org, (taken, own_ticket_id, timezone) = _cut(
            row, (Webinar, Organization), self._model
        )
        return Card(webinar, org, None if taken is None else int(taken), own_ticket_id, timezone)

    async def purchase(
        self, webinar_id: int, user_id: int, method: PaymentMethod, product: Product
    ) -> Purchase | None:
        """The webinar being bought, with the buyer's ticket and reusable order."""
        row = await _INVOICE.first(
            self.session,
            {"webinar_id": webinar_id, "user_id": user_id, "method": method, "product": product},
        )
        if row is None:
            return None
        webinar, org, (own_ticket_id, *order_values) = _cut(
            row, (Webinar, Organization), self._model
        )
        order = None
        if order_values[0] is not None:  # the outer join found a reusable order
            order = self._model(Order, _ORDER_KEYS, order_values)
        return Purchase(webinar, org, own_ticket_id, order)

    async def insert_order(self, order: Order) -> Order:
        """Write a new order with one Core statement, without the unit of work."""
        found = await _NEW_ORDER.first(self.session, insert_values(order))
        assert found is not None
        order.id = found[0]
        return self._written(order)


class CheckoutRepository(DirectRepository):
    """A pre-checkout query's read and seat hold, on a transaction of their own without a session
    (``storage.direct``), opened with ``autocommit=True``.

    On PostgreSQL neither takes a lock across a round trip. The read takes none: it notes the
    version of the order's and the webinar's rows instead. The hold is one statement, a call of
    :data:`HOLD_SEAT_FUNCTION` (see :func:`hold_seat_function_sql`), which locks both rows only if
    they are still as read, counts after the locks, and writes the hold only if it may stand;
    outside a transaction its locks end with it. A checkout used to hold the webinar's lock from
    its first statement to its commit: two round trips and the turns of the event loop between,
    which every other checkout of the webinar waited for in turn.

    On SQLite the transaction is one ``BEGIN IMMEDIATE`` (one writer: nothing changes between
    the read and the hold), and the hold is the count, then the write if it may stand.
    """

    async def order_context(self, token: str) -> OrderContext | None:
        """The order behind an invoice payload with its webinar and organization, read without a
        lock, and the buyer's active ticket for that webinar."""
        versioned = self.dialect == "postgresql"
        statement = _BY_TOKEN_VERSIONED if versioned else _BY_TOKEN
        row = await statement.first(self.session, {"token": token})
        if row is None:
            return None
        order, webinar, org, rest = _cut(row, (Order, Webinar, Organization), built)
        versions = (rest[1], rest[2]) if versioned else None
        return OrderContext(order, webinar, org, rest[0], versions)

    async def hold_seat(self, found: OrderContext, *, until: datetime, now: datetime) -> Hold:
        """Hold a seat for the order until ``until`` if one is free and the buyer has no ticket
        for the webinar yet; otherwise write nothing. ``found`` is what :meth:`order_context`
        read, in this transaction."""
        order = found.order
        params = {
            "order_id_": order.id,
            "webinar_id_": order.webinar_id,
            "user_id_": order.user_id,
            "until_": until,
            "now": now,
        }
        if found.versions is not None:
            order_version, webinar_version = found.versions
            params |= {"order_version_": order_version, "webinar_version_": webinar_version}
            row = await _HOLD_SEAT.first(self.session, params)
            assert row is not None
            outcome, others, own_ticket_id = row
            return Hold(HoldOutcome(outcome), int(others), own_ticket_id)
        counted = await _HOLD_COUNTS.first(self.session, params)
        assert counted is not None
        others, own_ticket_id = int(counted[0]), counted[1]
        capacity = found.webinar.capacity
        if own_ticket_id is not None:
            return Hold(HoldOutcome.HAS_TICKET, others, own_ticket_id)
        if capacity is not None and others >= capacity:
            return Hold(HoldOutcome.FULL, others, own_ticket_id)
        await _HOLD.rowcount(self.session, params)
        return Hold(HoldOutcome.HELD, others, own_ticket_id)
