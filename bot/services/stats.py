"""Sales figures of an organization: what /stats shows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bot.context import AppContext
from bot.services.base import Service
from bot.services.webinars import WebinarService, WebinarSummary
from storage.enums import PaymentStatus
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


def _add(money: Money, currency: str, amount: int) -> None:
    money[currency] = money.get(currency, 0) + amount


class StatsService(Service):
    def __init__(self, session, app: AppContext, *, webinars: WebinarService) -> None:
        super().__init__(session, app)
        self.webinars = webinars

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
