"""/stats: the organization's sales at a glance."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.formatting import escape, money
from bot.i18n import _, _n, current_locale
from bot.services import Services
from bot.services.organizations import Membership
from bot.services.stats import Money, SalesStats
from handlers.admin.base import IsOrganizer
from handlers.admin.participants import METHODS

router = Router(name=__name__)
router.message.filter(IsOrganizer())

SHOWN = 20


def amounts(totals: Money, locale: str) -> str:
    if not totals:
        return "0"
    return " · ".join(
        money(amount, currency, locale) for currency, amount in sorted(totals.items())
    )


def render(stats: SalesStats, org_name: str, locale: str) -> str:
    lines = [
        _("📊 <b>Sales of {org}</b>", org=escape(org_name)),
        _("🎟 Tickets: {n}", n=stats.tickets),
        _("💵 Revenue: {amount}", amount=amounts(stats.revenue, locale)),
    ]
    for method, totals in sorted(stats.by_method.items()):
        lines.append(
            _n(
                "  {method}: {n} payment, {amount}",
                "  {method}: {n} payments, {amount}",
                totals.payments,
                method=METHODS.get(method, method),  # type: ignore[call-overload]
                amount=amounts(totals.revenue, locale),
            )
        )
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


@router.message(Command("stats"))
async def stats(message: Message, membership: Membership, services: Services) -> None:
    """Show the active organization's sales figures."""
    figures = await services.stats.for_org(membership.org.id)
    await message.answer(render(figures, membership.org.name, current_locale()))
