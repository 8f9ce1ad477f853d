"""The participant's own time zone end to end: set by city or location with /timezone, then
cards, access messages, /my and reminders show the organization's time plus theirs when the
two differ, right across the weeks when only one side has moved its clocks (US daylight saving
starts on March 8, 2026, the EU's on March 29). The .ics stays in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from icalendar import Calendar
from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.sandbox import SandboxServer
from bot.sandbox.users import SimUser
from storage.models import User, Webinar
from tests.factories import make_org, make_webinar
from tests.sales.conftest import OWNER_ID
from tests.sales.test_flows import buy, rows

# Rome 18:00 every time; New York 12:00 (EST), 13:00 (EDT, Rome still CET), 12:00 (both summer).
BEFORE_US_CHANGE = datetime(2026, 3, 5, 17, 0, tzinfo=UTC)
BETWEEN_CHANGES = datetime(2026, 3, 20, 17, 0, tzinfo=UTC)
AFTER_BOTH = datetime(2026, 4, 10, 16, 0, tzinfo=UTC)


async def webinars(session: AsyncSession) -> list[Webinar]:
    org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
    made = [
        await make_webinar(session, org, title=f"W{n}", starts_at=moment)
        for n, moment in enumerate((BEFORE_US_CHANGE, BETWEEN_CHANGES, AFTER_BOTH))
    ]
    await session.commit()
    return made


async def card(user: SimUser, webinar: Webinar) -> str:
    await user.command("/start", f"w_{webinar.code}")
    return (await user.next_message()).text or ""


async def test_times_in_both_zones_across_daylight_saving_changes(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session: AsyncSession,
    clock: FakeClock,
) -> None:
    clock.set(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    before, between, after = await webinars(session)
    ny = sandbox.user(2001, first_name="Nia", language_code="en")

    # Without a zone of one's own: the organization's time only.
    assert "la tua ora" not in await card(ny, between)

    await ny.command("/timezone")
    question = await ny.next_message()
    assert "city" in question.text
    await ny.send("Atlantis")
    assert "I don't know this city" in (await ny.next_message()).text
    await ny.send("new york")
    assert "America/New_York" in (await ny.next_message()).text
    [stored] = [user for user in await rows(session, User) if user.id == 2001]
    assert stored.timezone == "America/New_York"

    text = await card(ny, before)
    assert "5 mar 2026, 18:00 (UTC+01:00); la tua ora: 5 mar 2026, 12:00 (UTC-05:00)" in text
    text = await card(ny, between)
    assert "20 mar 2026, 18:00 (UTC+01:00); la tua ora: 20 mar 2026, 13:00 (UTC-04:00)" in text
    text = await card(ny, after)
    assert "10 apr 2026, 18:00 (UTC+02:00); la tua ora: 10 apr 2026, 12:00 (UTC-04:00)" in text

    # Berlin keeps Rome's clock all year: one time is enough.
    berlin = sandbox.user(2002, first_name="Ben", language_code="de")
    await berlin.command("/timezone")
    await berlin.next_message()
    await berlin.send_location(52.52, 13.405)
    assert "Europe/Berlin" in (await berlin.next_message()).text
    text = await card(berlin, between)
    assert "20 mar 2026, 18:00 (UTC+01:00)" in text
    assert "la tua ora" not in text

    # A bad name changes nothing.
    await berlin.command("/timezone", "Atlantis")
    await berlin.next_message()
    [stored] = [user for user in await rows(session, User) if user.id == 2002]
    assert stored.timezone == "Europe/Berlin"

    # Access message, calendar, /my and the reminder of the webinar between the two changes.
    await ny.command("/start", f"w_{between.code}")
    offer = await ny.next_message()
    await ny.press(offer, text=offer.button_texts[0])
    invoice = await ny.next_message()
    assert (await ny.pay(invoice)).ok
    access = await ny.next_message()  # which confirms the payment too
    both = "20 mar 2026, 18:00 (UTC+01:00); la tua ora: 20 mar 2026, 13:00 (UTC-04:00)"
    assert both in access.caption  # the calendar file, the access as its caption
    event = Calendar.from_ical(access.file_bytes).walk("VEVENT")[0]
    assert event.decoded("DTSTART") == BETWEEN_CHANGES
    assert event.decoded("DTSTART").utcoffset() == timedelta(0)
    await ny.command("/my")
    assert both in (await ny.next_message()).text

    clock.set(BETWEEN_CHANGES - timedelta(minutes=60))
    assert bot_app.outbox is not None
    await bot_app.outbox.run_until_idle()
    reminder = await ny.next_message()
    assert "W1" in reminder.text
    assert both in reminder.text


async def test_forgetting_the_zone_goes_back_to_the_organizers_time(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    _before, between, _after = await webinars(session)
    ana = sandbox.user(2003, first_name="Ana", language_code="pt-br")
    await ana.command("/timezone", "São Paulo")
    assert "America/Sao_Paulo" in (await ana.next_message()).text
    assert "la tua ora: 20 mar 2026, 14:00 (UTC-03:00)" in await card(ana, between)
    await ana.command("/timezone", "-")
    await ana.next_message()
    assert "la tua ora" not in await card(ana, between)


async def test_buying_does_not_depend_on_the_zone(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    _before, between, _after = await webinars(session)
    ny = sandbox.user(2001, first_name="Nia", language_code="en")
    await ny.command("/timezone", "New York")
    await ny.next_message()
    _card, _invoice, result = await buy(ny, between)
    assert result.ok
