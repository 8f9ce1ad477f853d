"""The daily summary: each day, organizers who asked for it hear about the day before.

A job (:func:`plan_summaries`) writes, once the organization's local clock has passed the hour
it chose (``summary_hour``, 9:00 unless changed in /org), one outbox row per organizer keyed by
organization, local day and organizer: any number of replicas, restarts or job runs that day
plan it once. What it says is computed when it is sent (the renderer), in the organizer's own
language, with the chart of the last two weeks. An organization that switched the summary off
before it left, or an organizer who left the team, gets nothing.

Waitlists do not exist in webinarpass yet, so the summary has no waitlist section.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from babel.dates import format_date

from bot.context import AppContext
from bot.formatting import babel_locale, escape, local_datetime, money
from bot.i18n import _, _n
from bot.services.base import Service
from bot.services.charts import chart_spec, day_window, render
from bot.services.outbox import Drop, OutboxService, Outgoing
from bot.services.stats import StatsService
from bot.services.users import UserService
from storage.enums import OutboxKind
from storage.models import Organization, OutboxMessage, User, Webinar
from storage.repositories.insights import InsightsRepository
from storage.repositories.sales import SalesRepository
from storage.repositories.webinars import WebinarRepository

if TYPE_CHECKING:
    from bot.services import Services

UPCOMING_DAYS = 7
CHART_DAYS = 14
UPCOMING_SHOWN = 10

Money = dict[str, int]


def summary_key(org_id: int, day: date, user_id: int) -> str:
    return f"summary:{org_id}:{day.isoformat()}:{user_id}"


@dataclass(frozen=True)
class DailySummary:
    org: Organization
    day: date  # the local day summarized (yesterday, when it is sent)
    tickets: int
    revenue: Money
    refunds: int
    refunded: Money
    upcoming: list[tuple[Webinar, int]]  # (webinar, active tickets), soonest first


def _amounts(totals: Money, locale: str) -> str:
    if not totals:
        return "0"
    return " · ".join(
        money(amount, currency, locale) for currency, amount in sorted(totals.items())
    )


class SummaryService(Service):
    def __init__(
        self,
        session,
        app: AppContext,
        *,
        outbox: OutboxService,
        stats: StatsService,
        users: UserService,
    ) -> None:
        super().__init__(session, app)
        self.outbox = outbox
        self.stats = stats
        self.users = users

    @property
    def repo(self) -> InsightsRepository:
        return InsightsRepository(self.session)

    async def plan_due(self) -> int:
        """Plan today's summary for every organizer of every organization that wants one and
        whose local morning has come; returns how many rows are new."""
        now = self.clock.now()
        planned = 0
        sales = SalesRepository(self.session)
        for org in await self.repo.orgs_with_daily_summary():
            local = now.astimezone(ZoneInfo(org.timezone))
            if local.hour < org.summary_hour:
                continue
            for user_id in await sales.member_ids(org.id):
                planned += await self.outbox.enqueue(
                    OutboxKind.SUMMARY,
                    dedupe_key=summary_key(org.id, local.date(), user_id),
                    chat_id=user_id,
                    payload={"day": (local.date() - timedelta(days=1)).isoformat()},
                    org_id=org.id,
                )
        await self.session.commit()
        return planned

    async def build(self, org: Organization, day: date) -> DailySummary:
        """What happened on the organization's local ``day``, and what comes next."""
        since, until = day_window(day, day, org.timezone)
        tickets = await self.repo.ticket_times(org_id=org.id, since=since, until=until)
        revenue: Money = {}
        for _paid_at, currency, amount in await self.repo.kept_payments(
            org_id=org.id, since=since, until=until
        ):
            revenue[currency] = revenue.get(currency, 0) + amount
        refunded: Money = {}
        refunds = await self.repo.refunds_completed(org_id=org.id, since=since, until=until)
        for currency, amount in refunds:
            refunded[currency] = refunded.get(currency, 0) + amount
        now = self.clock.now()
        upcoming = await self.repo.upcoming(
            org.id, now=now, until=now + timedelta(days=UPCOMING_DAYS)
        )
        sold = await WebinarRepository(self.session).sold(w.id for w in upcoming)
        return DailySummary(
            org=org,
            day=day,
            tickets=len(tickets),
            revenue=revenue,
            refunds=len(refunds),
            refunded=refunded,
            upcoming=[(webinar, sold.get(webinar.id, 0)) for webinar in upcoming],
        )


def summary_text(summary: DailySummary, locale: str) -> str:
    org = summary.org
    lines = [
        _(
            "📬 <b>{org}</b>: your day of {day}",
            locale=locale,
            org=escape(org.name),
            day=format_date(summary.day, format="long", locale=babel_locale(locale)),
        ),
        _n(
            "🎟 {n} ticket sold",
            "🎟 {n} tickets sold",
            summary.tickets,
            locale=locale,
        ),
        _("💵 Revenue: {amount}", locale=locale, amount=_amounts(summary.revenue, locale)),
    ]
    if summary.refunds:
        lines.append(
            _(
                "↩️ Refunded: {n}, {amount}",
                locale=locale,
                n=summary.refunds,
                amount=_amounts(summary.refunded, locale),
            )
        )
    else:
        lines.append(_("↩️ No refunds.", locale=locale))
    lines.append("")
    if summary.upcoming:
        lines.append(_("<b>Coming up in the next 7 days</b>", locale=locale))
        for webinar, sold in summary.upcoming[:UPCOMING_SHOWN]:
            seats = "∞" if webinar.capacity is None else str(webinar.capacity)
            when = local_datetime(webinar.starts_at, org.timezone, locale)
            lines.append(f"• {escape(webinar.title)}: {when} · 🎟 {sold}/{seats}")
    else:
        lines.append(_("No webinars in the next 7 days.", locale=locale))
    return "\n".join(lines)


async def render_summary(services: Services, row: OutboxMessage) -> list[Outgoing]:
    """The organizer's summary as of now, in their language, with the chart when there were
    sales in the last two weeks."""
    org = await services.session.get(Organization, row.org_id) if row.org_id else None
    if org is None:
        raise Drop("organization deleted")
    if not org.daily_summary:
        raise Drop("daily summary switched off")
    sales = SalesRepository(services.session)
    if not await sales.is_member(org.id, row.chat_id):
        raise Drop("no longer an organizer")
    user = await services.session.get(User, row.chat_id)
    summaries = services.summaries
    locale = summaries.users.locale_of(user)
    day = date.fromisoformat(row.payload["day"])
    summary = await summaries.build(org, day)
    series = await summaries.stats.org_series(org, CHART_DAYS, last=day)
    # Reads are over (org_series committed): the chart is drawn with no transaction open, so
    # the database is not held while a thread paints.
    parts = [Outgoing(text=summary_text(summary, locale))]
    if not series.empty:
        title = _n("Sales, last {n} day", "Sales, last {n} days", CHART_DAYS, locale=locale)
        png = await render(chart_spec(series, locale=locale, title=title))
        parts.append(Outgoing(photo=(f"summary-{day.isoformat()}.png", png), caption=title))
    return parts
