"""Refunds: asked for by an organizer (/refund), for a cancelled webinar, automatic (a charge that
bought nothing), and those Telegram reports itself (``refunded_payment``).

A refund is queued work (see :mod:`bot.services.orders` for the states). Asking for one writes it
``pending`` with a stable idempotency key and commits; no update handler ever waits on a payment
provider. The refund worker (:mod:`bot.services.refund_worker`) claims due refunds under a lease
and calls :meth:`RefundService.process` for each: the provider is called outside any transaction,
and its answer is recorded fenced by the claim, so two replicas (or a retry overlapping a slow
call) never record twice. Only a succeeded refund revokes a ticket, and only the ticket that its
own payment bought.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from bot.context import AppContext
from bot.metrics import REFUNDS
from bot.redaction import redact_error
from bot.services import money_texts, orders
from bot.services.base import Service
from bot.services.orders import RefundStatusCode
from bot.services.outbox import OutboxService
from bot.services.users import UserService
from payments.base import ErrorCode, RefundRequest, RefundResult
from payments.base import PaymentMethod as ProviderMethod
from storage.enums import (
    AccessMode,
    OutboxKind,
    PaymentMethod,
    PaymentStatus,
    RefundReason,
    RefundStatus,
    TicketStatus,
)
from storage.models import Order, Organization, Payment, Refund, Ticket, Webinar
from storage.repositories.outbox import OutboxRepository
from storage.repositories.sales import QueuedRefund, RefundClaim, SalesRepository

log = logging.getLogger(__name__)

# Answers that mean "no decision yet": ask again later, with the same idempotency key.
RETRYABLE = frozenset({ErrorCode.NETWORK_ERROR, ErrorCode.IN_PROGRESS})


@dataclass
class RefundOutcome:
    status: RefundStatusCode
    ticket: Ticket | None = None
    webinar: Webinar | None = None
    org: Organization | None = None
    payment: Payment | None = None
    refund_id: int | None = None
    error_code: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (RefundStatusCode.REFUNDED, RefundStatusCode.ALREADY_REFUNDED)


@dataclass
class TicketPreview:
    """What the organizer confirms before a refund."""

    ticket: Ticket
    webinar: Webinar
    org: Organization
    payment: Payment | None
    buyer_name: str


@dataclass
class WebinarRefunds:
    """What cancelling a webinar set in motion."""

    queued: int = 0  # paid tickets whose refund is queued
    withdrawn: int = 0  # free tickets withdrawn at once


class RefundService(Service):
    def __init__(
        self, session, app: AppContext, *, outbox: OutboxService, users: UserService
    ) -> None:
        super().__init__(session, app)
        self.outbox = outbox
        self.users = users

    @property
    def repo(self) -> SalesRepository:
        return SalesRepository(self.session)

    # -- asking for a refund -------------------------------------------------------------------

    async def preview(self, ticket_id: int, *, requested_by: int) -> RefundOutcome | TicketPreview:
        """The ticket to confirm, or why it cannot be refunded (not found, not yours, done)."""
        checked = await self._checked_ticket(ticket_id, requested_by)
        if isinstance(checked, RefundOutcome):
            await self.session.commit()
            return checked
        ticket, webinar, org = checked
        payment = await self.repo.payment(ticket.payment_id) if ticket.payment_id else None
        buyer = await self.users.repo.get(ticket.user_id)
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
        """Queue the refund of a ticket's payment (a free ticket is withdrawn at once).

        ``requested_by`` must be an organizer of the ticket's organization (``None``: the bot
        itself). Safe to repeat: a refund already queued or processing is left as it is.
        """
        checked = await self._checked_ticket(ticket_id, requested_by)
        if isinstance(checked, RefundOutcome):
            await self.session.commit()
            return checked
        ticket, webinar, org = checked
        now = self.clock.now()
        if ticket.payment_id is None:
            await self._revoke(ticket, webinar, org, reason, None, now)
            await self.session.commit()
            self.app.wake.outbox()
            await self._leave_group(ticket, webinar, org)
            return RefundOutcome(RefundStatusCode.REFUNDED, ticket, webinar, org)
        payment = await self.repo.payment(ticket.payment_id, lock=True)
        assert payment is not None
        outcome = await self._queue(payment, reason, requested_by, now)
        outcome.ticket, outcome.webinar, outcome.org = ticket, webinar, org
        await self.session.commit()
        self.app.wake.refunds()
        return outcome

    async def refund_charge(self, payment_id: int, *, requested_by: int) -> RefundOutcome:
        """Queue again the refund of a charge that bought no ticket (``/refund p<id>``), e.g. an
        automatic refund the provider refused. Organizers of the charge's organization only."""
        payment = await self.repo.payment(payment_id, lock=True)
        webinar = None
        if payment is not None and payment.order_id is not None:
            order = await self.session.get(Order, payment.order_id)
            webinar = await self.repo.webinar(order.webinar_id) if order else None
        if (
            payment is None
            or webinar is None
            or not await self.repo.is_member(webinar.org_id, requested_by)
        ):
            await self.session.rollback()
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        refund = await self.repo.refund_of(payment.id)
        reason = RefundReason(refund.reason) if refund is not None else RefundReason.ORGANIZER
        outcome = await self._queue(payment, reason, requested_by, self.clock.now())
        outcome.webinar = webinar
        await self.session.commit()
        self.app.wake.refunds()
        return outcome

    async def queue_automatic(self, payment: Payment, reason: RefundReason) -> Refund:
        """Queue the refund of a charge that bought nothing, in the caller's transaction."""
        refund = orders.queue_refund(
            payment,
            await self.repo.refund_of(payment.id),
            reason=reason,
            requested_by=None,
            now=self.clock.now(),
        )
        self.session.add(refund)
        await self.session.flush()
        REFUNDS.labels("requested").inc()
        return refund

    async def _queue(
        self, payment: Payment, reason: RefundReason, requested_by: int | None, now: datetime
    ) -> RefundOutcome:
        if payment.status == PaymentStatus.REFUNDED:
            return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
        refund = await self.repo.refund_of(payment.id)
        if refund is not None and refund.status == RefundStatus.PROCESSING:
            # The provider is finishing this refund: asking again would not make it faster.
            return RefundOutcome(RefundStatusCode.PROCESSING, payment=payment, refund_id=refund.id)
        if refund is None or refund.status != RefundStatus.PENDING:
            refund = orders.queue_refund(
                payment, refund, reason=reason, requested_by=requested_by, now=now
            )
            self.session.add(refund)
            await self.session.flush()
            REFUNDS.labels("requested").inc()
        elif requested_by is not None:
            refund.requested_by = requested_by
            refund.next_check_at = min(refund.next_check_at or now, now)
        return RefundOutcome(RefundStatusCode.QUEUED, payment=payment, refund_id=refund.id)

    async def cancel_webinar_tickets(self, webinar: Webinar, org: Organization) -> WebinarRefunds:
        """Refund every active ticket of a webinar being cancelled, in the caller's transaction.

        The caller holds the webinar's lock and has marked it cancelled, so no payment can add a
        ticket behind this snapshot: a payment that commits later sees a cancelled webinar and is
        refunded automatically.
        """
        summary = WebinarRefunds()
        now = self.clock.now()
        for ticket in await self.repo.active_tickets(webinar.id):
            if ticket.payment_id is None:
                await self._revoke(ticket, webinar, org, RefundReason.CANCELLED, None, now)
                summary.withdrawn += 1
                continue
            payment = await self.repo.payment(ticket.payment_id, lock=True)
            assert payment is not None
            outcome = await self._queue(payment, RefundReason.CANCELLED, None, now)
            summary.queued += outcome.status == RefundStatusCode.QUEUED
        return summary

    # -- the worker's side: one queued refund --------------------------------------------------

    async def run(self, refund_id: int) -> RefundOutcome:
        """Claim one queued refund now and process it (the worker does this for every due one)."""
        now = self.clock.now()
        claims = await self.repo.claim_due_refunds(
            now=now, lease_until=now + orders.REFUND_LEASE, limit=1, refund_id=refund_id
        )
        await self.session.commit()
        if not claims:
            refund = await self.repo.refund(refund_id, refresh=True)
            payment = await self.repo.payment(refund.payment_id) if refund else None
            await self.session.commit()
            if payment is not None and payment.status == PaymentStatus.REFUNDED:
                return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
            if refund is not None and refund.status == RefundStatus.PROCESSING:
                return RefundOutcome(RefundStatusCode.PROCESSING, payment=payment)
            return RefundOutcome(RefundStatusCode.LOST, payment=payment)
        return await self.process(claims[0])

    async def process(self, claim: QueuedRefund) -> RefundOutcome:
        """Call the provider for a claimed refund and record its answer."""
        payment = await self.repo.payment(claim.payment_id)
        refund = await self.repo.refund(claim.refund_id, refresh=True)
        assert payment is not None
        assert refund is not None
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
                ok=False,
                error_code=ErrorCode.PROVIDER_ERROR,
                detail=f"cannot refund: {redact_error(exc)}",
            )
            return await self.record(claim, refused)
        await self.session.commit()  # no transaction waits on the provider
        result = await self.app.refunders.refund(request)
        return await self.record(claim, result)

    async def record(self, claim: QueuedRefund, result: RefundResult) -> RefundOutcome:
        """Record the provider's answer, if this worker still holds the refund."""
        now = self.clock.now()
        payment = await self.repo.payment(claim.payment_id, lock=True)
        refund = await self.repo.refund(claim.refund_id, refresh=True)
        assert payment is not None
        assert refund is not None
        if refund.status != RefundStatus.PENDING or refund.attempts != claim.attempts:
            await self.session.commit()
            log.warning("refund %s was taken over before its answer was recorded", refund.id)
            return RefundOutcome(RefundStatusCode.LOST, payment=payment, refund_id=refund.id)
        if payment.status == PaymentStatus.REFUNDED:
            # Telegram's refunded_payment for this very refund overtook us: already applied.
            orders.refund_succeeded(payment, refund, now)
            await self.session.commit()
            return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
        refund.error_code, refund.detail = result.error_code, result.detail
        reason = RefundReason(refund.reason)
        if result.ok and result.pending and result.provider_refund_id:
            orders.refund_processing(refund, result.provider_refund_id, now)
            log.info("refund %s of payment %s is processing at the provider", refund.id, payment.id)
            outcome = await self._outcome(RefundStatusCode.PROCESSING, payment)
        elif result.ok:
            refund.provider_refund_id = result.provider_refund_id or refund.provider_refund_id
            orders.refund_succeeded(payment, refund, now)
            log.info("refund %s of payment %s succeeded", refund.id, payment.id)
            outcome = await self._apply_refunded(payment, reason, now)
        elif result.error_code in RETRYABLE:
            orders.refund_later(refund, now)
            log.warning(
                "refund %s of payment %s: no answer (attempt %s): %s",
                refund.id,
                payment.id,
                refund.attempts,
                result.detail,
            )
            outcome = await self._outcome(RefundStatusCode.RETRYING, payment)
            if refund.attempts == orders.OWED_ALERT_AFTER:
                await self._alert(
                    payment,
                    outcome.webinar,
                    f"refund-owed:{refund.id}",
                    lambda locale: money_texts.owed_refund_alert(
                        locale,
                        payment,
                        outcome.webinar,
                        refund.attempts,
                        refund.detail or str(refund.error_code),
                    ),
                )
        else:
            orders.refund_failed(payment, refund, now)
            log.warning(
                "refund %s of payment %s failed: %s %s",
                refund.id,
                payment.id,
                result.error_code,
                result.detail,
            )
            outcome = await self._outcome(RefundStatusCode.FAILED, payment)
            if reason.automatic:
                detail = result.detail or str(result.error_code)
                await self._alert(
                    payment,
                    outcome.webinar,
                    f"refund-failed:{refund.id}:{refund.attempts}",
                    lambda locale: money_texts.failed_refund_alert(
                        locale, payment, outcome.webinar, detail
                    ),
                )
        REFUNDS.labels(str(outcome.status)).inc()
        outcome.refund_id, outcome.error_code, outcome.detail = (
            refund.id,
            result.error_code,
            result.detail,
        )
        if refund.requested_by is not None and outcome.status != RefundStatusCode.RETRYING:
            await self._tell_requester(refund, outcome)
        return await self._finish(outcome)

    async def _finish(self, outcome: RefundOutcome) -> RefundOutcome:
        """Commit, wake the outbox, and clean up the group of a revoked ticket."""
        await self.session.commit()
        self.app.wake.outbox()
        if (
            outcome.status == RefundStatusCode.REFUNDED
            and outcome.ticket is not None
            and outcome.webinar is not None
            and outcome.org is not None
        ):
            await self._leave_group(outcome.ticket, outcome.webinar, outcome.org)
        return outcome

    async def _outcome(self, status: RefundStatusCode, payment: Payment) -> RefundOutcome:
        """An outcome with the payment's webinar, organization and ticket (none: unmatched)."""
        outcome = RefundOutcome(status, payment=payment)
        if payment.order_id is None:
            return outcome
        order = await self.session.get_one(Order, payment.order_id)
        outcome.webinar = await self.repo.webinar(order.webinar_id)
        outcome.ticket = await self.repo.ticket_of_payment(payment.id)
        outcome.org = await self.repo.org(outcome.webinar.org_id) if outcome.webinar else None
        return outcome

    async def _apply_refunded(
        self, payment: Payment, reason: RefundReason, now: datetime
    ) -> RefundOutcome:
        """The money is back: revoke the ticket this very payment bought, if it bought one."""
        outcome = await self._outcome(RefundStatusCode.REFUNDED, payment)
        ticket, webinar, org = outcome.ticket, outcome.webinar, outcome.org
        if ticket is None or webinar is None or org is None:
            return outcome  # a charge that bought nothing: its buyer was told when it came
        if ticket.status == TicketStatus.ACTIVE:
            orders.refund_order(await self.session.get_one(Order, payment.order_id), now)
            await self._revoke(ticket, webinar, org, reason, payment, now)
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
        orders.revoke_ticket(ticket, refunded=payment is not None, now=now)
        await self.repo.revoke_link_of(ticket.id, now)
        await OutboxRepository(self.session).drop_open(
            reason=f"ticket revoked: {reason}",
            kinds=[OutboxKind.REMINDER, OutboxKind.ACCESS, OutboxKind.RECORDING],
            ticket_id=ticket.id,
        )
        text = money_texts.revocation_notice(webinar, org, reason, payment)
        if text is not None:
            await self.outbox.notice(
                dedupe_key=f"revoked:{ticket.id}",
                chat_id=ticket.user_id,
                text=text,
                org_id=org.id,
                webinar_id=webinar.id,
                ticket_id=ticket.id,
            )

    async def _alert(self, payment: Payment, webinar: Webinar | None, key: str, render) -> None:  # type: ignore[no-untyped-def]
        """Organizers of the charge's organization and the bot's owners, each in their language:
        money owed is everybody's business until it is back."""
        recipients: list[int] = []
        if webinar is not None:
            recipients += await self.repo.member_ids(webinar.org_id)
        recipients += [
            owner for owner in sorted(self.settings.bot_owner_ids) if owner not in recipients
        ]
        await self.outbox.notice_each(
            recipients,
            dedupe_key=key,
            render=render,
            org_id=webinar.org_id if webinar else None,
            webinar_id=webinar.id if webinar else None,
        )

    async def _tell_requester(self, refund: Refund, outcome: RefundOutcome) -> None:
        assert refund.requested_by is not None
        requester = await self.users.repo.get(refund.requested_by)
        locale = self.users.locale_of(requester)
        await self.outbox.notice(
            dedupe_key=f"refund-result:{refund.id}:{refund.attempts}:{outcome.status}",
            chat_id=refund.requested_by,
            text=result_text(outcome, locale),
            org_id=outcome.org.id if outcome.org else None,
            webinar_id=outcome.webinar.id if outcome.webinar else None,
        )

    # -- refunds the provider finishes later -------------------------------------------------

    async def record_follow_up(self, claim: RefundClaim, result: RefundResult) -> bool:
        """Record the provider's answer about a processing refund; True if the refund ended."""
        now = self.clock.now()
        payment = await self.repo.payment(claim.payment_id, lock=True)
        refund = await self.repo.refund(claim.refund_id, refresh=True)
        assert payment is not None
        assert refund is not None
        if refund.status != RefundStatus.PROCESSING or refund.checks != claim.checks:
            # Another replica claimed it after our lease lapsed, or it ended meanwhile.
            await self.session.commit()
            return False
        if payment.status == PaymentStatus.REFUNDED:
            orders.refund_succeeded(payment, refund, now)  # Telegram reported it first
            await self.session.commit()
            return True
        if result.ok and not result.pending:
            refund.error_code, refund.detail = result.error_code, result.detail
            orders.refund_succeeded(payment, refund, now)
            outcome = await self._apply_refunded(payment, RefundReason(refund.reason), now)
            log.info("refund of payment %s succeeded after processing", payment.id)
            REFUNDS.labels("succeeded").inc()
            if refund.requested_by is not None:
                await self._tell_requester(refund, outcome)
            await self._finish(outcome)
            return True
        if result.error_code == ErrorCode.REFUND_CANCELED:
            refund.error_code, refund.detail = result.error_code, result.detail
            orders.refund_failed(payment, refund, now)
            log.warning("refund of payment %s was canceled: %s", payment.id, result.detail)
            REFUNDS.labels("canceled").inc()
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
        refund.next_check_at = now + orders.retry_delay(refund.checks)
        await self.session.commit()
        return False

    async def _alert_canceled_refund(self, outcome: RefundOutcome, refund: Refund) -> None:
        payment = outcome.payment
        assert payment is not None
        detail = refund.detail or str(refund.error_code)
        if outcome.org is None or outcome.webinar is None:
            await self._alert(
                payment,
                None,
                f"refund-canceled:{refund.id}:{refund.idempotency_key}",
                lambda locale: money_texts.failed_refund_alert(locale, payment, None, detail),
            )
            return
        webinar, ticket = outcome.webinar, outcome.ticket
        kept = ticket.id if ticket is not None and ticket.status == TicketStatus.ACTIVE else None
        await self.outbox.notice_each(
            await self.repo.member_ids(webinar.org_id),
            # One alert per cancellation: a retried refund may be canceled again.
            dedupe_key=f"refund-canceled:{refund.id}:{refund.idempotency_key}",
            render=lambda locale: money_texts.canceled_refund_alert(
                locale, payment, webinar, kept, detail
            ),
            org_id=webinar.org_id,
            webinar_id=webinar.id,
        )

    # -- refunds made outside the bot ----------------------------------------------------------

    async def record_telegram_refund(
        self, *, user_id: int, telegram_charge_id: str
    ) -> RefundOutcome:
        """Telegram says a payment was refunded (``refunded_payment``): record it, once."""
        payment = await self.repo.payment_by_charge(telegram_charge_id)
        if payment is not None:
            payment = await self.repo.payment(payment.id, lock=True)
        if payment is None or payment.user_id != user_id:
            log.warning("refunded_payment for unknown charge %s", telegram_charge_id)
            await self.session.rollback()
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        return await self._record_outside_refund(payment, RefundReason.TELEGRAM)

    async def record_provider_refund(
        self, payment_id: int, *, provider_refund_id: str | None = None
    ) -> RefundOutcome:
        """A provider lists this payment as refunded in full and we did not know (a refund made
        in its dashboard, or whose answer was lost): record it once, as Telegram's are."""
        payment = await self.repo.payment(payment_id, lock=True)
        if payment is None:
            await self.session.rollback()
            return RefundOutcome(RefundStatusCode.NOT_FOUND)
        return await self._record_outside_refund(
            payment, RefundReason.PROVIDER, provider_refund_id=provider_refund_id
        )

    async def _record_outside_refund(
        self, payment: Payment, reason: RefundReason, *, provider_refund_id: str | None = None
    ) -> RefundOutcome:
        """Money went back without our refund worker knowing: the payment is refunded and the
        ticket it bought revoked (the payment is locked by the caller)."""
        now = self.clock.now()
        if payment.status == PaymentStatus.REFUNDED:
            await self.session.commit()
            return RefundOutcome(RefundStatusCode.ALREADY_REFUNDED, payment=payment)
        refund = await self.repo.refund_of(payment.id)
        if (
            reason == RefundReason.PROVIDER
            and refund is not None
            and refund.status == RefundStatus.PROCESSING
        ):
            # Our own refund, still pending at the provider (a listing counts it as refunded):
            # the worker follows it and revokes the ticket only once the money is really back.
            await self.session.commit()
            return RefundOutcome(RefundStatusCode.PROCESSING, payment=payment, refund_id=refund.id)
        if refund is None:
            refund = Refund(
                payment_id=payment.id,
                reason=reason,
                idempotency_key=orders.refund_key(payment.id),
                created_at=now,
            )
            self.session.add(refund)
        refund.error_code = None
        refund.provider_refund_id = refund.provider_refund_id or provider_refund_id
        orders.refund_succeeded(payment, refund, now)
        outcome = await self._apply_refunded(payment, RefundReason(refund.reason), now)
        outcome = await self._finish(outcome)
        outcome.refund_id = refund.id  # flushed by the commit
        return outcome

    # -- group mode ----------------------------------------------------------------------------

    async def _leave_group(self, ticket: Ticket, webinar: Webinar, org: Organization) -> None:
        """Group mode: revoke the ticket's invite link and remove the user from the group (ban,
        then unban, so they may join again if they buy again). If Telegram refuses, the
        organizers are told: a refunded member must not stay in a paid group unnoticed."""
        if webinar.access_mode != AccessMode.GROUP or webinar.group_chat_id is None:
            return
        bot = self.app.bot
        if bot is None:
            return
        link = await self.repo.link_of(ticket.id)
        await self.session.commit()
        if link is not None:
            try:
                await bot.revoke_chat_invite_link(webinar.group_chat_id, link.url)
            except Exception:
                log.warning("invite link of ticket %s not revoked", ticket.id, exc_info=True)
        try:
            await bot.ban_chat_member(webinar.group_chat_id, ticket.user_id)
            await bot.unban_chat_member(webinar.group_chat_id, ticket.user_id, only_if_banned=True)
        except Exception:
            log.warning("ticket %s: member not removed from the group", ticket.id, exc_info=True)
            await self.outbox.notice_each(
                await self.repo.member_ids(org.id),
                dedupe_key=f"group-removal-failed:{ticket.id}",
                render=lambda locale: money_texts.group_removal_failed_alert(
                    locale, webinar, ticket.user_id, ticket.id
                ),
                org_id=org.id,
                webinar_id=webinar.id,
            )
            await self.session.commit()
            self.app.wake.outbox()


def result_text(outcome: RefundOutcome, locale: str | None = None) -> str:
    """What the organizer who asked for a refund is told about it."""
    return money_texts.refund_result(
        outcome.status,
        ticket_id=outcome.ticket.id if outcome.ticket is not None else None,
        payment=outcome.payment,
        org_language=outcome.org.language if outcome.org is not None else None,
        error_code=outcome.error_code,
        detail=outcome.detail,
        locale=locale,
    )


__all__ = [
    "PaymentMethod",
    "RefundOutcome",
    "RefundService",
    "RefundStatusCode",
    "TicketPreview",
    "WebinarRefunds",
    "result_text",
]
