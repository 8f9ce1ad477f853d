"""Sales charts: the series come from real rows, the labels in each language, the PNG is sound;
and matplotlib stays out of the bot until a chart is drawn."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.i18n import LOCALES
from bot.services import Services
from bot.services.charts import chart_spec, draw, render
from tests.conftest import OWNER_ID
from tests.factories import NOW, make_org, make_webinar
from tests.insights.conftest import png_size, sell

ROOT = Path(__file__).resolve().parents[2]
# FakeClock's NOW is 2026-11-23 09:00 UTC: 10:00 in Rome.
TODAY = date(2026, 11, 23)


async def _sales(session: AsyncSession):
    org = await make_org(session, OWNER_ID, name="Acme", timezone="Europe/Rome")
    webinar = await make_webinar(session, org, title="Pricing", price_stars=150)
    other = await make_webinar(session, org, title="Later", price_stars=100)
    # 23:30 UTC on the 20th is already the 21st in Rome: days are the organization's.
    await sell(session, webinar, 5001, amount=150, at=NOW - timedelta(days=2, hours=9, minutes=30))
    await sell(session, webinar, 5002, amount=150, at=NOW - timedelta(days=1))
    await sell(session, webinar, 5003, amount=1999, currency="USD", at=NOW - timedelta(days=1))
    await sell(session, other, 5004, amount=100, at=NOW)
    # Refunded: the day still counts a sale, the revenue does not keep it.
    await sell(session, webinar, 5005, amount=150, at=NOW, refunded=True)
    # Outside a 7-day window.
    await sell(session, other, 5006, amount=100, at=NOW - timedelta(days=10))
    await session.commit()
    return org, webinar


async def test_the_series_count_tickets_per_local_day_and_sum_kept_revenue(
    session: AsyncSession, app_context: AppContext
) -> None:
    org, webinar = await _sales(session)
    services = Services(session, app_context)

    series = await services.stats.org_series(org, 7)
    assert series.days == [TODAY - timedelta(days=6 - i) for i in range(7)]
    assert series.tickets == [0, 0, 0, 0, 1, 2, 2]
    assert series.revenue == {
        "USD": [0, 0, 0, 0, 0, 1999, 1999],
        "XTR": [0, 0, 0, 0, 150, 300, 400],
    }

    month = await services.stats.org_series(org, 30)
    assert sum(month.tickets) == 6
    assert month.revenue["XTR"][-1] == 500

    # One webinar, from the day it was created (NOW, in the factory) or its first sale.
    mine = await services.stats.webinar_series(org, webinar)
    assert mine.days[0] == date(2026, 11, 21)
    assert mine.days[-1] == TODAY
    assert mine.tickets == [1, 2, 1]
    assert mine.revenue == {"USD": [0, 1999, 1999], "XTR": [150, 300, 300]}


@pytest.mark.parametrize("locale", LOCALES)
async def test_the_chart_is_drawn_in_each_language(
    session: AsyncSession, app_context: AppContext, locale: str
) -> None:
    org, _webinar = await _sales(session)
    series = await Services(session, app_context).stats.org_series(org, 7)
    spec = chart_spec(series, locale=locale, title="Acme")

    # What is plotted: the series as given, money in major units, one panel per currency.
    assert spec.tickets == [0, 0, 0, 0, 1, 2, 2]
    assert [panel.currency for panel in spec.panels] == ["USD", "XTR"]
    assert spec.panels[0].values[-1] == pytest.approx(19.99)
    assert spec.panels[1].values == [0, 0, 0, 0, 150, 300, 400]
    # Labels in the organizer's language; dates and money by Babel.
    expected = {
        "en": ("Tickets sold per day", "Nov 23", "$20.00"),
        "ru": ("Билетов продано за день", "23 нояб.", "20,00\xa0$"),
        "it": ("Biglietti venduti al giorno", "23 nov", "20,00\xa0USD"),
        "pt_BR": ("Ingressos vendidos por dia", "23 de nov.", "US$\xa020,00"),
        "es": ("Entradas vendidas por día", "23 nov", "20,00\xa0US$"),
    }[locale]
    assert spec.tickets_label == expected[0]
    assert spec.day_labels[-1] == expected[1]
    assert spec.panels[0].ticks(20.0) == expected[2]
    assert spec.panels[1].ticks(400.0).endswith("★")

    png = await render(spec)
    width, height = png_size(png)
    assert width == 800
    assert 600 <= height <= 1200  # three panels
    assert 10_000 < len(png) < 1_000_000


def test_an_empty_period_still_draws() -> None:
    from bot.services.charts import build_series

    series = build_series(TODAY, TODAY, "UTC", [], [])
    assert series.empty
    spec = chart_spec(series, locale="en", title="Nothing")
    assert spec.panels == []
    width, height = png_size(draw(spec))
    assert (width, height) == (800, 340)


def test_the_bot_starts_without_matplotlib() -> None:
    """Start-up imports (the runtime, jobs, every router) never load matplotlib: only a chart
    being drawn does."""
    code = (
        "import sys, bot.application, bot.jobs, handlers\n"
        "handlers.get_routers()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'numpy', 'PIL'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
