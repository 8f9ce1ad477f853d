"""/stats: the organization's sales at a glance, with a chart; each webinar's figures and what
its participants rated it."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder
from babel.numbers import format_decimal

from bot.formatting import babel_locale, escape, money
from bot.i18n import _, _n, current_locale
from bot.services import Services, charts
from bot.services.organizations import Membership
from bot.services.stats import (
    DEFAULT_PERIOD,
    PERIODS,
    MethodTotals,
    Money,
    SalesStats,
    WebinarStats,
)
from handlers.admin.base import IsOrganizer, OrgAction, WebinarAction
from handlers.admin.participants import METHODS

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

SHOWN = 20
BUTTONS = 20  # webinars with a button of their own under the figures
COMMENT_SHOWN = 200  # characters of each comment in the message (the CSV has them whole)
BAR = 10  # width of the longest bar of the rating distribution


def amounts(totals: Money, locale: str) -> str:
    if not totals:
        return "0"
    return " · ".join(
        money(amount, currency, locale) for currency, amount in sorted(totals.items())
    )


def method_lines(by_method: dict[str, MethodTotals], locale: str) -> list[str]:
    return [
        _n(
            "  {method}: {n} payment, {amount}",
            "  {method}: {n} payments, {amount}",
            totals.payments,
            method=METHODS.get(method, method),  # type: ignore[call-overload]
            amount=amounts(totals.revenue, locale),
        )
        for method, totals in sorted(by_method.items())
    ]


def render(stats: SalesStats, org_name: str, locale: str) -> str:
    lines = [
        _("📊 <b>Sales of {org}</b>", org=escape(org_name)),
        _("🎟 Tickets: {n}", n=stats.tickets),
        _("💵 Revenue: {amount}", amount=amounts(stats.revenue, locale)),
        *method_lines(stats.by_method, locale),
    ]
    if stats.refunds:
        lines.append(
            _("↩️ Refunded: {n}, {amount}", n=stats.refunds, amount=amounts(stats.refunded, locale))
        )
    if stats.owed_payments:
        lines.append(
            _(
                "⚠️ Refunds owed: {amount} (payments {payments}). /refund p&lt;id&gt; retries "
                "one the payment provider refused.",
                amount=amounts(stats.owed, locale),
                payments=", ".join(str(payment) for payment in stats.owed_payments[:SHOWN]),
            )
        )
    if stats.webinars:
        lines.append("")
        lines.append(_("<b>By webinar</b>"))
        for summary in stats.webinars[:SHOWN]:
            seats = "∞" if summary.webinar.capacity is None else str(summary.webinar.capacity)
            lines.append(
                f"• {escape(summary.webinar.title)}: {summary.sold}/{seats} · "
                f"{amounts(summary.revenue, locale)}"
            )
    else:
        lines.append(_("No webinars yet. /newwebinar creates the first one."))
    return "\n".join(lines)


def stats_keyboard(stats: SalesStats) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for summary in stats.webinars[:BUTTONS]:
        builder.button(
            text=f"📊 {summary.webinar.title}"[:60],
            callback_data=WebinarAction(action="stats", id=summary.webinar.id),
        )
    for days in PERIODS:
        builder.button(
            text=_("📈 {n} days", n=days), callback_data=OrgAction(action="chart", value=str(days))
        )
    builder.adjust(*([1] * min(len(stats.webinars), BUTTONS)), len(PERIODS))
    return builder.as_markup()


def average_text(value: float, locale: str) -> str:
    return format_decimal(round(value, 1), format="0.0", locale=babel_locale(locale))


def render_webinar(stats: WebinarStats, locale: str) -> str:
    summary = stats.summary
    webinar = summary.webinar
    seats = "∞" if webinar.capacity is None else str(webinar.capacity)
    sold = f"{summary.sold}/{seats}"
    lines = [
        f"📊 <b>{escape(webinar.title)}</b>",
        _("🎟 Tickets: {n}", n=sold),
        _("💵 Revenue: {amount}", amount=amounts(summary.revenue, locale)),
        *method_lines(stats.by_method, locale),
    ]
    if stats.refunds:
        lines.append(
            _("↩️ Refunded: {n}, {amount}", n=stats.refunds, amount=amounts(stats.refunded, locale))
        )
    lines.append("")
    feedback = stats.feedback
    if feedback.average is None:
        lines.append(_("⭐ No ratings yet."))
    else:
        lines.append(
            _n(
                "⭐ Rating: {average} of 5 ({n} rating)",
                "⭐ Rating: {average} of 5 ({n} ratings)",
                feedback.total,
                average=average_text(feedback.average, locale),
            )
        )
        most = max(feedback.counts.values())
        for stars in sorted(feedback.counts, reverse=True):
            count = feedback.counts[stars]
            bar = "▇" * round(BAR * count / most) if count else "·"
            lines.append(f"{stars} ⭐ {bar} {count}")
    if feedback.comments:
        lines.append("")
        lines.append(_("<b>Comments</b>"))
        for stars, comment in feedback.comments:
            text = comment if len(comment) <= COMMENT_SHOWN else comment[:COMMENT_SHOWN] + "…"
            lines.append(f"• {stars} ⭐ «{escape(text)}»")
    return "\n".join(lines)


async def send_chart(message: Message, series: charts.SalesSeries, title: str) -> bool:
    """The chart as a photo under ``message``; nothing when there is nothing to draw."""
    if series.empty:
        return False
    png = await charts.render(charts.chart_spec(series, locale=current_locale(), title=title))
    await message.answer_photo(BufferedInputFile(png, filename="sales.png"), caption=title)
    return True


def period_title(days: int) -> str:
    return _n("Sales, last {n} day", "Sales, last {n} days", days)


@router.message(Command("stats"))
async def stats(message: Message, membership: Membership, services: Services) -> None:
    """Show the active organization's sales figures and the chart of the last 30 days."""
    figures = await services.stats.for_org(membership.org.id)
    await message.answer(
        render(figures, membership.org.name, current_locale()),
        reply_markup=stats_keyboard(figures),
    )
    series = await services.stats.org_series(membership.org, DEFAULT_PERIOD)
    await send_chart(message, series, period_title(DEFAULT_PERIOD))


@router.callback_query(OrgAction.filter(F.action == "chart"))
async def period_chart(
    query: CallbackQuery, callback_data: OrgAction, membership: Membership, services: Services
) -> None:
    """The organization's chart over another period."""
    days = int(callback_data.value) if callback_data.value.isdigit() else 0
    if days not in PERIODS or not isinstance(query.message, Message):
        await query.answer(_("This button is no longer active."))
        return
    series = await services.stats.org_series(membership.org, days)
    if series.empty:
        await query.answer(_("No sales in this period."))
        return
    await query.answer()
    await send_chart(query.message, series, period_title(days))


@router.callback_query(WebinarAction.filter(F.action == "stats"))
async def webinar_stats(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """One webinar: sales, refunds, ratings and comments, and its sales chart."""
    figures = await services.stats.for_webinar(membership.org.id, callback_data.id)
    await query.answer()
    if not isinstance(query.message, Message):
        return
    await query.message.answer(render_webinar(figures, current_locale()))
    series = await services.stats.webinar_series(membership.org, figures.summary.webinar)
    await send_chart(query.message, series, _("Sales of this webinar"))
