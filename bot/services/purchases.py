"""Completing a purchase: a successful payment becomes a ticket, or a queued refund.

Read top to bottom, :meth:`PurchaseService.complete_payment` is the whole use case:

1. lock the order (the invoice payload is its token), then its webinar: the one lock order of
   every path that changes a webinar's seats or state (cancel takes the webinar's lock too, so
   a payment either lands before a cancellation's snapshot of tickets or sees it cancelled).
   The order's lock is exclusive (two charges of one order run one at a time). The webinar's is
   the weakest (``FOR KEY SHARE``) when the charge takes no seat of its own (its order holds a
   live seat, the webinar has no seat limit, or it buys the recording): a hold becoming a ticket
   leaves the seats taken as they were, so such payments run side by side and beside the
   pre-checkouts, and one at a time with a cancellation or an edit. A charge whose hold lapsed,
   for a limited webinar, must count the seats: it ends its transaction before writing anything
   and starts again with the webinar locked for counting, as a pre-checkout does (taking the
   stronger lock over the weaker one could deadlock two such payments). The lock modes, and how
   a count takes a payment running beside it into account: :mod:`storage.repositories.sales`;
2. record the charge once (unique Telegram charge id: a replayed update changes nothing);
3. decide whether the charge buys a seat; if not, queue its refund and tell the buyer why;
4. otherwise mark the order paid, issue the ticket *of this payment*, allocate the link, plan
   the access message and the reminders;

all in one transaction. Refunds are never called from here: they are queued work (see
:mod:`bot.services.refunds`). A charge whose payload matches no order is recorded all the same
(without an order) and refunded: money taken is never only a line in a log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from bot.context import AppContext
from bot.i18n import _
from bot.metrics import PAYMENTS
from bot.services import money_texts, orders
from bot.services.access import AccessService
from bot.services.base import Service
from bot.services.link_templates import fill_link_template, new_link_token
from bot.services.outbox import OutboxService
from bot.services.recordings import RecordingService
from bot.services.refunds import RefundService
from bot.services.reminders import ReminderService
from bot.services.sales import SalesService
from bot.services.users import UserService
from payments.base import method_of_charge
from storage.enums import (
    AccessMode,
    OrderStatus,
    PaymentMethod,
    Product,
    RefundReason,
    WebinarStatus,
)
from storage.models import AccessLink, Order, Organization, Payment, Ticket, Webinar
from storage.repositories.sales import OrderContext, OrderLock, SalesRepository

log = logging.getLogger(__name__)


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


class PurchaseService(Service):
    def __init__(
        self,
        session,
        app: AppContext,
        *,
        access: AccessService,
        reminders: ReminderService,
        refunds: RefundService,
        outbox: OutboxService,
        users: UserService,
        sales: SalesService,
        recordings: RecordingService,
    ) -> None:
        super().__init__(session, app)
        self.recordings = recordings
        self.sales = sales
        self.access = access
        self.reminders = reminders
        self.refunds = refunds
        self.outbox = outbox
        self.users = users

    @property
    def repo(self) -> SalesRepository:
        return SalesRepository(self.session)

    async def complete_payment(
        self,
        *,
        user_id: int,
        payload: str,
        total_amount: int,
        currency: str,
        telegram_charge_id: str,
        provider_charge_id: str | None = None,
        method: PaymentMethod | None = None,
    ) -> PaymentOutcome:
        """Record a successful payment and issue the ticket (or queue its refund), in one
        transaction. A replayed update changes nothing. ``method``: the method that took the
        charge, when the caller knows it (reconciliation); otherwise the order's."""
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
                    method=method,
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
        self._committed(outcome)
        return outcome

    def _committed(self, outcome: PaymentOutcome) -> None:
        """Count the payment and wake the workers that have something to do now."""
        kind = outcome.order.method if outcome.order is not None else "unmatched"
        PAYMENTS.labels(str(kind), str(outcome.result)).inc()
        if outcome.result == PaymentResult.REFUNDING:
            self.app.wake.refunds()
        if outcome.result != PaymentResult.REPLAY:
            self.app.wake.outbox()

    async def record_unmatched_charge(
        self,
        *,
        method: PaymentMethod,
        user_id: int | None,
        total_amount: int,
        currency: str,
        telegram_charge_id: str,
        provider_charge_id: str | None,
    ) -> PaymentOutcome:
        """A charge found at its provider that no order can claim (reconciliation of a card
        charge whose provider does not know the invoice or the buyer): recorded and refunded
        like a payment whose payload matches no order, in one transaction. ``user_id`` ``None``:
        the buyer is unknown, nobody is told but the bot's owners (in the reconciliation
        report)."""
        outcome = await self._record_unmatched(
            user_id=user_id,
            total_amount=total_amount,
            currency=currency,
            telegram_charge_id=telegram_charge_id,
            provider_charge_id=provider_charge_id,
            method=method,
        )
        await self.session.commit()
        self._committed(outcome)
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
        method: PaymentMethod | None,
    ) -> PaymentOutcome:
        repo = self.repo
        found = await repo.order_context(payload, lock=OrderLock.PAYMENT)
        # The clock is read once the locks are held: a count that held the webinar before this
        # payment judged the holds live at its own moment, which is earlier.
        now = self.clock.now()
        if (
            found is not None
            and repo.locks
            and self._refund_reason(found, user_id, total_amount, currency) is None
            and _takes_a_seat(found, now)
        ):
            # Nothing of the payment written yet: end the transaction (it keeps what the
            # update's user middleware wrote, a refreshed profile say, which a rollback would
            # lose) and start again with the webinar locked for the count.
            await self.session.commit()
            found = await repo.order_context(payload, lock=OrderLock.PAYMENT_COUNTING)
            now = self.clock.now()
        if found is None:
            return await self._record_unmatched(
                user_id=user_id,
                total_amount=total_amount,
                currency=currency,
                telegram_charge_id=telegram_charge_id,
                provider_charge_id=provider_charge_id,
                method=method,
            )
        order, webinar, org = found.order, found.webinar, found.org
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
        outcome = PaymentOutcome(
            PaymentResult.REPLAY, order=order, webinar=webinar, org=org, payment_id=payment_id
        )
        if payment_id is None:
            # Recorded before. The intake hands the same update over only when its last attempt
            # did not finish (a crash after the commit, say), and reconciliation may have
            # recorded a card charge first: the ticket this charge bought, so the buyer can hear
            # again that it is theirs.
            recorded = await self._recorded(telegram_charge_id, provider_charge_id)
            if recorded is not None:
                outcome.ticket = await repo.ticket_of_payment(recorded.id)
            return outcome

        reason = self._refund_reason(found, user_id, total_amount, currency)
        if reason is None and _takes_a_seat(found, now):
            # The hold lapsed: take a seat only if one is free (under the webinar's lock for
            # counting, by a statement that starts after it was taken).
            taken = await repo.seats_taken_by_others(order, now)
            if webinar.capacity is not None and taken >= webinar.capacity:
                reason = RefundReason.NO_SEAT
        if reason is not None:
            payment = await repo.payment(payment_id)
            assert payment is not None
            payment.is_duplicate = reason == RefundReason.DUPLICATE
            orders.close_unbought(order, now)
            await self.refunds.queue_automatic(payment, reason)
            await self.outbox.notice(
                dedupe_key=f"autorefund:{payment.id}",
                chat_id=payment.user_id,
                text=money_texts.automatic_refund_notice(reason, payment, webinar, org),
                org_id=org.id,
                webinar_id=webinar.id,
            )
            log.info(
                "payment %s of order %s (%s %s from user %s) buys nothing: refund queued (%s)",
                payment_id,
                order.id,
                total_amount,
                currency,
                user_id,
                reason,
                extra={"order_id": order.id, "payment_id": payment_id},
            )
            outcome.result, outcome.reason = PaymentResult.REFUNDING, reason
            return outcome

        await repo.mark_paid(order, now)
        ticket = await repo.insert_ticket(
            orders.new_ticket(
                webinar_id=webinar.id,
                user_id=order.user_id,
                now=now,
                order=order,
                payment_id=payment_id,
            )
        )
        outcome.ticket = ticket
        outcome.result = await self.issue_access(ticket, webinar, org, paid=True)
        log.info(
            "payment %s of order %s (%s %s from user %s) bought ticket %s",
            payment_id,
            order.id,
            total_amount,
            currency,
            user_id,
            ticket.id,
            extra={"order_id": order.id, "payment_id": payment_id, "ticket_id": ticket.id},
        )
        return outcome

    def _refund_reason(
        self, found: OrderContext, user_id: int, total_amount: int, currency: str
    ) -> RefundReason | None:
        """Why this fresh charge cannot buy anything whatever the seats, or ``None`` (then
        :func:`_takes_a_seat` says whether a free seat must be found for it).

        The buyer's ticket is the one the locking read saw. On PostgreSQL that read's snapshot
        predates the lock wait, and payments that take no seat run side by side, so a ticket
        another charge of the same buyer issued meanwhile can be missed: this charge's ticket
        then breaks the one-active-ticket index, and :meth:`complete_payment` tries again and
        finds it (a refunded duplicate)."""
        order, webinar = found.order, found.webinar
        if (user_id, total_amount, currency) != (order.user_id, order.amount_minor, order.currency):
            return RefundReason.MISMATCH
        if order.status not in orders.OPEN_ORDER_STATUSES:
            return RefundReason.DUPLICATE
        if webinar.status == WebinarStatus.CANCELLED:
            return RefundReason.CANCELLED
        if found.own_ticket_id is not None:
            return RefundReason.DUPLICATE
        return None

    async def _recorded(
        self, telegram_charge_id: str, provider_charge_id: str | None
    ) -> Payment | None:
        """The payment a charge :meth:`SalesRepository.insert_payment` refused was recorded as:
        under the same provider charge id (a card charge reconciliation found first, under a
        ``reconciled:`` id), else under the same Telegram charge id."""
        if provider_charge_id:
            recorded = await self.repo.payment_by_provider_charge(provider_charge_id)
            if recorded is not None:
                return recorded
        return await self.repo.payment_by_charge(telegram_charge_id)

    async def _record_unmatched(
        self,
        *,
        user_id: int | None,
        total_amount: int,
        currency: str,
        telegram_charge_id: str,
        provider_charge_id: str | None,
        method: PaymentMethod | None = None,
    ) -> PaymentOutcome:
        """A charge whose payload matches no order: record it, queue its refund, tell the buyer.

        Same table and constraint as every payment (a redelivered update is a replay), and the
        same refund queue (retries, alerts), with no order, webinar or ticket.
        """
        method = method or self._unmatched_method(currency, provider_charge_id)
        payment_id = await self.repo.insert_payment(
            order_id=None,
            user_id=orders.UNKNOWN_BUYER if user_id is None else user_id,
            method=method,
            telegram_charge_id=telegram_charge_id,
            provider_charge_id=provider_charge_id,
            amount_minor=total_amount,
            currency=currency,
            now=self.clock.now(),
        )
        if payment_id is None:
            return PaymentOutcome(PaymentResult.REPLAY)
        log.error(
            "payment %s (%s %s from user %s) matches no order: refunding it",
            payment_id,
            total_amount,
            currency,
            user_id,
        )
        payment = await self.repo.payment(payment_id)
        assert payment is not None
        await self.refunds.queue_automatic(payment, RefundReason.UNMATCHED)
        if user_id is None:
            return PaymentOutcome(
                PaymentResult.REFUNDING, payment_id=payment.id, reason=RefundReason.UNMATCHED
            )
        # No organization to speak for: the buyer's own language.
        lang = self.users.locale_of(await self.users.repo.get(user_id))
        await self.outbox.notice(
            dedupe_key=f"unmatched:{payment.id}",
            chat_id=user_id,
            text=money_texts.unmatched_notice(total_amount, currency, lang),
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
        if outcome.ticket is not None and outcome.result != PaymentResult.REPLAY:
            self.app.wake.outbox()
        return outcome

    async def _register_free(self, user_id: int, webinar_id: int) -> PaymentOutcome:
        now = self.clock.now()
        webinar = await self.repo.webinar(webinar_id, lock=True)
        if webinar is None:
            return PaymentOutcome(PaymentResult.UNKNOWN_ORDER)
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        outcome = PaymentOutcome(PaymentResult.REPLAY, webinar=webinar, org=org)
        refusal = self.sales.sale_refusal(webinar, org.language)
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
        ticket = await self.repo.insert_ticket(
            orders.new_ticket(
                webinar_id=webinar.id, user_id=user_id, now=now, order=None, payment_id=None
            )
        )
        outcome.ticket = ticket
        outcome.result = await self.issue_access(ticket, webinar, org)
        return outcome

    async def issue_access(
        self, ticket: Ticket, webinar: Webinar, org: Organization, *, paid: bool = False
    ) -> PaymentResult:
        """A new ticket's link (links and template modes), access message and reminders, in
        this transaction; a recording ticket gets the recording instead, and nothing else.

        ``paid``: a payment bought the ticket, and its access message confirms the payment
        (``access.PAID_ACCESS``); the handler sends no confirmation of its own."""
        result = PaymentResult.ISSUED
        if ticket.product == Product.RECORDING:
            await self.recordings.plan(ticket, webinar)
            return result
        if webinar.access_mode == AccessMode.TEMPLATE:
            await self._template_link(ticket, webinar)
        elif (
            webinar.access_mode == AccessMode.LINKS
            and await self.repo.take_link(webinar.id, ticket.id, self.clock.now()) is None
        ):
            await self.access.tell_waiting(ticket, webinar, org)
            result = PaymentResult.WAITING_LINK
        # The access message and the reminders: one statement for all their outbox rows.
        rows = self.reminders.rows_for_ticket(ticket, webinar)
        if result == PaymentResult.ISSUED:
            rows.insert(0, self.access.access_row(ticket, webinar, paid=paid))
        if rows:
            await self.outbox.repo.enqueue_many(rows, now=self.clock.now())
        if webinar.has_recording:
            # A seat sold once a recording exists (a free webinar after the event, say).
            await self.recordings.plan(ticket, webinar)
        return result

    async def _template_link(self, ticket: Ticket, webinar: Webinar) -> AccessLink:
        """The ticket's own link made from the webinar's template: the holder's display name
        (URL-encoded) and a fresh unguessable token, stored as the ticket's access link so it
        is shown in /my and the CSV and revoked with the ticket."""
        user = await self.users.repo.get(ticket.user_id)
        name = user.full_name if user is not None else str(ticket.user_id)
        token = new_link_token()
        now = self.clock.now()
        link = AccessLink(
            webinar_id=webinar.id,
            url=fill_link_template(webinar.link_template or "", name=name, token=token),
            token=token,
            ticket_id=ticket.id,
            assigned_at=now,
            created_at=now,
        )
        await self.repo.add(link)
        return link


def _takes_a_seat(found: OrderContext, now: datetime) -> bool:
    """Whether a charge needs a free seat of its own: a seat of a limited webinar whose hold
    lapsed. A live hold already counts as a taken seat (it becomes the ticket), an unlimited
    webinar has no seats to count, and a recording takes none (the checkout found it on sale
    seconds ago; if it expired meanwhile, its buyer still gets the access they were charged
    for)."""
    order, webinar = found.order, found.webinar
    return (
        order.product == Product.SEAT
        and webinar.capacity is not None
        and not orders.has_live_hold(order, now)
    )


__all__ = ["OrderStatus", "PaymentOutcome", "PaymentResult", "PurchaseService"]
