"""Refunds: by an organizer (/refund), for a cancelled webinar, automatic (duplicate charge, no
seat), and those Telegram reports itself (``refunded_payment``).

A refund is written ``pending`` (with a stable idempotency key) and committed *before* the
provider is called, outside any transaction; the answer is then recorded as ``succeeded`` or
``failed``. Only a succeeded refund revokes the ticket. A failed one leaves the ticket active,
the payment ``refund_failed`` and the reason in the refund row; calling again retries with the
same key, so the provider never pays twice.

A provider may accept a refund and finish it later (YooKassa and Stripe status ``pending``): the
refund is then ``processing`` with the provider's refund id, the ticket stays active and nobody
is told anything yet. :meth:`RefundService.follow_processing` (a job) asks the provider until
the refund ends: ``succeeded`` finishes exactly like an immediate success; ``canceled`` is a
failed refund (never a done one) and the organizers are alerted. A canceled refund moved no
money, so a retry after it uses a fresh idempotency key (the old one would only replay the
cancellation).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.formatting import escape, local_datetime, money
from bot.i18n import _
from bot.services.base import Service
from bot.services.outbox import OutboxService
from bot.services.sales import AUTOMATIC_REASONS, refund_key
from payments.base import ErrorCode, Refunder, RefundRequest, RefundResult
from payments.base import PaymentMethod as ProviderMethod
from storage.enums import (
    AccessMode,
    OrderStatus,
    OutboxKind,
    PaymentMethod,
    PaymentStatus,
    RefundReason,
    RefundStatus,
    TicketStatus,
    WebinarStatus,
)
from storage.models import Order, Organization, Payment, Refund, Ticket, Webinar
from storage.repositories.outbox import OutboxRepository
from storage.repositories.sales import SalesRepository
from storage.repositories.users import UserRepository

log = logging.getLogger(__name__)

RETRY_AFTER = timedelta(minutes=2)  # a refund pending this long was interrupted by a crash
RETRY_WINDOW = timedelta(days=2)  # automatic retries stop after this; organizers are alerted
# When to ask the provider again about a processing refund: soon at first, then hourly. YooKassa
# finishes most pending refunds within minutes but may take days; Stripe's can take days too.
FOLLOW_UP_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=2),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
)
# A replica that claimed a processing refund holds it this long; if it dies, another one asks.
FOLLOW_UP_LEASE = timedelta(minutes=5)
FOLLOW_UP_BATCH = 20


def follow_up_delay(checks: int) -> timedelta:
    """The pause before the next question about a refund asked about ``checks`` times."""
    return FOLLOW_UP_DELAYS[min(max(checks, 0), len(FOLLOW_UP_DELAYS) - 1)]


class RefundStatusCode(StrEnum):
    REFUNDED = "refunded"  # money back (or on its way), ticket revoked
    PROCESSING = "processing"  # the provider accepted it and finishes later; ticket still active
    ALREADY_REFUNDED = "already_refunded"  # nothing to do: refunded before
    FAILED = "failed"  # the provider refused or was unreachable; ticket still active
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"  # the requester is not an organizer of the ticket's organization
    NOT_ACTIVE = "not_active"  # the ticket was cancelled without a payment to refund


@dataclass
class RefundOutcome:
    status: RefundStatusCode
    ticket: Ticket | None = None
    webinar: Webinar | None = None
    org: Organization | None = None
    payment: Payment | None = None
    error_code: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (RefundStatusCode.REFUNDED, RefundStatusCode.ALREADY_REFUNDED)

    @property
    def retryable(self) -> bool:
        return self.error_code == ErrorCode.NETWORK_ERROR


@dataclass
class TicketPreview:
    """What the organizer confirms before a refund."""

    ticket: Ticket
    webinar: Webinar
    org: Organization
    payment: Payment | None
    buyer_name: str


@dataclass
class WebinarRefundSummary:
    refunded: int = 0
    processing: int = 0
    failed: int = 0
    already: int = 0
    failures: list[RefundOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


class RefundService(Service):
    @property
    def repo(self) -> SalesRepository:
        return SalesRepository(self.session)

    # -- organizer refunds ---------------------------------------------------------------------

    async def preview(self, ticket_id: int, *, requested_by: int) -> RefundOutcome | TicketPreview:
        """The ticket to confirm, or why it cannot be refunded (not found, not yours, done)."""
        checked = await self._checked_ticket(ticket_id, requested_by)
        if isinstance(checked, RefundOutcome):
            await self.session.commit()
            return checked
        ticket, webinar, org = checked
        payment = await self.repo.ticket_payment(ticket.order_id) if ticket.order_id else None
        buyer = await UserRepository(self.session).get(ticket.user_id)
        await self.session.commit()
        return TicketPreview(
            ticket, webinar, org, payment, buyer.full_name if buyer else str(ticket.user_id)
        )

    async def _checked_ticket(
        self, ticket_id: int, requested_by: int | None
    ) -> RefundOutcome | tuple[Ticket, Webinar, Organization]:
        ticket = await self.repo.ticket(ticket_id)
        if ticket is None:
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        webinar = await self.repo.webinar(ticket.webinar_id)
        assert webinar is not None
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        if requested_by is not None and not await self.repo.is_member(org.id, requested_by):
            # Same answer as for a ticket that does not exist: ids of other organizations'
            # tickets are not confirmed to strangers.
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        if ticket.status != TicketStatus.ACTIVE:
            status = (
                RefundStatusCode.ALREADY_REFUNDED
                if ticket.status == TicketStatus.REFUNDED
                else RefundStatusCode.NOT_ACTIVE
            )
            return RefundOutcome(status, ticket=ticket, webinar=webinar, org=org)
        return ticket, webinar, org

    async def refund_ticket(
        self,
        ticket_id: int,
        *,
        requested_by: int | None,
        reason: RefundReason = RefundReason.ORGANIZER,
    ) -> RefundOutcome:
        """Refund a ticket's payment and revoke it. ``requested_by`` must be an organizer of the
        ticket's organization (``None``: the bot itself, e.g. a cancellation already checked)."""
        checked = await self._checked_ticket(ticket_id, requested_by)
        if isinstance(checked, RefundOutcome):
            await self.session.commit()
            return checked
        ticket, webinar, org = checked
        payment = await self.repo.ticket_payment(ticket.order_id) if ticket.order_id else None
        if payment is None:
            # A free ticket: nothing to pay back, only the seat to free.
            now = self.clock.now()
            await self._revoke(ticket, webinar, org, reason, None, now)
            await self.session.commit()
            self._kick()
            await self._leave_group(ticket, webinar)
            return RefundOutcome(RefundStatusCode.REFUNDED, ticket, webinar, org)
        await self.session.commit()
        return await self.refund_payment(payment.id, reason=reason, requested_by=requested_by)

    async def refund_webinar(
        self, webinar_id: int, *, requested_by: int | None
    ) -> WebinarRefundSummary:
        """Cancel a webinar (if not yet) and refund every active ticket, telling everyone.

        Safe to call again: only tickets still active are refunded, so a second call retries
        exactly the refunds that failed.
        """
        summary = WebinarRefundSummary()
        webinar = await self.repo.webinar(webinar_id, lock=True)
        if webinar is None or (
            requested_by is not None and not await self.repo.is_member(webinar.org_id, requested_by)
        ):
            await self.session.rollback()
            return summary
        now = self.clock.now()
        if webinar.status != WebinarStatus.CANCELLED:
            # New sales stop before the first refund: pre-checkout refuses a cancelled webinar.
            webinar.status = WebinarStatus.CANCELLED
            webinar.cancelled_at = now
            webinar.updated_at = now
        await OutboxRepository(self.session).drop_open(
            reason="webinar cancelled",
            kinds=[OutboxKind.REMINDER, OutboxKind.ACCESS],
            webinar_id=webinar.id,
        )
        tickets = await self.repo.active_tickets(webinar.id)
        await self.session.commit()
        for ticket in tickets:
            outcome = await self.refund_ticket(
                ticket.id, requested_by=None, reason=RefundReason.CANCELLED
            )
            if outcome.status == RefundStatusCode.REFUNDED:
                summary.refunded += 1
            elif outcome.status == RefundStatusCode.PROCESSING:
                summary.processing += 1
            elif outcome.ok:
                summary.already += 1
            else:
                summary.failed += 1
                summary.failures.append(outcome)
        return summary

    # -- the refund of one payment -------------------------------------------------------------

    async def refund_payment(
        self,
        payment_id: int,
        *,
        reason: RefundReason | None = None,
        requested_by: int | None = None,
    ) -> RefundOutcome:
        """Refund one payment through its provider; see the module docstring for the states."""
        now = self.clock.now()
        payment = await self.repo.payment(payment_id, lock=True)
        if payment is None:
            await self.session.rollback()
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        if payment.status == PaymentStatus.REFUNDED:
            await self.session.commit()
            return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
        refund = await self.repo.refund_of(payment.id)
        if refund is not None and refund.status == RefundStatus.PROCESSING:
            # The provider is finishing this refund: asking again would not make it faster.
            outcome = await self._outcome(RefundStatusCode.PROCESSING, payment)
            await self.session.commit()
            return outcome
        if refund is None:
            refund = Refund(
                payment_id=payment.id,
                reason=reason or RefundReason.ORGANIZER,
                idempotency_key=refund_key(payment.id),
                created_at=now,
            )
            self.session.add(refund)
        else:
            if reason is not None:
                refund.reason = reason
            if refund.error_code == ErrorCode.REFUND_CANCELED:
                # No money moved; the old key would only get the canceled refund back.
                refund.idempotency_key = f"{refund_key(payment.id)}-{secrets.token_hex(6)}"
        refund.status = RefundStatus.PENDING
        refund.next_check_at = None
        refund.checks = 0
        refund.requested_by = requested_by if requested_by is not None else refund.requested_by
        refund.error_code = None
        refund.detail = None
        payment.status = PaymentStatus.REFUND_PENDING
        try:
            request = RefundRequest(
                method=ProviderMethod(payment.method),
                user_id=payment.user_id,
                telegram_payment_charge_id=payment.telegram_payment_charge_id,
                provider_payment_charge_id=payment.provider_payment_charge_id,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                idempotency_key=refund.idempotency_key,
                reason=str(refund.reason),
            )
        except (TypeError, ValueError) as exc:
            # A charge no refunder can take (a currency we never sell in, say): a failed refund
            # that people are told about, not an exception each retry would raise again.
            await self.session.commit()
            refused = RefundResult(
                ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=f"cannot refund: {exc}"
            )
            return await self._record_result(payment.id, refused)
        await self.session.commit()  # pending is on record before any money moves

        result = await self._call_provider(PaymentMethod(payment.method), request)

        return await self._record_result(payment.id, result)

    async def _call_provider(self, method: PaymentMethod, request: RefundRequest) -> RefundResult:
        override = self.app.extras.get("refunders")
        if override is not None:
            return await override.refund(request)
        refunder, close = self._build_refunder(method)
        if refunder is None:
            return RefundResult(
                ok=False,
                error_code=ErrorCode.NOT_CONFIGURED,
                detail=f"refunds of {method.value} payments are not configured",
            )
        try:
            return await refunder.refund(request)
        except Exception as exc:  # a refunder bug must leave a failed refund, not a pending one
            log.exception("refunder for %s raised", method.value)
            return RefundResult(
                ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=f"{type(exc).__name__}"
            )
        finally:
            if close:
                await refunder.aclose()  # type: ignore[attr-defined]

    def _build_refunder(self, method: PaymentMethod) -> tuple[Refunder | None, bool]:
        settings = self.settings
        if method == PaymentMethod.STARS:
            if self.app.bot is None:
                return None, False
            from payments.stars import StarsRefunder

            return StarsRefunder(self.app.bot), False
        if method == PaymentMethod.STRIPE:
            if settings.stripe_api_key is None:
                return None, False
            from payments.stripe_refunds import StripeRefunder

            return (
                StripeRefunder(
                    settings.stripe_api_key.get_secret_value(), settings.stripe_api_base
                ),
                True,
            )
        if settings.yookassa_shop_id is None or settings.yookassa_secret_key is None:
            return None, False
        from payments.yookassa_refunds import YooKassaRefunder

        return (
            YooKassaRefunder(
                settings.yookassa_shop_id,
                settings.yookassa_secret_key.get_secret_value(),
                settings.yookassa_api_url,
            ),
            False,
        )

    async def _record_result(self, payment_id: int, result: RefundResult) -> RefundOutcome:
        now = self.clock.now()
        payment = await self.repo.payment(payment_id, lock=True)
        refund = await self.repo.refund_of(payment_id)
        assert payment is not None
        assert refund is not None
        if payment.status == PaymentStatus.REFUNDED:
            # Telegram's refunded_payment for this very refund overtook us: already applied.
            await self.session.commit()
            return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
        if result.ok and result.pending and result.provider_refund_id:
            refund.status = RefundStatus.PROCESSING
            refund.provider_refund_id = result.provider_refund_id
            refund.error_code, refund.detail = result.error_code, result.detail
            refund.completed_at = None
            refund.checks = 0
            refund.next_check_at = now + follow_up_delay(0)
            log.info("refund of payment %s is processing at the provider", payment.id)
            outcome = await self._outcome(RefundStatusCode.PROCESSING, payment)
            await self.session.commit()
            return outcome
        refund.completed_at = now
        refund.next_check_at = None
        refund.error_code = result.error_code
        refund.detail = result.detail
        if result.ok:
            refund.status = RefundStatus.SUCCEEDED
            refund.provider_refund_id = result.provider_refund_id or refund.provider_refund_id
            outcome = await self._apply_refunded(payment, RefundReason(refund.reason), now)
        else:
            refund.status = RefundStatus.FAILED
            payment.status = PaymentStatus.REFUND_FAILED
            outcome = await self._outcome(RefundStatusCode.FAILED, payment)
            outcome.error_code, outcome.detail = result.error_code, result.detail
            log.warning(
                "refund of payment %s failed: %s %s", payment.id, result.error_code, result.detail
            )
            if refund.reason in AUTOMATIC_REASONS and not result.retryable:
                await self._alert_failed_refund(payment, result.detail or str(result.error_code))
        return await self._finish(outcome)

    async def _finish(self, outcome: RefundOutcome) -> RefundOutcome:
        """Commit, wake the outbox, and clean up the group of a revoked ticket."""
        await self.session.commit()
        self._kick()
        if outcome.status == RefundStatusCode.REFUNDED and outcome.ticket and outcome.webinar:
            await self._leave_group(outcome.ticket, outcome.webinar)
        return outcome

    async def _outcome(self, status: RefundStatusCode, payment: Payment) -> RefundOutcome:
        """An outcome with the payment's webinar, organization and ticket (none: unmatched)."""
        outcome = RefundOutcome(status, payment=payment)
        if payment.order_id is None:
            return outcome
        order = await self.session.get_one(Order, payment.order_id)
        outcome.webinar = await self.repo.webinar(order.webinar_id)
        outcome.ticket = await self.repo.ticket_of_order(order.id)
        outcome.org = await self.repo.org(outcome.webinar.org_id) if outcome.webinar else None
        return outcome

    async def _apply_refunded(
        self, payment: Payment, reason: RefundReason, now: datetime
    ) -> RefundOutcome:
        """The money is back: close the payment, and revoke the ticket it bought (if any)."""
        payment.status = PaymentStatus.REFUNDED
        payment.refunded_at = now
        if payment.order_id is None:
            return RefundOutcome(RefundStatusCode.REFUNDED, payment=payment)  # no ticket, no order
        order = await self.session.get_one(Order, payment.order_id)
        webinar = await self.repo.webinar(order.webinar_id)
        assert webinar is not None
        org = await self.repo.org(webinar.org_id)
        assert org is not None
        outcome = RefundOutcome(
            RefundStatusCode.REFUNDED, webinar=webinar, org=org, payment=payment
        )
        if payment.is_duplicate:
            return outcome  # the ticket was bought by another payment and stays valid
        order.status = OrderStatus.REFUNDED
        order.hold_expires_at = None
        order.updated_at = now
        ticket = await self.repo.ticket_of_order(order.id)
        if ticket is not None and ticket.status == TicketStatus.ACTIVE:
            await self._revoke(ticket, webinar, org, reason, payment, now)
        outcome.ticket = ticket
        return outcome

    async def _revoke(
        self,
        ticket: Ticket,
        webinar: Webinar,
        org: Organization,
        reason: RefundReason,
        payment: Payment | None,
        now: datetime,
    ) -> None:
        """Revoke the ticket: seat freed, link revoked (never reissued), deliveries dropped."""
        ticket.status = TicketStatus.REFUNDED if payment is not None else TicketStatus.CANCELLED
        ticket.revoked_at = now
        await self.repo.revoke_link_of(ticket.id, now)
        await OutboxRepository(self.session).drop_open(
            reason=f"ticket revoked: {reason}",
            kinds=[OutboxKind.REMINDER, OutboxKind.ACCESS],
            ticket_id=ticket.id,
        )
        text = self._revocation_text(webinar, org, reason, payment)
        if text is not None:
            await OutboxService(self.session, self.app).notice(
                dedupe_key=f"revoked:{ticket.id}",
                chat_id=ticket.user_id,
                text=text,
                org_id=org.id,
                webinar_id=webinar.id,
                ticket_id=ticket.id,
            )

    def _revocation_text(
        self, webinar: Webinar, org: Organization, reason: RefundReason, payment: Payment | None
    ) -> str | None:
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
        if reason == RefundReason.TELEGRAM:
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

    async def _alert_failed_refund(self, payment: Payment, detail: str) -> None:
        if payment.order_id is None:
            await self._alert_owners(payment, detail)
            return
        order = await self.session.get_one(Order, payment.order_id)
        webinar = await self.repo.webinar(order.webinar_id)
        if webinar is None:
            return
        await OutboxService(self.session, self.app).notice_each(
            await self.repo.member_ids(webinar.org_id),
            dedupe_key=f"refund-failed:{payment.id}",
            render=lambda locale: _(
                "⚠️ An automatic refund failed: payment {payment} of {amount} by user "
                "{user} for «{title}». Please refund it from the payment provider's "
                "dashboard. Reason: {detail}",
                locale=locale,
                payment=payment.id,
                amount=money(payment.amount_minor, payment.currency, locale),
                user=payment.user_id,
                title=escape(webinar.title),
                detail=escape(detail),
            ),
            org_id=webinar.org_id,
            webinar_id=webinar.id,
        )

    async def _alert_owners(self, payment: Payment, detail: str) -> None:
        """A payment that matches no order has no organizers: the bot's owners hear of it."""
        await OutboxService(self.session, self.app).notice_each(
            sorted(self.settings.bot_owner_ids),
            dedupe_key=f"refund-failed:{payment.id}",
            render=lambda locale: _(
                "⚠️ An automatic refund failed: payment {payment} of {amount} by user "
                "{user} matched no order. Please refund it from the payment provider's "
                "dashboard (Telegram charge {charge}). Reason: {detail}",
                locale=locale,
                payment=payment.id,
                amount=money(payment.amount_minor, payment.currency, locale),
                user=payment.user_id,
                charge=escape(payment.telegram_payment_charge_id),
                detail=escape(detail),
            ),
        )

    async def _alert_canceled_refund(self, outcome: RefundOutcome, refund: Refund) -> None:
        """The provider canceled a refund it had accepted: tell each organizer in their own
        language, as every organizer alert (the bot's owners for a payment that matches no
        order)."""
        payment = outcome.payment
        assert payment is not None
        detail = escape(refund.detail or str(refund.error_code))
        if outcome.org is None or outcome.webinar is None:
            await self._alert_owners(payment, refund.detail or str(refund.error_code))
            return
        org, webinar, ticket = outcome.org, outcome.webinar, outcome.ticket
        title = escape(webinar.title)
        kept = ticket if ticket is not None and ticket.status == TicketStatus.ACTIVE else None

        def render(locale: str) -> str:
            amount = money(payment.amount_minor, payment.currency, locale)
            if kept is not None and not payment.is_duplicate:
                return _(
                    "⚠️ The payment provider canceled the refund of ticket #{ticket} ({amount}) "
                    "for «{title}»: no money went back and the ticket is still active. "
                    "/refund {ticket} tries again. Reason: {detail}",
                    locale=locale,
                    ticket=kept.id,
                    amount=amount,
                    title=title,
                    detail=detail,
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
                detail=detail,
            )

        await OutboxService(self.session, self.app).notice_each(
            await self.repo.member_ids(org.id),
            # One alert per cancellation: a retried refund may be canceled again.
            dedupe_key=f"refund-canceled:{refund.id}:{refund.idempotency_key}",
            render=render,
            org_id=org.id,
            webinar_id=webinar.id,
        )

    # -- refunds the provider finishes later -------------------------------------------------

    async def follow_processing(self) -> int:
        """Ask the providers about processing refunds that are due; returns how many ended.

        Rows are claimed with a lease (``next_check_at`` moved ahead, ``checks`` bumped as a
        fencing token), so replicas share the work and a crashed one only delays an answer.
        """
        now = self.clock.now()
        claims = await self.repo.claim_refunds_to_follow(
            now=now, lease_until=now + FOLLOW_UP_LEASE, limit=FOLLOW_UP_BATCH
        )
        await self.session.commit()
        ended = 0
        for claim in claims:
            result = await self._call_tracker(PaymentMethod(claim.method), claim.provider_refund_id)
            ended += await self._record_follow_up(claim.refund_id, claim.checks, result)
        return ended

    async def _call_tracker(self, method: PaymentMethod, provider_refund_id: str) -> RefundResult:
        override = self.app.extras.get("refunders")
        if override is not None:
            return await override.refund_status(method, provider_refund_id)
        refunder, close = self._build_refunder(method)
        tracker = getattr(refunder, "refund_status", None)
        try:
            if tracker is None:
                return RefundResult(
                    ok=False,
                    error_code=ErrorCode.NOT_CONFIGURED,
                    detail=f"refunds of {method.value} payments cannot be followed here",
                )
            return await tracker(provider_refund_id)
        except Exception as exc:  # a tracker bug must leave the refund processing, not lost
            log.exception("refund tracker for %s raised", method.value)
            return RefundResult(
                ok=False, error_code=ErrorCode.PROVIDER_ERROR, detail=f"{type(exc).__name__}"
            )
        finally:
            if close:
                await refunder.aclose()  # type: ignore[union-attr]

    async def _record_follow_up(self, refund_id: int, checks: int, result: RefundResult) -> bool:
        """Record the provider's answer about a claimed refund; True if the refund ended."""
        now = self.clock.now()
        claimed = await self.repo.refund(refund_id)
        assert claimed is not None
        payment = await self.repo.payment(claimed.payment_id, lock=True)  # then re-read it
        refund = await self.repo.refund(refund_id, refresh=True)
        assert payment is not None
        assert refund is not None
        if refund.status != RefundStatus.PROCESSING or refund.checks != checks:
            # Another replica claimed it after our lease lapsed, or it ended meanwhile.
            await self.session.commit()
            return False
        if payment.status == PaymentStatus.REFUNDED:
            refund.status = RefundStatus.SUCCEEDED  # Telegram reported it first
            refund.completed_at, refund.next_check_at = now, None
            await self.session.commit()
            return True
        if result.ok and not result.pending:
            refund.status = RefundStatus.SUCCEEDED
            refund.completed_at, refund.next_check_at = now, None
            refund.error_code, refund.detail = result.error_code, result.detail
            outcome = await self._apply_refunded(payment, RefundReason(refund.reason), now)
            log.info("refund of payment %s succeeded after processing", payment.id)
            await self._finish(outcome)
            return True
        if result.error_code == ErrorCode.REFUND_CANCELED:
            refund.status = RefundStatus.FAILED
            refund.completed_at, refund.next_check_at = now, None
            refund.error_code, refund.detail = result.error_code, result.detail
            payment.status = PaymentStatus.REFUND_FAILED
            log.warning("refund of payment %s was canceled: %s", payment.id, result.detail)
            outcome = await self._outcome(RefundStatusCode.FAILED, payment)
            await self._alert_canceled_refund(outcome, refund)
            await self._finish(outcome)
            return True
        if not result.ok:
            # No answer this time (network, credentials, a provider error): ask again later.
            log.warning(
                "could not check refund %s of payment %s: %s %s",
                refund.provider_refund_id,
                payment.id,
                result.error_code,
                result.detail,
            )
        refund.next_check_at = now + follow_up_delay(refund.checks)
        await self.session.commit()
        return False

    # -- refunds made outside the bot ----------------------------------------------------------

    async def record_telegram_refund(
        self, *, user_id: int, telegram_charge_id: str
    ) -> RefundOutcome:
        """Telegram says a payment was refunded (``refunded_payment``): record it, once."""
        now = self.clock.now()
        payment = await self.repo.payment_by_charge(telegram_charge_id)
        if payment is not None:
            payment = await self.repo.payment(payment.id, lock=True)
        if payment is None or payment.user_id != user_id:
            log.warning("refunded_payment for unknown charge %s", telegram_charge_id)
            await self.session.rollback()
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        if payment.status == PaymentStatus.REFUNDED:
            await self.session.commit()
            return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
        refund = await self.repo.refund_of(payment.id)
        if refund is None:
            refund = Refund(
                payment_id=payment.id,
                reason=RefundReason.TELEGRAM,
                idempotency_key=refund_key(payment.id),
                created_at=now,
            )
            self.session.add(refund)
        refund.status = RefundStatus.SUCCEEDED
        refund.completed_at = now
        refund.error_code = None
        outcome = await self._apply_refunded(payment, RefundReason(refund.reason), now)
        await self.session.commit()
        self._kick()
        if outcome.ticket is not None and outcome.webinar is not None:
            await self._leave_group(outcome.ticket, outcome.webinar)
        return outcome

    # -- maintenance ---------------------------------------------------------------------------

    async def retry_stuck(self) -> int:
        """Retry automatic refunds interrupted by a crash or a network failure."""
        now = self.clock.now()
        payment_ids = await self.repo.refunds_to_retry(
            stale_before=now - RETRY_AFTER, since=now - RETRY_WINDOW
        )
        await self.session.commit()
        done = 0
        for payment_id in payment_ids:
            outcome = await self.refund_payment(payment_id)
            done += outcome.ok
        return done

    # -- helpers -------------------------------------------------------------------------------

    def _kick(self) -> None:
        if self.app.dispatcher is not None:
            self.app.dispatcher.kick()

    async def _leave_group(self, ticket: Ticket, webinar: Webinar) -> None:
        """Group mode: revoke the ticket's invite link and remove the user from the group."""
        if webinar.access_mode != AccessMode.GROUP or webinar.group_chat_id is None:
            return
        bot = self.app.bot
        if bot is None:
            return
        link = await self.repo.link_of(ticket.id)
        await self.session.commit()
        calls: list[Any] = []
        if link is not None:
            calls.append(bot.revoke_chat_invite_link(webinar.group_chat_id, link.url))
        calls.append(bot.ban_chat_member(webinar.group_chat_id, ticket.user_id))
        calls.append(
            bot.unban_chat_member(webinar.group_chat_id, ticket.user_id, only_if_banned=True)
        )
        for call in calls:
            try:
                await call
            except Exception:
                log.warning("group clean-up for ticket %s failed", ticket.id, exc_info=True)


async def follow_refunds(app: Any) -> int:
    """The job: ask the providers about refunds they accepted but had not finished."""
    async with app.session_factory() as session:
        return await RefundService(session, app).follow_processing()
