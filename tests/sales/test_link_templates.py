"""Template access mode end to end: each buyer's link is the organizer's template filled with
their URL-encoded name and an unguessable token, unique, in the CSV, revoked on refund; a bad
template is refused in the organizer's language with nothing changed."""

from __future__ import annotations

import csv
import html
import io
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.context import AppContext
from bot.sandbox import SandboxServer
from bot.services import Services
from bot.services.admin_input import InvalidInput
from bot.services.link_templates import fill_link_template, parse_link_template
from storage.enums import AccessMode, TicketStatus
from storage.models import AccessLink, Ticket, Webinar
from tests.sales.conftest import OWNER_ID
from tests.sales.test_flows import buy, rows, world
from tests.sales.test_recordings import drain

TEMPLATE = "https://room.example/w/123?name={name}&t={token}"


async def test_each_buyer_gets_a_personal_encoded_link_revoked_on_refund(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session: AsyncSession,
    app_context: AppContext,
) -> None:
    webinar = await world(
        session,
        access_mode=AccessMode.TEMPLATE,
        room_url=None,
        room_password=None,
        link_template=TEMPLATE,
    )
    zoe = sandbox.user(2001, first_name="Zoë", last_name="& Co/?", language_code="en")
    bob = sandbox.user(2002, first_name="Bob", language_code="en")
    urls = {}
    for buyer in (zoe, bob):
        await buy(buyer, webinar)
        [access] = await drain(buyer, 1)  # the access, which confirms the payment
        # The sandbox keeps the HTML the bot sent; Telegram shows it unescaped.
        text = html.unescape(access.caption)
        [url] = [word for word in text.split() if word.startswith("https://room.example")]
        urls[buyer.id] = url

    links = {link.ticket_id: link for link in await rows(session, AccessLink)}
    tickets = {ticket.user_id: ticket for ticket in await rows(session, Ticket)}
    zoe_link, bob_link = links[tickets[2001].id], links[tickets[2002].id]
    assert urls[2001] == zoe_link.url
    assert urls[2002] == bob_link.url
    assert zoe_link.token != bob_link.token
    assert len(zoe_link.token or "") >= 20  # 128 random bits
    query = parse_qs(urlsplit(zoe_link.url).query)
    assert query == {"name": ["Zoë & Co/?"], "t": [zoe_link.token]}
    assert "name=Zo%C3%AB%20%26%20Co%2F%3F&" in zoe_link.url  # encoded, not injected

    # The organizer's CSV shows each ticket's token.
    async with app_context.session_factory() as other:
        services = Services(other, app_context)
        listing = await services.participants.list(webinar.org_id, webinar.id)
        table = list(csv.reader(io.StringIO(services.participants.csv(listing, "en").decode())))
    header, *body = table
    tokens = {row[0]: row[header.index("Link token")] for row in body}
    assert tokens == {str(tickets[2001].id): zoe_link.token, str(tickets[2002].id): bob_link.token}

    # A refund revokes Zoë's link, and only hers.
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await owner.command("/refund", str(tickets[2001].id))
    confirm = await owner.next_message()
    await owner.press(confirm, text="💸 Refund 100 ⭐")
    await drain(owner, 2)
    await zoe.next_message()  # told about the refund
    links = {link.ticket_id: link for link in await rows(session, AccessLink)}
    assert links[tickets[2001].id].revoked_at is not None
    assert links[tickets[2002].id].revoked_at is None
    statuses = {ticket.user_id: ticket.status for ticket in await rows(session, Ticket)}
    assert statuses == {2001: TicketStatus.REFUNDED, 2002: TicketStatus.ACTIVE}
    await zoe.command("/my")
    assert zoe_link.url not in html.unescape((await zoe.next_message()).text)
    await bob.command("/my")
    assert bob_link.url in html.unescape((await bob.next_message()).text)


async def test_a_bad_template_is_refused_in_the_organizers_language_and_changes_nothing(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    await world(session, title="Templates")
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="it")
    await owner.command("/webinars")
    listing = await owner.next_message()
    await owner.press(listing, text=listing.button_texts[0])
    card = await owner.next_message()
    await owner.press(card, text=card.button_texts[0])  # ✏️ Edit
    menu = await owner.next_message()
    await owner.press(menu, text=next(t for t in menu.button_texts if "accesso" in t.lower()))
    modes = await owner.next_message()
    await owner.press(modes, text=next(t for t in modes.button_texts if "🧩" in t))
    assert "{token}" in (await owner.next_message()).text

    for bad, says in (
        ("https://room.example/w/{nam}?t={token}", "Segnaposto sconosciuto {nam}"),
        ("https://room.example/w/{name}", "deve contenere {token}"),
        ("https://room.example/w/{token", "parentesi graffa"),
        ("room.example/w/{token}", "non è un modello di link valido"),
    ):
        await owner.send(bad)
        assert says in (await owner.next_message()).text, bad
    stored = await rows(session, Webinar)
    assert stored[0].access_mode == AccessMode.PASSWORD
    assert stored[0].link_template is None
    assert stored[0].room_url == "https://meet.example.org/room/42"

    await owner.send(TEMPLATE)
    await owner.next_message()  # saved, then the card
    stored = await rows(session, Webinar)
    assert stored[0].access_mode == AccessMode.TEMPLATE
    assert stored[0].link_template == TEMPLATE


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Ann", "Ann"), ("a b&c=d#e", "a%20b%26c%3Dd%23e"), ("Сергей", "%D0%A1%D0%B5%D1%80")],
)
def test_names_are_encoded_whole(name: str, expected: str) -> None:
    url = fill_link_template(TEMPLATE, name=name, token="T")
    assert url.startswith(f"https://room.example/w/123?name={expected}")
    assert url.endswith("&t=T")


def test_literal_braces_survive_and_unknown_fields_do_not() -> None:
    assert fill_link_template(
        parse_link_template("https://x.org/{{a}}/{token}"), name="n", token="t"
    ) == ("https://x.org/{a}/t")
    with pytest.raises(InvalidInput):
        parse_link_template("https://x.org/{token:>9}")
