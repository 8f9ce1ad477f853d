"""Selling: webinar offers, orders and invoices, pre-checkout seat holds, payments and tickets.

The invariants (DESIGN.md, "An order's life"):

- The invoice payload is the order's opaque token. Amount, currency, owner and the webinar's
  state are checked against the order at pre-checkout and again at payment.
- Seats: active tickets + live holds <= capacity. Every decision that takes a seat locks the
  webinar row first on PostgreSQL (SQLite has a single writer), then counts.
- A payment is recorded once (unique charge id); ticket, link, reminders and the access
  delivery are written in the same transaction. A payment that cannot buy a seat (second charge
  of a paid order, hold lapsed on a full webinar, cancelled webinar) is recorded and refunded.
- A payment whose payload matches no order is recorded all the same (without an order), the
  buyer told, and refunded: money taken is never only a line in a log.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from bot.formatting import STARS, escape, money
from bot.i18n import _
from bot.services.base import Service
from payments import ReceiptSpec, build_invoice
from payments.base import CURRENCY_EXPONENTS, method_of_charge
from storage.enums import (
    AccessMode,
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
    RefundReason,
    RefundStatus,
    TicketStatus,
    WebinarStatus,
)
from storage.models import Order, Organization, Payment, Refund, Ticket, Webinar
from storage.repositories.sales import SalesRepository

log = logging.getLogger(__name__)

CARD_CURRENCIES = frozenset(code for code in CURRENCY_EXPONENTS if code != STARS)
# A payment whose charge cannot buy a seat is refunded; these reasons are decided by the bot.
AUTOMATIC_REASONS = (
    RefundReason.DUPLICATE,
    RefundReason.NO_SEAT,
    RefundReason.CANCELLED,
    RefundReason.UNMATCHED,
)


def refund_key(payment_id: int) -> str:
    """The idempotency key of a payment's refund: stable across retries and restarts."""
    return f"webinarpass-refund-{payment_id}"


class SaleState(StrEnum):
    ON_SALE = "on_sale"
    SOLD_OUT = "sold_out"
    STARTED = "started"
    CANCELLED = "cancelled"
    NOT_ON_SALE = "not_on_sale"  # a draft


@dataclass(frozen=True)
class Price:
    method: PaymentMethod
    amount_minor: int
    currency: str


@dataclass
class Offer:
    """What the webinar card shows to one buyer."""

    webinar: Webinar
    org: Organization
    state: SaleState
    prices: list[Price]
    seats_left: int | None  # None: unlimited
    own_ticket: Ticket | None = None


@dataclass
class InvoiceResult:
    """``send_invoice`` keyword arguments, or a refusal already in the organization's language."""

    invoice: dict[str, Any] | None = None
    refusal: str | None = None
    order: Order | None = None


@dataclass(frozen=True)
class CheckoutAnswer:
    ok: bool
    error_message: str | None = None


class PaymentResult(StrEnum):
    ISSUED = "issued"  # ticket issued, access delivery planned
    WAITING_LINK = "waiting_link"  # ticket issued, link pool empty: the link follows
    REFUNDING = "refunding"  # recorded, cannot buy a seat (or matches no order): refunded
    REPLAY = "replay"  # this charge was recorded before: nothing changed
    UNKNOWN_ORDER = "unknown_order"  # a free registration for a webinar that does not exist


@dataclass
class PaymentOutcome:
    result: PaymentResult
    order: Order | None = None
    webinar: Webinar | None = None
    org: Organization | None = None
    ticket: Ticket | None = None
    payment_id: int | None = None
    reason: RefundReason | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SalesService(Service):
    @property
    def repo(self) -> SalesRepository:
        return SalesRepository(self.session)

    # -- the card ------------------------------------------------------------------------------

    def prices(self, webinar: Webinar, org: Organization) -> list[Price]:
        """Accepted methods with a price, in a stable order (Stars first)."""
        prices: list[Price] = []
        settings = self.settings
        if org.accept_stars and webinar.price_stars:
            prices.append(Price(PaymentMethod.STARS, webinar.price_stars, STARS))
        card_ok = bool(webinar.price_minor) and webinar.currency in CARD_CURRENCIES
        if card_ok and org.accept_stripe and settings.stripe_provider_token:
            prices.append(Price(PaymentMethod.STRIPE, webinar.price_minor or 0, webinar.currency))
        if card_ok and org.accept_yookassa and settings.yookassa_provider_token:
            prices.append(Price(PaymentMethod.YOOKASSA, webinar.price_minor or 0, webinar.currency))
        return prices

    def sale_state(self, webinar: Webinar, seats_left: int | None) -> SaleState:
        if webinar.status == WebinarStatus.CANCELLED:
            return SaleState.CANCELLED
        if webinar.status != WebinarStatus.PUBLISHED:
            return SaleState.NOT_ON_SALE
        if webinar.starts_at <= self.clock.now():
            return SaleState.STARTED
        if seats_left is not None and seats_left <= 0:
            return SaleState.SOLD_OUT
        return SaleState.ON_SALE

    async def seats_left(self, webinar: Webinar) -> int | None:
        if webinar.capacity is None:
            return None
        taken = await self.repo.seats_taken(webinar.id, self.clock.now())
        return max(webinar.capacity - taken, 0)

    async def offer(self, code: str, user_id: int) -> Offer | None:
        """The card of the webinar behind a deep-link code, or ``None`` if there is none."""
        webinar = await self.repo.webinar_by_code(code)
        if webinar is None:
            await self.session.commit()
            return None
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        seats_left = await self.seats_left(webinar)
        own = await self.repo.active_ticket(webinar.id, user_id)
        offer = Offer(
            webinar=webinar,
            org=org,
            state=self.sale_state(webinar, seats_left),
            prices=self.prices(webinar, org),
            seats_left=seats_left,
            own_ticket=own,
        )
        await self.session.commit()  # end the read before the handler talks to Telegram
        return offer

    # -- invoices ------------------------------------------------------------------------------

    async def create_invoice(
        self, user_id: int, webinar_id: int, method: PaymentMethod
    ) -> InvoiceResult:
        """Open (or reuse) an order and build its invoice; the payload is the order's token."""
        webinar = await self.repo.webinar(webinar_id)
        if webinar is None:
            await self.session.commit()
            return InvoiceResult(refusal=_("This webinar no longer exists."))
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        lang = org.language
        refusal = await self._sale_refusal(webinar, lang)
        if refusal is None and await self.repo.active_ticket(webinar.id, user_id):
            refusal = _(
                "You already have a ticket for this webinar. /my shows your access.", locale=lang
            )
        price = next((p for p in self.prices(webinar, org) if p.method == method), None)
        if refusal is None and price is None:
            refusal = _("This payment method is not available for this webinar.", locale=lang)
        if refusal is not None or price is None:
            await self.session.commit()
            return InvoiceResult(refusal=refusal)

        now = self.clock.now()
        order = await self.repo.open_order(
            webinar_id=webinar.id,
            user_id=user_id,
            method=method,
            amount=price.amount_minor,
            currency=price.currency,
        )
        if order is None:
            order = Order(
                token=secrets.token_urlsafe(24),
                webinar_id=webinar.id,
                user_id=user_id,
                method=method,
                amount_minor=price.amount_minor,
                currency=price.currency,
                status=OrderStatus.CREATED,
                created_at=now,
            )
            await self.repo.add(order)
        invoice = self._invoice_kwargs(order, webinar, org, chat_id=user_id)
        await self.session.commit()
        return InvoiceResult(invoice=invoice, order=order)

    def _invoice_kwargs(
        self, order: Order, webinar: Webinar, org: Organization, *, chat_id: int
    ) -> dict[str, Any]:
        lang = org.language
        method = PaymentMethod(order.method)
        provider_token: str | None = None
        need_email = False
        receipt: ReceiptSpec | None = None
        if method == PaymentMethod.STRIPE and self.settings.stripe_provider_token:
            provider_token = self.settings.stripe_provider_token.get_secret_value()
        elif method == PaymentMethod.YOOKASSA and self.settings.yookassa_provider_token:
            provider_token = self.settings.yookassa_provider_token.get_secret_value()
            # A fiscal receipt is e-mailed by YooKassa: it needs the buyer's address.
            need_email = org.yookassa_need_email or org.yookassa_receipt
            if org.yookassa_receipt:
                receipt = ReceiptSpec(description=webinar.title, vat_code=org.yookassa_vat_code)
        starts = _local(webinar, org)
        description = _(
            "{organization} · {starts}", locale=lang, organization=org.name, starts=starts
        )
        if webinar.description:
            description = f"{description}\n{webinar.description}"
        return build_invoice(
            method,
            chat_id=chat_id,
            title=webinar.title,
            description=description,
            payload=order.token,
            amount_minor=order.amount_minor,
            currency=order.currency,
            provider_token=provider_token,
            label=_("Webinar ticket", locale=lang),
            need_email=need_email,
            receipt=receipt,
            allowed_currencies=None if method == PaymentMethod.STARS else CARD_CURRENCIES,
        )

    async def _sale_refusal(self, webinar: Webinar, lang: str) -> str | None:
        """Why this webinar cannot be bought now (ignoring seats), or ``None``."""
        if webinar.status == WebinarStatus.CANCELLED:
            return _("This webinar has been cancelled.", locale=lang)
        if webinar.status != WebinarStatus.PUBLISHED:
            return _("This webinar is not on sale yet.", locale=lang)
        if webinar.starts_at <= self.clock.now():
            return _("This webinar has already started: sales are closed.", locale=lang)
        return None

    # -- pre-checkout --------------------------------------------------------------------------

    async def pre_checkout(
        self, *, user_id: int, payload: str, total_amount: int, currency: str
    ) -> CheckoutAnswer:
        """Accept the checkout only if the order is valid and a seat hold can be taken.

        One short transaction; on refusal nothing is written.
        """
        try:
            answer = await self._pre_checkout(user_id, payload, total_amount, currency)
        except Exception:
            await self.session.rollback()
            raise
        if answer.ok:
            await self.session.commit()
        else:
            await self.session.rollback()
        return answer

    async def _pre_checkout(
        self, user_id: int, payload: str, total_amount: int, currency: str
    ) -> CheckoutAnswer:
        invalid = CheckoutAnswer(
            False, _("This invoice is not valid. Please open the webinar link again.")
        )
        order = await self.repo.order_by_token(payload, lock=True) if payload else None
        if order is None or order.user_id != user_id:
            return invalid
        webinar = await self.repo.webinar(order.webinar_id, lock=True)
        if webinar is None:
            return invalid
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        lang = org.language
        if order.status == OrderStatus.PAID:
            return CheckoutAnswer(
                False, _("This order is already paid. /my shows your access.", locale=lang)
            )
        if order.status not in (OrderStatus.CREATED, OrderStatus.HELD, OrderStatus.EXPIRED):
            return CheckoutAnswer(
                False,
                _(
                    "This invoice is no longer valid. Please open the webinar link again.",
                    locale=lang,
                ),
            )
        refusal = await self._sale_refusal(webinar, lang)
        if refusal is not None:
            return CheckoutAnswer(False, refusal)
        price = next((p for p in self.prices(webinar, org) if p.method == order.method), None)
        if (
            price is None
            or (price.amount_minor, price.currency) != (order.amount_minor, order.currency)
            or (total_amount, currency) != (order.amount_minor, order.currency)
        ):
            return CheckoutAnswer(
                False,
                _(
                    "The price of this webinar has changed. "
                    "Please open the webinar link again for a new invoice.",
                    locale=lang,
                ),
            )
        if await self.repo.active_ticket(webinar.id, user_id):
            return CheckoutAnswer(
                False,
                _(
                    "You already have a ticket for this webinar. /my shows your access.",
                    locale=lang,
                ),
            )
        now = self.clock.now()
        if webinar.capacity is not None:
            taken = await self.repo.seats_taken(webinar.id, now, exclude_order_id=order.id)
            if taken >= webinar.capacity:
                return CheckoutAnswer(
                    False, _("Sorry, all seats of this webinar are taken.", locale=lang)
                )
        order.status = OrderStatus.HELD
        order.hold_expires_at = now + timedelta(minutes=self.settings.seat_hold_minutes)
        order.updated_at = now
        await self.session.flush()
        return CheckoutAnswer(True)

    async def expire_holds(self) -> int:
        """Mark lapsed holds expired (they already stopped counting when they lapsed)."""
        expired = await self.repo.expire_holds(self.clock.now())
        await self.session.commit()
        return expired

    # -- successful payment --------------------------------------------------------------------

    async def complete_payment(
        self,
        *,
        user_id: int,
        payload: str,
        total_amount: int,
        currency: str,
        telegram_charge_id: str,
        provider_charge_id: str | None = None,
    ) -> PaymentOutcome:
        """Record a successful payment and issue the ticket, in one transaction.

        A replayed update changes nothing. A charge that cannot buy a seat is recorded, the
        buyer is told why, and it is refunded right after the commit (a crash in between leaves
        a pending refund that the maintenance job retries).
        """
        outcome: PaymentOutcome | None = None
        for attempt in range(3):
            try:
                outcome = await self._record_payment(
                    user_id=user_id,
                    payload=payload,
                    total_amount=total_amount,
                    currency=currency,
                    telegram_charge_id=telegram_charge_id,
                    provider_charge_id=provider_charge_id,
                )
                await self.session.commit()
                break
            except IntegrityError:
                # Two charges of one buyer racing for the same webinar: the loser sees the
                # winner's ticket on the next attempt and becomes a refunded duplicate.
                await self.session.rollback()
                if attempt == 2:
                    raise
        assert outcome is not None
        if outcome.result == PaymentResult.REFUNDING and outcome.payment_id is not None:
            from bot.services.refunds import RefundService

            await RefundService(self.session, self.app).refund_payment(outcome.payment_id)
        return outcome

    async def _record_payment(
        self,
        *,
        user_id: int,
        payload: str,
        total_amount: int,
        currency: str,
        telegram_charge_id: str,
        provider_charge_id: str | None,
    ) -> PaymentOutcome:
        now = self.clock.now()
        repo = self.repo
        order = await repo.order_by_token(payload, lock=True)
        if order is None:
            return await self._record_unmatched(
                user_id=user_id,
                total_amount=total_amount,
                currency=currency,
                telegram_charge_id=telegram_charge_id,
                provider_charge_id=provider_charge_id,
            )
        payment_id = await repo.insert_payment(
            order_id=order.id,
            user_id=user_id,
            method=PaymentMethod(order.method),
            telegram_charge_id=telegram_charge_id,
            provider_charge_id=provider_charge_id,
            amount_minor=total_amount,
            currency=currency,
            now=now,
        )
        webinar = await repo.webinar(order.webinar_id)
        assert webinar is not None
        org = await repo.org(webinar.org_id)
        assert org is not None
        outcome = PaymentOutcome(
            PaymentResult.REPLAY, order=order, webinar=webinar, org=org, payment_id=payment_id
        )
        if payment_id is None:
            return outcome

        reason = await self._refund_reason(order, webinar, user_id, total_amount, currency, now)
        if reason is not None:
            payment = await repo.payment(payment_id)
            assert payment is not None
            await self._plan_automatic_refund(payment, order, webinar, org, reason)
            outcome.result, outcome.reason = PaymentResult.REFUNDING, reason
            return outcome

        order.status = OrderStatus.PAID
        order.paid_at = now
        order.hold_expires_at = None
        order.updated_at = now
        ticket = Ticket(
            order_id=order.id,
            webinar_id=webinar.id,
            user_id=order.user_id,
            status=TicketStatus.ACTIVE,
            created_at=now,
        )
        await repo.add(ticket)
        outcome.ticket = ticket
        outcome.result = await self._deliver_access(ticket, webinar, org)
        from bot.services.reminders import ReminderService

        await ReminderService(self.session, self.app).plan_for_ticket(ticket, webinar)
        return outcome

    async def _refund_reason(
        self,
        order: Order,
        webinar: Webinar,
        user_id: int,
        total_amount: int,
        currency: str,
        now: Any,
    ) -> RefundReason | None:
        """Why this fresh charge cannot buy a seat, or ``None`` if it can."""
        mismatch = (user_id, total_amount, currency) != (
            order.user_id,
            order.amount_minor,
            order.currency,
        )
        if mismatch or order.status not in (
            OrderStatus.CREATED,
            OrderStatus.HELD,
            OrderStatus.EXPIRED,
        ):
            return RefundReason.DUPLICATE
        if webinar.status == WebinarStatus.CANCELLED:
            return RefundReason.CANCELLED
        if await self.repo.active_ticket(webinar.id, order.user_id):
            return RefundReason.DUPLICATE
        live_hold = (
            order.status == OrderStatus.HELD
            and order.hold_expires_at is not None
            and order.hold_expires_at > now
        )
        if live_hold or webinar.capacity is None:
            return None
        # The hold lapsed: take a seat only if one is free, deciding under the webinar's lock.
        await self.repo.webinar(webinar.id, lock=True)
        taken = await self.repo.seats_taken(webinar.id, now, exclude_order_id=order.id)
        return RefundReason.NO_SEAT if taken >= webinar.capacity else None

    async def _plan_automatic_refund(
        self,
        payment: Payment,
        order: Order,
        webinar: Webinar,
        org: Organization,
        reason: RefundReason,
    ) -> None:
        """Write the refund as pending and tell the buyer why, in the payment's transaction."""
        now = self.clock.now()
        payment.is_duplicate = reason == RefundReason.DUPLICATE
        payment.status = PaymentStatus.REFUND_PENDING
        if reason != RefundReason.DUPLICATE:
            order.hold_expires_at = None
            order.updated_at = now
        await self.repo.add(
            Refund(
                payment_id=payment.id,
                status=RefundStatus.PENDING,
                reason=reason,
                idempotency_key=refund_key(payment.id),
                created_at=now,
            )
        )
        lang = org.language
        amount = money(payment.amount_minor, payment.currency, lang)
        title = escape(webinar.title)
        if reason == RefundReason.NO_SEAT:
            text = _(
                "Sorry: the last seats of «{title}» were taken while you were paying. "
                "Your payment of {amount} is being refunded to you.",
                locale=lang,
                title=title,
                amount=amount,
            )
        elif reason == RefundReason.CANCELLED:
            text = _(
                "«{title}» has been cancelled, so your payment of {amount} "
                "is being refunded to you.",
                locale=lang,
                title=title,
                amount=amount,
            )
        else:
            text = _(
                "You already paid for «{title}», so this extra payment of {amount} "
                "is being refunded to you. Your ticket stays valid: /my shows it.",
                locale=lang,
                title=title,
                amount=amount,
            )
        from bot.services.outbox import OutboxService

        await OutboxService(self.session, self.app).notice(
            dedupe_key=f"autorefund:{payment.id}",
            chat_id=payment.user_id,
            text=text,
            org_id=org.id,
            webinar_id=webinar.id,
        )

    async def _record_unmatched(
        self,
        *,
        user_id: int,
        total_amount: int,
        currency: str,
        telegram_charge_id: str,
        provider_charge_id: str | None,
    ) -> PaymentOutcome:
        """A charge whose payload matches no order: record it, plan its refund, tell the buyer.

        Same table and constraint as every payment (a redelivered update is a replay), and the
        same refund path (pending, retries, alerts), with no order, webinar or ticket.
        """
        now = self.clock.now()
        method = self._unmatched_method(currency, provider_charge_id)
        payment_id = await self.repo.insert_payment(
            order_id=None,
            user_id=user_id,
            method=method,
            telegram_charge_id=telegram_charge_id,
            provider_charge_id=provider_charge_id,
            amount_minor=total_amount,
            currency=currency,
            now=now,
        )
        if payment_id is None:
            return PaymentOutcome(PaymentResult.REPLAY)
        log.error(
            "payment %s (%s %s from user %s) matches no order: refunding it",
            telegram_charge_id,
            total_amount,
            currency,
            user_id,
        )
        payment = await self.repo.payment(payment_id)
        assert payment is not None
        payment.status = PaymentStatus.REFUND_PENDING
        await self.repo.add(
            Refund(
                payment_id=payment.id,
                status=RefundStatus.PENDING,
                reason=RefundReason.UNMATCHED,
                idempotency_key=refund_key(payment.id),
                created_at=now,
            )
        )
        from bot.services.outbox import OutboxService
        from bot.services.users import UserService

        users = UserService(self.session, self.app)
        # No organization to speak for: the buyer's own language.
        lang = users.locale_of(await users.repo.get(user_id))
        await OutboxService(self.session, self.app).notice(
            dedupe_key=f"unmatched:{payment.id}",
            chat_id=user_id,
            text=_(
                "I received your payment of {amount} but it matches no order (the invoice may "
                "be outdated), so it is being refunded to you automatically. You need to do "
                "nothing. Questions: /paysupport",
                locale=lang,
                amount=money(total_amount, currency, lang),
            ),
        )
        return PaymentOutcome(
            PaymentResult.REFUNDING, payment_id=payment.id, reason=RefundReason.UNMATCHED
        )

    def _unmatched_method(self, currency: str, provider_charge_id: str | None) -> PaymentMethod:
        """The method to refund an unmatched charge through. When the charge does not say,
        the configured card provider; a wrong guess fails safely (the provider does not know
        the charge) and the bot's owners are alerted."""
        found = method_of_charge(currency, provider_charge_id)
        if found is not None:
            return PaymentMethod(found.value)
        if self.settings.yookassa_provider_token and not self.settings.stripe_provider_token:
            return PaymentMethod.YOOKASSA
        return PaymentMethod.STRIPE

    async def _deliver_access(
        self, ticket: Ticket, webinar: Webinar, org: Organization
    ) -> PaymentResult:
        from bot.services.access import AccessService

        access = AccessService(self.session, self.app)
        if webinar.access_mode == AccessMode.LINKS:
            link = await self.repo.take_link(webinar.id, ticket.id, self.clock.now())
            if link is None:
                await access.tell_waiting(ticket, webinar, org)
                return PaymentResult.WAITING_LINK
        await access.enqueue(ticket, webinar)
        return PaymentResult.ISSUED

    async def buyer_org(self, user_id: int) -> Organization | None:
        """The organization the user bought from last (for /paysupport and /terms)."""
        org = await self.repo.latest_org_of_buyer(user_id)
        await self.session.commit()
        return org

    # -- free webinars -------------------------------------------------------------------------

    async def register_free(self, user_id: int, webinar_id: int) -> PaymentOutcome:
        """Issue a ticket for a free webinar (no order, no payment), seat rules as for sales."""
        try:
            outcome = await self._register_free(user_id, webinar_id)
        except IntegrityError:
            await self.session.rollback()
            webinar = await self.repo.webinar(webinar_id)
            await self.session.commit()
            return PaymentOutcome(PaymentResult.REPLAY, webinar=webinar)
        await self.session.commit()
        return outcome

    async def _register_free(self, user_id: int, webinar_id: int) -> PaymentOutcome:
        now = self.clock.now()
        webinar = await self.repo.webinar(webinar_id, lock=True)
        if webinar is None:
            return PaymentOutcome(PaymentResult.UNKNOWN_ORDER)
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        outcome = PaymentOutcome(PaymentResult.REPLAY, webinar=webinar, org=org)
        refusal = await self._sale_refusal(webinar, org.language)
        if not webinar.is_free or refusal is not None:
            outcome.extra["refusal"] = refusal or _(
                "This payment method is not available for this webinar.", locale=org.language
            )
            return outcome
        existing = await self.repo.active_ticket(webinar.id, user_id)
        if existing is not None:
            outcome.ticket = existing
            return outcome
        full = webinar.capacity is not None and (
            await self.repo.seats_taken(webinar.id, now) >= webinar.capacity
        )
        if full:
            outcome.extra["refusal"] = _(
                "Sorry, all seats of this webinar are taken.", locale=org.language
            )
            return outcome
        ticket = Ticket(
            webinar_id=webinar.id, user_id=user_id, status=TicketStatus.ACTIVE, created_at=now
        )
        await self.repo.add(ticket)
        outcome.ticket = ticket
        outcome.result = await self._deliver_access(ticket, webinar, org)
        from bot.services.reminders import ReminderService

        await ReminderService(self.session, self.app).plan_for_ticket(ticket, webinar)
        return outcome


def _local(webinar: Webinar, org: Organization) -> str:
    from bot.formatting import local_datetime

    return local_datetime(webinar.starts_at, org.timezone, org.language)


async def sales_maintenance(app: Any) -> tuple[int, int]:
    """The job: expire lapsed seat holds and retry automatic refunds that were interrupted."""
    from bot.services.refunds import RefundService

    async with app.session_factory() as session:
        expired = await SalesService(session, app).expire_holds()
        retried = await RefundService(session, app).retry_stuck()
    return expired, retried
