"""Sales charts: tickets sold per day and cumulative revenue per currency, as a PNG.

Two steps, so each can be checked on its own: :func:`chart_spec` turns the figures into exactly
what will be drawn (localized labels, Babel-formatted dates and money, the plotted values), and
:func:`draw` paints a spec with matplotlib. matplotlib is imported only inside :func:`draw`,
the first time a chart is drawn: a bot that never draws one never loads it (start-up time and
memory stay as they were). Drawing takes tens of milliseconds of CPU, so callers use
:func:`render`, which runs it in a worker thread, off the event loop. The object-oriented API
(``Figure`` with the Agg canvas, no ``pyplot``) keeps no global state, so concurrent drawings in
threads do not interfere.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton
from babel.numbers import format_currency, format_decimal

from bot.formatting import STARS, babel_locale, minor_to_decimal
from bot.i18n import _

WIDTH_IN, DPI = 8.0, 100  # 800 px wide: sharp on phones, far below Telegram's photo limits
TICKS = 10  # date labels at most on the x axis


@dataclass(frozen=True)
class SalesSeries:
    """Figures per local day of the organization: what a chart plots."""

    days: list[date]
    tickets: list[int]  # issued that day
    revenue: dict[str, list[int]]  # currency -> revenue kept since the first day, at each day's end

    @property
    def empty(self) -> bool:
        return not any(self.tickets) and not any(any(v) for v in self.revenue.values())


def day_window(first: date, last: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC moments between which the local days ``first``..``last`` (inclusive) fall."""
    zone = ZoneInfo(timezone)
    since = datetime.combine(first, time(), tzinfo=zone).astimezone(UTC)
    until = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    return since, until


def build_series(
    first: date,
    last: date,
    timezone: str,
    ticket_times: Iterable[datetime],
    payments: Iterable[tuple[datetime, str, int]],
) -> SalesSeries:
    """Count tickets per local day and sum kept payments into a running total per currency."""
    zone = ZoneInfo(timezone)
    count = (last - first).days + 1
    days = [first + timedelta(days=index) for index in range(count)]
    tickets = [0] * count
    daily: dict[str, list[int]] = {}

    def index_of(moment: datetime) -> int | None:
        index = (moment.astimezone(zone).date() - first).days
        return index if 0 <= index < count else None

    for moment in ticket_times:
        index = index_of(moment)
        if index is not None:
            tickets[index] += 1
    for moment, currency, amount in payments:
        index = index_of(moment)
        if index is not None:
            daily.setdefault(currency, [0] * count)[index] += amount
    revenue = {}
    for currency, amounts in sorted(daily.items()):
        running, total = [], 0
        for amount in amounts:
            total += amount
            running.append(total)
        revenue[currency] = running
    return SalesSeries(days=days, tickets=tickets, revenue=revenue)


def chart_money(value: float, currency: str, locale: str) -> str:
    """A revenue axis label: Babel's currency format; Stars with a star the chart font has."""
    if currency == STARS:
        return f"{format_decimal(round(value), locale=babel_locale(locale))} ★"
    return format_currency(Decimal(str(value)), currency, locale=babel_locale(locale))


@dataclass(frozen=True)
class Panel:
    """One revenue plot: a currency's running total in major units."""

    currency: str
    label: str
    values: list[float]
    ticks: Callable[[float], str]  # formats an axis value in the organizer's locale


@dataclass(frozen=True)
class ChartSpec:
    """Everything :func:`draw` paints, already localized."""

    title: str
    tickets_label: str
    day_labels: list[str]
    tickets: list[int]
    panels: list[Panel]
    empty_text: str


def chart_spec(series: SalesSeries, *, locale: str, title: str) -> ChartSpec:
    """What the chart of ``series`` shows, in ``locale`` (the organizer's language)."""
    loc = babel_locale(locale)
    panels = []
    for currency, running in series.revenue.items():
        panels.append(
            Panel(
                currency=currency,
                label=_("Revenue, running total ({currency})", locale=locale, currency=currency),
                values=[float(minor_to_decimal(amount, currency)) for amount in running],
                ticks=lambda value, currency=currency: chart_money(value, currency, locale),
            )
        )
    return ChartSpec(
        title=title,
        tickets_label=_("Tickets sold per day", locale=locale),
        day_labels=[format_skeleton("MMMd", day, locale=loc) for day in series.days],
        tickets=list(series.tickets),
        panels=panels,
        empty_text=_("No sales in this period.", locale=locale),
    )


def draw(spec: ChartSpec) -> bytes:
    """Paint ``spec`` as a PNG. Blocking: call it through :func:`render`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = 1 + len(spec.panels)
    figure = Figure(figsize=(WIDTH_IN, 1.0 + 2.4 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(spec.title, fontsize=13)
    positions = list(range(len(spec.day_labels)))

    bars = axes[0]
    bars.bar(positions, spec.tickets, color="#3b82f6", width=0.8)
    bars.set_title(spec.tickets_label, fontsize=11, loc="left")
    bars.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    bars.set_ylim(bottom=0, top=max([*spec.tickets, 1]) * 1.15)
    if not any(spec.tickets):
        bars.text(0.5, 0.5, spec.empty_text, ha="center", va="center", transform=bars.transAxes)

    for axis, panel in zip(axes[1:], spec.panels, strict=True):
        axis.plot(positions, panel.values, color="#16a34a", linewidth=2, marker="o", markersize=3)
        axis.fill_between(positions, panel.values, color="#16a34a", alpha=0.12)
        axis.set_title(panel.label, fontsize=11, loc="left")
        axis.set_ylim(bottom=0, top=max([*panel.values, 1.0]) * 1.15)
        axis.yaxis.set_major_locator(MaxNLocator(nbins=5))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos, p=panel: p.ticks(value)))

    for axis in axes:
        axis.grid(axis="y", alpha=0.3)
        axis.spines[["top", "right"]].set_visible(False)
    step = max(1, math.ceil(len(positions) / TICKS))
    shown = positions[::step]
    axes[-1].set_xticks(shown, [spec.day_labels[index] for index in shown])
    axes[-1].tick_params(axis="x", labelrotation=45)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


async def render(spec: ChartSpec) -> bytes:
    """:func:`draw` in a worker thread, so the bot keeps answering while it paints."""
    return await asyncio.to_thread(draw, spec)
