"""The access message is the calendar file with the access as its caption, when the access fits
in Telegram's 1,024 characters for a caption, counted as Telegram counts them: after HTML
parsing (tags gone, entities decoded), in UTF-16 units. Otherwise it is the text, then the file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.formatting import CAPTION_LIMIT, visible_length
from bot.services import Services
from bot.services.outbox import Outgoing
from storage.enums import OutboxKind
from storage.models import OutboxMessage
from tests.factories import make_org, make_webinar
from tests.reminders.conftest import make_ticket

HINT = "Add the webinar to your calendar."
ROOM = "https://meet.example.org/room/"


async def _render(
    session: AsyncSession, app_context: AppContext, *, payload: Any = None, **webinar: Any
) -> list[Outgoing]:
    org = await make_org(session, 1000)
    made = await make_webinar(session, org, **webinar)
    services = Services(session, app_context)
    await services.access.enqueue(await make_ticket(session, made, 2000), made)
    row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.ACCESS))
    assert row is not None
    if payload is not None:
        row.payload = payload
    parts = await services.access.render(row)
    assert parts is not None
    await session.rollback()
    return parts


async def test_the_caption_is_counted_after_html_parsing(
    session: AsyncSession, app_context: AppContext
) -> None:
    """Escaped characters count once: over 1,024 characters of HTML, well under in the chat."""
    [access] = await _render(session, app_context, title="&" * 128, room_password="<" * 255)
    assert access.caption is not None
    assert len(access.caption) > CAPTION_LIMIT
    assert visible_length(access.caption) < CAPTION_LIMIT
    assert "&lt;" * 255 in access.caption
    assert access.caption.startswith("Here is your access:")
    assert access.caption.endswith(HINT)
    assert access.document is not None
    assert access.document[0].endswith(".ics")


async def test_the_calendar_hint_gives_way_to_the_access_then_the_access_goes_apart(
    session: AsyncSession, app_context: AppContext
) -> None:
    [short] = await _render(session, app_context, room_url=ROOM)
    assert short.caption is not None
    text = short.caption.removesuffix(f"\n\n{HINT}")
    # The longest access that still fits: the hint no longer does, the access alone goes.
    room = ROOM + "r" * (CAPTION_LIMIT - visible_length(text))
    [fits] = await _render(session, app_context, room_url=room)
    assert fits.caption is not None
    assert room in fits.caption
    assert HINT not in fits.caption
    assert visible_length(fits.caption) == CAPTION_LIMIT
    assert fits.document is not None

    # One character more: the text, then the calendar file with its hint, as before.
    text_part, calendar = await _render(session, app_context, room_url=room + "r")
    assert text_part.text is not None
    assert room + "r" in text_part.text
    assert visible_length(text_part.text) == CAPTION_LIMIT + 1
    assert (text_part.document, calendar.text, calendar.caption) == (None, None, HINT)
    assert calendar.document is not None


async def test_an_access_message_whose_text_already_went_keeps_its_two_parts(
    session: AsyncSession, app_context: AppContext
) -> None:
    """A retry after a crash between the parts owes the calendar file alone, however short the
    access is by then: the dispatcher resumes after the part recorded as sent."""
    text, calendar = await _render(session, app_context, payload={"parts_sent": 1})
    assert text.text is not None
    assert "s3cret" in text.text
    assert (calendar.caption, calendar.document is not None) == (HINT, True)
