"""The access message's calendar file, written without the icalendar package: read back by it,
every field is what the webinar says, whatever its text holds (separators, line breaks,
characters of several bytes, lines long enough to be folded)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from icalendar import Calendar
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.services import Services
from bot.services.access import TicketAccess
from storage.enums import AccessMode
from storage.models import AccessLink, Ticket
from tests.factories import make_org, make_user, make_webinar

TRICKY = 'Prezzi <b>&</b> co; a, b\\c "quoted" ünïcödé ^caret ' + "é" * 60


@pytest.mark.parametrize("mode", [AccessMode.PASSWORD, AccessMode.LINKS])
async def test_the_calendar_file_reads_back_as_the_webinar_says(
    session: AsyncSession, app_context: AppContext, mode: AccessMode
) -> None:
    org = await make_org(session, 1000, name='Acme, "the" Webinars; ü^ ’' + "Ø" * 40)
    webinar = await make_webinar(
        session,
        org,
        title=TRICKY,
        access_mode=mode,
        room_url="https://meet.example.org/room/42?a=1,2;3",
        room_password="p,w;d",
    )
    webinar.description = "First line\nsecond; line, with\r\nbreaks \\ " + "x" * 90
    await make_user(session, 2000)
    ticket = Ticket(webinar_id=webinar.id, user_id=2000)
    link = AccessLink(webinar_id=webinar.id, url="https://links.example/" + "t" * 120)
    item = TicketAccess(ticket, webinar, org, link if mode == AccessMode.LINKS else None)
    ticket.id = 77
    access = Services(session, app_context).access
    url = access.access_url(item)
    assert url is not None

    data = access.calendar(item)

    assert all(len(line) <= 75 for line in data.split(b"\r\n"))
    event = Calendar.from_ical(data).walk("VEVENT")[0]
    assert str(event["UID"]) == f"webinar-{webinar.id}-ticket-77@webinarpass"
    assert str(event["SUMMARY"]) == TRICKY
    assert event.decoded("DTSTART") == webinar.starts_at
    assert event.decoded("DTEND") == webinar.starts_at + timedelta(minutes=90)
    assert event.decoded("DTSTAMP") == app_context.clock.now().replace(microsecond=0)
    assert event.decoded("SEQUENCE") == 0
    assert str(event["URL"]) == url
    assert str(event["LOCATION"]) == url
    assert str(event["ORGANIZER"]) == "mailto:team@example.org"
    assert event["ORGANIZER"].params["CN"] == org.name
    description = str(event["DESCRIPTION"]).split("\n\n")
    assert description[:3] == [webinar.description.replace("\r\n", "\n"), org.name, url]
    if mode == AccessMode.PASSWORD:
        assert description[3] == "Password: p,w;d"
