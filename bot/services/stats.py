"""Sales figures of an organization: what /stats shows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.context import AppContext
from bot.services.base import Service
from bot.services.charts import SalesSeries, build_series, day_window
from bot.services.webinars import WebinarService, WebinarSummary
from storage.enums import PaymentStatus
from storage.models import Organization, Webinar
from storage.repositories.insights import InsightsRepository
from storage.repositories.sales import SalesRepository
from storage.repositories.webinars import KEPT, WebinarRepository

Money = dict[str, int]  # currency -> amount in minor units


@dataclass
class MethodTotals:
    payments: int = 0
    revenue: Money = field(default_factory=dict)


@dataclass
class SalesStats:
    tickets: int  # active tickets, free ones included
    revenue: Money  # kept payments
    by_method: dict[str, MethodTotals]
    refunds: int
    refunded: Money
    webinars: list[WebinarSummary]
    # Charges being paid back, or whose refund the provider refused: money owed to buyers until
    # it is back. Payment ids, so /refund p<id> can retry a refused one.
    owed: Money = field(default_factory=dict)
    owed_payments: list[int] = field(default_factory=list)


PERIODS = (7, 30, 90)  # days an organization's chart can cover; 30 unless asked otherwise
DEFAULT_PERIOD = 30
WEBINAR_CHART_DAYS = 120  # a webinar's chart shows its last this many days of sales at most
COMMENTS_SHOWN = 10
RATINGS = range(1, 6)


@dataclass(frozen=True)
class FeedbackSummary:
    """What participants (holders of active tickets) said about a webinar."""

    counts: dict[int, int]  # stars -> how many ratings
    comments: list[tuple[int, str]]  # (stars, comment), newest first

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def average(self) -> float | None:
        if not self.total:
            return None
        return sum(stars * n for stars, n in self.counts.items()) / self.total


@dataclass
class WebinarStats:
    summary: WebinarSummary
    by_method: dict[str, MethodTotals]
    refunds: int
    refunded: Money
    feedback: FeedbackSummary


def _add(money: Money, currency: str, amount: int) -> None:
    money[currency] = money.get(currency, 0) + amount


def local_today(org: Organization, now: datetime) -> date:
    return now.astimezone(ZoneInfo(org.timezone)).date()


class StatsService(Service):
    def __init__(self, session, app: AppContext, *, webinars: WebinarService) -> None:
        super().__init__(session, app)
        self.webinars = webinars

    @property
    def insights(self) -> InsightsRepository:
        return InsightsRepository(self.session)

    async def for_org(self, org_id: int) -> SalesStats:
        """Tickets, revenue per currency and per payment method, refunds, and each webinar."""
        summaries = await self.webinars.summaries(org_id)
        totals = await WebinarRepository(self.session).payment_totals(org_id)
        owed_rows = await SalesRepository(self.session).owed_refunds(org_id)
        await self.session.commit()
        owed: Money = {}
        for payment, _refund, _ticket_id in owed_rows:
            _add(owed, payment.currency, payment.amount_minor)
        revenue: Money = {}
        refunded: Money = {}
        refunds = 0
        by_method: dict[str, MethodTotals] = defaultdict(MethodTotals)
        for _webinar_id, method, currency, status, count, amount in totals:
            if status in KEPT:
                _add(revenue, currency, amount)
                by_method[method].payments += count
                _add(by_method[method].revenue, currency, amount)
            elif status == PaymentStatus.REFUNDED:
                refunds += count
                _add(refunded, currency, amount)
        return SalesStats(
            tickets=sum(summary.sold for summary in summaries),
            revenue=revenue,
            by_method=dict(by_method),
            refunds=refunds,
            refunded=refunded,
            webinars=summaries,
            owed=owed,
            owed_payments=[payment.id for payment, _refund, _ticket in owed_rows],
        )

    async def for_webinar(self, org_id: int, webinar_id: int) -> WebinarStats:
        """One webinar's sales per method, refunds, and what its participants rated it."""
        summary = await self.webinars.summary(org_id, webinar_id)
        totals = await WebinarRepository(self.session).payment_totals(org_id)
        counts = await self.insights.rating_counts(webinar_id)
        comments = await self.insights.comments(webinar_id, COMMENTS_SHOWN)
        await self.session.commit()
        by_method: dict[str, MethodTotals] = defaultdict(MethodTotals)
        refunded: Money = {}
        refunds = 0
        for row_webinar, method, currency, status, count, amount in totals:
            if row_webinar != webinar_id:
                continue
            if status in KEPT:
                by_method[method].payments += count
                _add(by_method[method].revenue, currency, amount)
            elif status == PaymentStatus.REFUNDED:
                refunds += count
                _add(refunded, currency, amount)
        return WebinarStats(
            summary=summary,
            by_method=dict(by_method),
            refunds=refunds,
            refunded=refunded,
            feedback=FeedbackSummary(
                counts={stars: counts.get(stars, 0) for stars in RATINGS},
                comments=[(item.rating, item.comment or "") for item in comments],
            ),
        )

    async def org_series(
        self, org: Organization, days: int = DEFAULT_PERIOD, *, last: date | None = None
    ) -> SalesSeries:
        """The organization's ``days`` local days up to ``last`` (default: today) included."""
        last = last or local_today(org, self.clock.now())
        first = last - timedelta(days=days - 1)
        since, until = day_window(first, last, org.timezone)
        series = await self._series(org, first, last, since, until)
        await self.session.commit()
        return series

    async def webinar_series(self, org: Organization, webinar: Webinar) -> SalesSeries:
        """A webinar's sales from the day it was created (or its first sale) to its start, or
        to today while it is still ahead, or to its last sale if later; at most
        ``WEBINAR_CHART_DAYS`` days, the latest ones."""
        zone = ZoneInfo(org.timezone)
        today = local_today(org, self.clock.now())
        created = webinar.created_at.astimezone(zone).date()
        start = webinar.starts_at.astimezone(zone).date()
        times = await self.insights.ticket_times(org_id=org.id, webinar_id=webinar.id)
        payments = await self.insights.kept_payments(org_id=org.id, webinar_id=webinar.id)
        await self.session.commit()
        moments = [moment.astimezone(zone).date() for moment in times] + [
            paid_at.astimezone(zone).date() for paid_at, _currency, _amount in payments
        ]
        first = min([created, *moments])
        last = max([min(today, start), *moments])
        first = max(first, last - timedelta(days=WEBINAR_CHART_DAYS - 1))
        return build_series(first, last, org.timezone, times, payments)

    async def _series(
        self, org: Organization, first: date, last: date, since: datetime, until: datetime
    ) -> SalesSeries:
        times = await self.insights.ticket_times(since=since, until=until, org_id=org.id)
        payments = await self.insights.kept_payments(since=since, until=until, org_id=org.id)
        return build_series(first, last, org.timezone, times, payments)
