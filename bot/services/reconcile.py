"""Reconciliation with the payment providers: the safety net under every other money path.

What each provider recorded over a window (:mod:`payments.listing`) is compared with our
``Payment`` rows:

- a charge we never recorded (its ``successful_payment`` was lost: a crash, a database restore,
  an update Telegram gave up on) is recorded now and served by the rules of a live payment
  (:meth:`PurchaseService.complete_payment`): a ticket and its access message, or a refund. A
  card charge whose provider does not know the invoice or the buyer (no metadata) can be matched
  to no order: it is recorded without one and refunded, as a payment with an unknown payload is
  (or, with ``RECONCILE_UNKNOWN_CARD_CHARGES=report``, for provider accounts shared with other
  sales, left alone and named in the owners' report);
- a refund the provider shows in full that we did not record (made in the provider's dashboard)
  is recorded as Telegram's own refunds are: payment refunded, its own ticket revoked.

Charges younger than :data:`SETTLE_TIME` are left to Telegram's updates, which normally arrive
within seconds: reconciling them would race the live path. A run holds a lease (``job_leases``)
so replicas take turns, and the hourly run tells the owners the same findings at most once a day;
the unique Telegram charge id (``reconciled:<method>:<charge id>`` for
card charges Telegram's id is unknown for) and the provider charge id check of the live path
keep even overlapping runs from recording anything twice.

No transaction is open while a provider is listed: the lease is committed first, and each fix
commits on its own (a provider's outage or one bad charge never undoes the others).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.context import AppContext
from bot.formatting import escape
from bot.i18n import _, _n
from bot.services.base import Service
from bot.services.outbox import OutboxService
from bot.services.purchases import PaymentResult, PurchaseService
from bot.services.refunds import RefundService, RefundStatusCode
from payments.listing import (
    ListingError,
    ProviderCharge,
    list_star_charges,
    list_stripe_charges,
    list_yookassa_charges,
)
from storage.enums import PaymentMethod, PaymentStatus
from storage.repositories.leases import LeaseRepository
from storage.repositories.sales import SalesRepository

log = logging.getLogger(__name__)

RUN_EVERY = timedelta(hours=1)
DEFAULT_DAYS = 3
MAX_DAYS = 90
# Telegram delivers a payment's update within seconds; an hour leaves a bot restart or a webhook
# outage time to catch up before a charge is taken for lost.
SETTLE_TIME = timedelta(hours=1)
LEASE_NAME = "reconcile"
LEFT_ALONE_SHOWN = 10  # charge ids named in a report; the log has every one
# Longer than any run should take; a replica that dies mid-run holds the others back this long.
LEASE_TIME = timedelta(minutes=30)

PROVIDER_NAMES = {
    PaymentMethod.STARS: "Telegram Stars",
    PaymentMethod.STRIPE: "Stripe",
    PaymentMethod.YOOKASSA: "YooKassa",
}

Lister = Callable[[datetime, datetime], AsyncIterator[ProviderCharge]]


def reconciled_charge_id(method: PaymentMethod, charge_id: str) -> str:
    """The Telegram charge id a found card charge is recorded under when the provider does not
    know Telegram's: deterministic, so a second run hits the unique constraint."""
    return f"reconciled:{method.value}:{charge_id}"


@dataclass
class ProviderReport:
    method: PaymentMethod
    checked: int = 0  # charges the provider listed in the window
    missing: int = 0  # of which we had no payment for
    delivered: int = 0  # recorded now: a ticket was issued
    refunded: int = 0  # recorded now: it could buy nothing, its refund is queued
    refunds_recorded: int = 0  # refunds made at the provider, recorded now
    failed: int = 0  # charges whose fix raised (logged), tried again next run
    error: str | None = None  # the provider could not be listed (completely)
    # Card charges that match nothing of this bot, left alone (RECONCILE_UNKNOWN_CARD_CHARGES=
    # report): "<charge id> (<amount> <currency>)", for the owners to look up.
    left_alone: list[str] = field(default_factory=list)

    @property
    def notable(self) -> bool:
        return bool(
            self.missing or self.refunds_recorded or self.failed or self.error or self.left_alone
        )

    def findings(self) -> tuple[object, ...]:
        """What this run found here, without its window: equal for runs that found the same."""
        return (str(self.method), self.failed, self.error, tuple(self.left_alone))


@dataclass
class ReconcileReport:
    since: datetime
    until: datetime
    providers: list[ProviderReport] = field(default_factory=list)
    busy: bool = False  # another run holds the lease: nothing was checked

    @property
    def notable(self) -> bool:
        """Something was fixed or could not be checked: worth the owners' attention."""
        return any(provider.notable for provider in self.providers)

    def digest(self) -> str:
        """A short fingerprint of the findings, the same for two runs that found the same."""
        findings = repr([provider.findings() for provider in self.providers])
        return hashlib.sha256(findings.encode()).hexdigest()[:16]


class ReconcileService(Service):
    def __init__(
        self,
        session,
        app: AppContext,
        *,
        purchases: PurchaseService,
        refunds: RefundService,
        outbox: OutboxService,
    ) -> None:
        super().__init__(session, app)
        self.purchases = purchases
        self.refunds = refunds
        self.outbox = outbox

    async def run(
        self, *, days: int = DEFAULT_DAYS, requested_by: int | None = None
    ) -> ReconcileReport:
        """Reconcile the last ``days`` (up to :data:`SETTLE_TIME` ago) with every configured
        provider, then tell the bot's owners if anything was found (``requested_by``, who asked
        with /reconcile, gets the report as the command's answer instead)."""
        now = self.clock.now()
        report = ReconcileReport(since=now - timedelta(days=days), until=now - SETTLE_TIME)
        await self.session.commit()  # nothing of the caller's stays open while providers answer
        leases = LeaseRepository(self.session)
        holder = uuid.uuid4().hex
        taken = await leases.acquire(LEASE_NAME, holder=holder, now=now, until=now + LEASE_TIME)
        await self.session.commit()
        if not taken:
            log.info("reconciliation skipped: another run holds the lease")
            report.busy = True
            return report
        try:
            for method, lister in self._listers():
                report.providers.append(
                    await self._reconcile(method, lister, report.since, report.until)
                )
            await self._tell_owners(report, holder, requested_by)
        finally:
            await self.session.rollback()
            await leases.release(LEASE_NAME, holder=holder, now=self.clock.now())
            await self.session.commit()
        log.info(
            "reconciliation %s..%s: %s",
            report.since.isoformat(timespec="minutes"),
            report.until.isoformat(timespec="minutes"),
            "; ".join(
                f"{p.method}: checked {p.checked}, missing {p.missing}, delivered {p.delivered}, "
                f"refunded {p.refunded}, refunds recorded {p.refunds_recorded}, failed {p.failed}"
                + (f", error {p.error}" if p.error else "")
                for p in report.providers
            )
            or "no provider configured",
        )
        return report

    def _listers(self) -> list[tuple[PaymentMethod, Lister]]:
        """The providers this deployment is configured for (as for refunds)."""
        settings = self.settings
        listers: list[tuple[PaymentMethod, Lister]] = []
        bot = self.app.bot
        if bot is not None:
            listers.append(
                (PaymentMethod.STARS, lambda since, until: list_star_charges(bot, since, until))
            )
        if settings.stripe_api_key is not None:
            key, base = settings.stripe_api_key.get_secret_value(), settings.stripe_api_base
            listers.append(
                (
                    PaymentMethod.STRIPE,
                    lambda since, until: list_stripe_charges(key, since, until, api_base=base),
                )
            )
        if settings.yookassa_shop_id and settings.yookassa_secret_key is not None:
            shop, secret = settings.yookassa_shop_id, settings.yookassa_secret_key
            url = settings.yookassa_api_url
            listers.append(
                (
                    PaymentMethod.YOOKASSA,
                    lambda since, until: list_yookassa_charges(
                        shop, secret.get_secret_value(), since, until, api_url=url
                    ),
                )
            )
        return listers

    async def _reconcile(
        self, method: PaymentMethod, lister: Lister, since: datetime, until: datetime
    ) -> ProviderReport:
        report = ProviderReport(method)
        charges: list[ProviderCharge] = []
        try:
            async for charge in lister(since, until):
                charges.append(charge)
        except ListingError as exc:
            report.error = exc.detail
        except Exception as exc:
            # Anything else a listing raises (a charge in a currency we never sell in, say):
            # reported like an outage, never the end of the job.
            log.exception("reconciliation: listing %s failed", method)
            report.error = f"{type(exc).__name__}: {exc}"
        if report.error is not None:
            # The charges listed before the failure are real: they are reconciled all the same.
            log.warning("reconciliation: %s could not be listed: %s", method, report.error)
        report.checked = len(charges)
        known = await self._known(method, charges)
        await self.session.commit()
        for charge in charges:
            found = self._match(method, charge, known)
            try:
                if found is None:
                    await self._record_missing(method, charge, report)
                elif charge.refunded and found[1] != PaymentStatus.REFUNDED:
                    await self._record_refund(method, charge, found[0], report)
            except Exception:
                await self.session.rollback()
                report.failed += 1
                log.exception("reconciliation: %s charge %s not recorded", method, charge.charge_id)
        return report

    # -- matching ------------------------------------------------------------------------------

    async def _known(
        self, method: PaymentMethod, charges: list[ProviderCharge]
    ) -> dict[tuple[str, str], tuple[int, PaymentStatus]]:
        """Our payments for these charges, keyed by ``("tg", id)`` and ``("provider", id)``."""
        telegram_ids: list[str] = []
        provider_ids: list[str] = []
        for charge in charges:
            telegram_ids += [
                i
                for i in (
                    charge.telegram_payment_charge_id,
                    reconciled_charge_id(method, charge.charge_id),
                )
                if i
            ]
            if method != PaymentMethod.STARS:
                provider_ids += [
                    i for i in (charge.provider_payment_charge_id, charge.payment_intent_id) if i
                ]
        payments = await SalesRepository(self.session).payments_matching(
            telegram_charge_ids=telegram_ids, provider_charge_ids=provider_ids
        )
        known: dict[tuple[str, str], tuple[int, PaymentStatus]] = {}
        for payment in payments:
            entry = (payment.id, PaymentStatus(payment.status))
            known[("tg", payment.telegram_payment_charge_id)] = entry
            if payment.provider_payment_charge_id:
                known.setdefault(("provider", payment.provider_payment_charge_id), entry)
        return known

    @staticmethod
    def _match(
        method: PaymentMethod,
        charge: ProviderCharge,
        known: dict[tuple[str, str], tuple[int, PaymentStatus]],
    ) -> tuple[int, PaymentStatus] | None:
        """Stars by Telegram's charge id; card charges by the provider's charge id (Stripe: or
        its PaymentIntent), or by the Telegram id they were recorded under."""
        keys = [("tg", charge.telegram_payment_charge_id or "")]
        if method != PaymentMethod.STARS:
            keys = [
                ("provider", charge.provider_payment_charge_id or ""),
                ("provider", charge.payment_intent_id or ""),
                *keys,
                ("tg", reconciled_charge_id(method, charge.charge_id)),
            ]
        for key in keys:
            if key[1] and key in known:
                return known[key]
        return None

    # -- fixes ---------------------------------------------------------------------------------

    async def _record_missing(
        self, method: PaymentMethod, charge: ProviderCharge, report: ProviderReport
    ) -> None:
        if charge.refunded:
            # Taken and given back without us: nothing is owed to anyone, nothing to serve.
            report.missing += 1
            log.info(
                "reconciliation: %s charge %s (%s %s) was never recorded and is refunded at the "
                "provider already: nothing to do",
                method,
                charge.charge_id,
                charge.amount_minor,
                charge.currency,
            )
            return
        matchable = bool(charge.payload) and charge.user_id is not None
        if not matchable and self.settings.reconcile_unknown_card_charges == "report":
            # A shared provider account: this may be another shop's sale, not a lost payment.
            report.left_alone.append(
                f"{charge.charge_id} ({charge.amount_minor} {charge.currency})"
            )
            log.warning(
                "reconciliation: %s charge %s (%s %s) matches nothing of this bot: left alone "
                "(RECONCILE_UNKNOWN_CARD_CHARGES=report)",
                method,
                charge.charge_id,
                charge.amount_minor,
                charge.currency,
            )
            return
        telegram_id = charge.telegram_payment_charge_id or reconciled_charge_id(
            method, charge.charge_id
        )
        if matchable:
            outcome = await self.purchases.complete_payment(
                user_id=charge.user_id,
                payload=charge.payload,
                total_amount=charge.amount_minor,
                currency=charge.currency,
                telegram_charge_id=telegram_id,
                provider_charge_id=charge.provider_payment_charge_id,
                method=method,
            )
        else:
            outcome = await self.purchases.record_unmatched_charge(
                method=method,
                user_id=charge.user_id,
                total_amount=charge.amount_minor,
                currency=charge.currency,
                telegram_charge_id=telegram_id,
                provider_charge_id=charge.provider_payment_charge_id,
            )
        if outcome.result == PaymentResult.REPLAY:
            return  # recorded meanwhile (its update came late, or another run): not missing
        report.missing += 1
        if outcome.result in (PaymentResult.ISSUED, PaymentResult.WAITING_LINK):
            report.delivered += 1
            log.warning(
                "reconciliation: recorded missing %s charge %s (%s %s, user %s) as payment %s: "
                "ticket %s issued",
                method,
                charge.charge_id,
                charge.amount_minor,
                charge.currency,
                charge.user_id,
                outcome.ticket.payment_id if outcome.ticket else None,
                outcome.ticket.id if outcome.ticket else None,
            )
        else:
            report.refunded += 1
            log.warning(
                "reconciliation: recorded missing %s charge %s (%s %s, user %s) as payment %s: "
                "refunding it (%s)",
                method,
                charge.charge_id,
                charge.amount_minor,
                charge.currency,
                charge.user_id if charge.user_id is not None else "unknown",
                outcome.payment_id,
                outcome.reason,
            )

    async def _record_refund(
        self, method: PaymentMethod, charge: ProviderCharge, payment_id: int, report: ProviderReport
    ) -> None:
        outcome = await self.refunds.record_provider_refund(
            payment_id, provider_refund_id=charge.refund_ids[-1] if charge.refund_ids else None
        )
        if outcome.status != RefundStatusCode.REFUNDED:
            return  # refunded meanwhile, or our own refund the provider is still processing
        report.refunds_recorded += 1
        log.warning(
            "reconciliation: %s charge %s was refunded at the provider: payment %s recorded "
            "refunded%s",
            method,
            charge.charge_id,
            payment_id,
            f", ticket {outcome.ticket.id} revoked" if outcome.ticket is not None else "",
        )

    async def _tell_owners(
        self, report: ReconcileReport, run_id: str, requested_by: int | None
    ) -> None:
        if not report.notable:
            return
        owners = [owner for owner in sorted(self.settings.bot_owner_ids) if owner != requested_by]
        fixed = any(p.missing or p.refunds_recorded for p in report.providers)
        if requested_by is None and not fixed:
            # The hourly run, with nothing fixed: the same findings (an outage, failing fixes,
            # charges left alone) once a day, not every hour. A fix is never found twice, so a
            # report with one is always told.
            day = self.clock.now().date().isoformat()
            dedupe_key = f"reconcile:{day}:{report.digest()}"
        else:
            dedupe_key = f"reconcile:{run_id}"
        await self.outbox.notice_each(
            owners,
            dedupe_key=dedupe_key,
            render=lambda locale: report_text(report, locale),
        )
        await self.session.commit()
        self.app.wake.outbox()


def report_text(report: ReconcileReport, locale: str | None = None) -> str:
    """The owners' report of one run, in ``locale``."""
    if report.busy:
        return _(
            "A reconciliation is already running (on this or another replica). Try again in a "
            "few minutes.",
            locale=locale,
        )
    lines = [
        _(
            "🧾 <b>Reconciliation with the payment providers</b>\n{since} to {until} (UTC)",
            locale=locale,
            since=report.since.strftime("%Y-%m-%d %H:%M"),
            until=report.until.strftime("%Y-%m-%d %H:%M"),
        )
    ]
    if not report.providers:
        lines.append(_("No payment provider is configured: nothing to check.", locale=locale))
    for provider in report.providers:
        name = PROVIDER_NAMES[provider.method]
        lines.append(
            _(
                "<b>{provider}</b>: checked {checked}, missing {missing} (recorded: delivered "
                "{delivered}, refunded {refunded}), refunds recorded {refunds}.",
                locale=locale,
                provider=name,
                checked=provider.checked,
                missing=provider.missing,
                delivered=provider.delivered,
                refunded=provider.refunded,
                refunds=provider.refunds_recorded,
            )
        )
        if provider.failed:
            lines.append(
                _(
                    "⚠️ {provider}: charges not recorded: {failed} (see the log); the next run "
                    "tries again.",
                    locale=locale,
                    provider=name,
                    failed=provider.failed,
                )
            )
        if provider.left_alone:
            shown = provider.left_alone[:LEFT_ALONE_SHOWN]
            lines.append(
                _n(
                    "⚠️ {provider}: {n} charge matches no order of this bot and was left alone "
                    "(RECONCILE_UNKNOWN_CARD_CHARGES=report). If it is a lost payment, refund it "
                    "in the provider's dashboard: {charges}",
                    "⚠️ {provider}: {n} charges match no order of this bot and were left alone "
                    "(RECONCILE_UNKNOWN_CARD_CHARGES=report). If they are lost payments, refund "
                    "them in the provider's dashboard: {charges}",
                    len(provider.left_alone),
                    locale=locale,
                    provider=name,
                    charges=escape(
                        ", ".join(shown) + (" …" if len(provider.left_alone) > len(shown) else "")
                    ),
                )
            )
        if provider.error is not None:
            lines.append(
                _(
                    "⚠️ {provider} could not be checked completely: {error}",
                    locale=locale,
                    provider=name,
                    error=escape(provider.error[:300]),
                )
            )
    if any(provider.refunded for provider in report.providers):
        lines.append(
            _(
                "Refunded: charges that could buy no seat or match no order, including card "
                "charges whose provider does not know the invoice or the buyer. You are alerted "
                "if such a refund fails.",
                locale=locale,
            )
        )
    if not report.notable and report.providers:
        lines.append(_("Everything matches: no charge or refund is missing here.", locale=locale))
    return "\n\n".join(lines)


__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "ProviderReport",
    "ReconcileReport",
    "ReconcileService",
    "reconciled_charge_id",
    "report_text",
]
