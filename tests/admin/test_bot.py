"""Organizer commands end to end: the real Dispatcher against the sandbox Bot API server.

Every command as owner, as co-organizer, as stranger, and across two organizations.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.sandbox import SandboxServer
from bot.sandbox.users import CallbackAnswer, SimUser
from storage.enums import AccessMode, OutboxKind, Role, WebinarStatus
from storage.models import AccessLink, Organization, OrgMember, OutboxMessage, Webinar
from tests.admin.test_services import sell
from tests.conftest import OWNER_ID
from tests.factories import NOW, make_org, make_user, make_webinar

Sessions = async_sessionmaker[AsyncSession]
OTHER_OWNER = 5000


async def say(user: SimUser, text: str) -> str:
    await user.send(text)
    return (await user.next_message()).text or ""


async def forge(user: SimUser, data: str) -> CallbackAnswer:
    """A callback with data no button of ours carries for this user (forged or from elsewhere)."""
    answer = await user.forge_callback(data)
    assert answer is not None, f"no answer to {data!r}"
    return answer


async def seed(sessions: Sessions, build: Any) -> Any:
    async with sessions() as session:
        result = await build(session)
        await session.commit()
        return result


async def two_orgs(session: AsyncSession) -> tuple[Webinar, Webinar]:
    ours = await make_org(session, OWNER_ID, name="Acme")
    theirs = await make_org(session, OTHER_OWNER, name="Rival")
    mine = await make_webinar(session, ours, title="Acme pricing", capacity=10)
    other = await make_webinar(session, theirs, title="Rival secrets")
    await sell(_services(session), mine, 2001)
    return mine, other


def _services(session: AsyncSession) -> Any:
    class Holder:  # ``sell`` only needs ``.session``
        pass

    holder = Holder()
    holder.session = session  # type: ignore[attr-defined]
    return holder


async def test_owner_creates_an_organization_in_her_language(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="ru")
    await olga.command("/neworg")
    assert "Создадим вашу организацию" in (await olga.next_message()).text
    assert "Шаг 1 из 5" in (await olga.next_message()).text
    assert "Шаг 2 из 5" in await say(olga, "Acme Webinars")
    assert "e-mail" in await say(olga, "not-an-email")
    await olga.send("team@acme.org")
    language = await olga.next_message()
    assert "Italiano" in language.button_texts
    assert "кнопкой" in await say(olga, "Italian")
    await olga.next_message()  # the question again
    await olga.press(language, text="Italiano")
    currency = await olga.next_message()
    await olga.press(currency, text="EUR")
    await olga.next_message()
    assert "IANA" in await say(olga, "Mars/Olympus")
    assert "Acme Webinars" in await say(olga, "europe/rome")

    async with session_factory() as session:
        org = (await session.scalars(select(Organization))).one()
        assert (org.language, org.currency, org.timezone) == ("it", "EUR", "Europe/Rome")
    call = sandbox.calls_of("setMyCommands")[-1]
    assert call.params["scope"] == {"type": "chat", "chat_id": OWNER_ID}
    commands = call.params["commands"]
    assert {"command": "newwebinar", "description": "Создать вебинар"} in commands
    assert {"command": "my", "description": "Мои вебинары"} in commands  # participant menu kept


async def test_strangers_get_a_polite_refusal_everywhere(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    mine, _other = await seed(session_factory, two_orgs)
    ivan = sandbox.user(2000, first_name="Ivan", language_code="es")
    for command in ("/org", "/team", "/newwebinar", "/webinars", "/participants"):
        assert "organizadores" in await say(ivan, command), command
    assert "no se pueden crear" in await say(ivan, "/neworg")
    for data in (f"aw:open:{mine.id}:", f"aw:cancel_yes:{mine.id}:", "at:invite:0", "ao:pay:stars"):
        answer = await forge(ivan, data)
        assert answer.text == "Este botón ya no está activo.", data
    async with session_factory() as session:
        webinar = await session.get(Webinar, mine.id)
        assert webinar is not None
        assert webinar.status == WebinarStatus.PUBLISHED


async def test_organizations_are_isolated(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    mine, other = await seed(session_factory, two_orgs)
    rival = sandbox.user(OTHER_OWNER, first_name="Rita", language_code="en")
    listing = await say(rival, "/webinars")
    assert "Rival secrets" in listing
    assert "Acme pricing" not in listing
    for action in ("open", "publish", "unpublish", "cancel", "cancel_yes", "edit", "people", "csv"):
        answer = await forge(rival, f"aw:{action}:{mine.id}:")
        assert answer.text == "This is no longer available.", action
    await rival.command("/participants")
    picker = await rival.next_message()
    assert picker.button_texts == ["Rival secrets · 👥 0"]
    async with session_factory() as session:
        webinar = await session.get(Webinar, mine.id)
        assert webinar is not None
        assert webinar.status == WebinarStatus.PUBLISHED
    assert other.id != mine.id


async def test_webinar_wizard_checks_every_step(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    await seed(session_factory, lambda s: make_org(s, OWNER_ID, currency="EUR"))
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/newwebinar")
    await olga.next_message()
    assert "Step 1 of 9" in (await olga.next_message()).text
    assert "too long" in await say(olga, "x" * 129)
    await olga.send("Pricing for founders")
    description = await olga.next_message()
    await olga.press(description, text="No description")
    assert "Europe/Rome" in (await olga.next_message()).text
    assert "already passed" in await say(olga, "01.01.2026 10:00")
    assert "can't read this date" in await say(olga, "next friday")
    assert "Step 4 of 9" in await say(olga, "05.12.2026 18:30")
    assert "duration" in await say(olga, "long")
    assert "Step 5 of 9" in await say(olga, "1:30")
    assert "greater than zero" in await say(olga, "-5")
    assert "Too many decimals" in await say(olga, "19.999")
    assert "Step 6 of 9" in await say(olga, "19,99")
    assert "whole number" in await say(olga, "2.5")
    assert "Step 7 of 9" in await say(olga, "150")
    assert "greater than zero" in await say(olga, "0")
    await olga.send("50")
    mode = await olga.next_message()
    await olga.press(mode, text="🔑 Room link and password")
    assert "https://" in (await olga.next_message()).text
    assert "https://" in await say(olga, "meet.example")
    await olga.send("https://meet.example.org/room/1")
    await olga.next_message()
    await olga.send("s3cret")
    reminders = await olga.next_message()
    assert "before the start" in await say(olga, "soon")
    await olga.press(reminders, text="Usual: 24h, 1h, 10m")
    assert "draft" in (await olga.next_message()).text
    card = await olga.next_message()
    assert "Pricing for founders" in card.text
    assert "€19.99 · 150 ⭐" in card.text

    await olga.press(card, text="🚀 Publish")
    shared = await olga.next_message()  # the card, edited
    share = await olga.next_message()
    assert "https://t.me/webinarpass_bot?start=w_" in share.text
    async with session_factory() as session:
        webinar = (await session.scalars(select(Webinar))).one()
    assert webinar.status == WebinarStatus.PUBLISHED
    assert (webinar.price_minor, webinar.price_stars, webinar.capacity) == (1999, 150, 50)
    assert (webinar.duration_minutes, webinar.reminder_offsets) == (90, [1440, 60, 10])
    assert webinar.starts_at.isoformat() == "2026-12-05T17:30:00+00:00"
    assert f"w_{webinar.code}" in share.text
    assert shared.message_id == card.message_id


async def test_a_second_wizard_in_the_middle_and_cancel(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    await seed(session_factory, lambda s: make_org(s, OWNER_ID))
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/newwebinar")
    await olga.next_message()
    await olga.next_message()
    await olga.send("Title")
    await olga.next_message()
    assert "You are creating a webinar" in await say(olga, "/neworg")
    assert "Step 2 of 9" in (await olga.next_message()).text
    assert "Cancelled" in await say(olga, "/cancel")
    async with session_factory() as session:
        assert (await session.scalars(select(Webinar))).first() is None


async def test_team_invite_is_single_use_and_the_owner_stays(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    await seed(session_factory, lambda s: make_org(s, OWNER_ID))
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    bob = sandbox.user(2000, first_name="Bob", language_code="pt-br")
    carol = sandbox.user(3000, first_name="Carol", language_code="en")
    await olga.command("/team")
    team = await olga.next_message()
    await olga.press(team, text="➕ Invite a co-organizer")
    link = (await olga.next_message()).text.split()[-1]
    code = link.split("start=")[1]
    assert link.startswith("https://t.me/webinarpass_bot?start=inv_")
    assert len(code) <= 64

    await bob.start(code)
    assert "Boas-vindas à equipe" in (await bob.next_message()).text
    assert "Bob entrou na equipe" not in (await olga.next_message()).text  # Olga reads English
    bob_menu = [
        c
        for c in sandbox.calls_of("setMyCommands")
        if c.params["scope"] == {"type": "chat", "chat_id": 2000}
    ]
    assert bob_menu
    assert {"command": "newwebinar", "description": "Criar um webinar"} in bob_menu[-1].params[
        "commands"
    ]
    await carol.start(code)
    assert "already been used" in (await carol.next_message()).text

    # A co-organizer manages webinars but cannot remove the owner, even with a forged button.
    assert "Ainda não há webinars" in await say(bob, "/webinars")
    answer = await forge(bob, f"at:remove_yes:{OWNER_ID}")
    assert answer.text == "Só o proprietário pode remover membros da equipe."

    await olga.command("/team")
    team = await olga.next_message()
    assert "Remove Olga" not in team.button_texts
    await olga.press(team, text="Remove Bob")
    confirm = await olga.next_message()
    await olga.press(confirm, text="Yes")
    assert "Bob" not in (await olga.next_message()).text
    assert "organizadores" in await say(bob, "/webinars")
    assert sandbox.calls_of("deleteMyCommands")
    async with session_factory() as session:
        members = (await session.scalars(select(OrgMember))).all()
        assert [(m.user_id, m.role) for m in members] == [(OWNER_ID, Role.OWNER)]


async def test_switching_between_organizations(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> None:
        first = await make_org(session, OWNER_ID, name="First")
        await make_org(session, OWNER_ID, name="Second")
        await make_webinar(session, first, title="Only in First")
        owner = await make_user(session, OWNER_ID)
        owner.active_org_id = first.id

    await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    assert "Only in First" in await say(olga, "/webinars")
    await olga.command("/org")
    card = await olga.next_message()
    await olga.press(card, text="🔀 Switch organization")
    picker = await olga.next_message()
    await olga.press(picker, text="Second (owner)")
    assert "Second" in (await olga.next_message()).text
    assert "No webinars yet" in await say(olga, "/webinars")


async def test_org_card_edits_and_payment_methods(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    await seed(session_factory, lambda s: make_org(s, OWNER_ID))
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/org")
    card = await olga.next_message()
    assert "Stripe: not configured on this bot" in card.text
    assert "✅ ⭐ Telegram Stars" in card.button_texts
    assert not any("Stripe" in text for text in card.button_texts)
    await olga.press(card, text="✅ ⭐ Telegram Stars")
    assert "⬜ ⭐ Telegram Stars" in (await olga.next_message()).button_texts
    await olga.press(card, text="✏️ E-mail")
    await olga.next_message()
    assert "e-mail address" in await say(olga, "nope")
    assert "Saved" in await say(olga, "help@acme.org")
    assert "help@acme.org" in (await olga.next_message()).text
    await olga.press(card, text="✏️ Terms of sale")
    await olga.next_message()
    await olga.send("Refunds until 24 hours before the start.")
    await olga.next_message()
    assert "Refunds until 24 hours" in (await olga.next_message()).text


async def test_link_import_from_paste_and_files(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        return await make_webinar(session, org, access_mode=AccessMode.LINKS)

    webinar = await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/webinars")
    listing = await olga.next_message()
    await olga.press(listing, text=f"1. {webinar.title}")
    card = await olga.next_message()
    assert "0 free, 0 given out, 0 revoked" in card.text
    await olga.press(card, text="📥 Import links")
    await olga.next_message()
    await olga.send_document("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert ".txt or .csv file" in (await olga.next_message()).text
    await olga.send_document("links.txt", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert "not text" in (await olga.next_message()).text
    await olga.send_document("empty.txt", b" \n\n")
    assert "empty" in (await olga.next_message()).text
    upload = b"name,link\nOlga,https://meet.example.org/j/1\nhello\nhttps://meet.example.org/j/1\n"
    await olga.send_document("links.csv", upload)
    report = (await olga.next_message()).text
    assert "1 link imported" in report
    assert "line 3: not a link" in report
    assert "line 4: repeats line 2" in report
    assert "Pool: 1 free, 0 given out, 0 revoked" in report
    await olga.next_message()  # the card
    await olga.press(card, text="📥 Import links")
    await olga.next_message()
    report = await say(olga, "https://meet.example.org/j/1\nhttps://meet.example.org/j/2")
    assert "line 1: already imported before" in report
    assert "Pool: 2 free" in report
    async with session_factory() as session:
        urls = (await session.scalars(select(AccessLink.url))).all()
        assert sorted(urls) == ["https://meet.example.org/j/1", "https://meet.example.org/j/2"]


async def test_participants_and_csv_export(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        webinar = await make_webinar(session, org)
        ticket = await sell(_services(session), webinar, 2001)
        ticket.access_delivered_at = NOW
        await sell(_services(session), webinar, 2002, stars=150)
        return webinar

    webinar = await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="ru")
    await olga.command("/participants")
    picker = await olga.next_message()
    await olga.press(picker, text=f"{webinar.title} · 👥 2")
    people = await olga.next_message()
    assert "2 участника" in people.text
    assert "P2001 (@p2001) · 100 ⭐ · Stars · ✅ доступ отправлен" in people.text
    await olga.press(people, text="📄 Выгрузить CSV")
    document = await olga.next_message()
    assert document.document is not None
    assert document.document["file_name"].endswith(".csv")
    rows = list(csv.reader(io.StringIO((document.file_bytes or b"").decode("utf-8-sig"))))
    assert rows[0][:3] == ["Билет", "ID в Telegram", "Имя"]
    assert [row[1] for row in rows[1:]] == ["2001", "2002"]

    # Each paid ticket has a refund button that leads to the confirmation step.
    refund = next(text for text in people.button_texts if text.startswith("↩️") and "P2002" in text)
    await olga.press(people, text=refund)
    confirm = await olga.next_message()
    assert any(b.get("callback_data", "").endswith(":yes") for b in confirm.buttons)


async def test_new_password_is_offered_to_paid_participants(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        webinar = await make_webinar(session, org)
        await sell(_services(session), webinar, 2001)
        return webinar

    webinar = await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/webinars")
    listing = await olga.next_message()
    await olga.press(listing, text=f"1. {webinar.title}")
    card = await olga.next_message()
    await olga.press(card, text="✏️ Edit")
    menu = await olga.next_message()
    await olga.press(menu, text="Room password")
    await olga.next_message()
    await olga.send("n3w-pass")
    assert "Saved" in (await olga.next_message()).text
    assert "n3w-pass" in (await olga.next_message()).text
    offer = await olga.next_message()
    assert "1 participant has the old access" in offer.text
    await olga.press(offer, text="📨 Send the new access")
    assert "on its way to 1 participant" in (await olga.next_message()).text
    async with session_factory() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
        assert [(r.kind, r.chat_id) for r in rows if r.kind == OutboxKind.ACCESS] == [
            (OutboxKind.ACCESS, 2001)
        ]


async def test_cancel_a_webinar(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        return await make_webinar(session, org, price_stars=None)

    webinar = await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/webinars")
    listing = await olga.next_message()
    await olga.press(listing, text=f"1. {webinar.title}")
    card = await olga.next_message()
    await olga.press(card, text="❌ Cancel webinar")
    confirm = await olga.next_message()
    assert "0 participants" in confirm.text
    await olga.press(confirm, text="Yes, cancel and refund")
    assert "❌ cancelled" in (await olga.next_message()).text
    assert "is cancelled" in (await olga.next_message()).text
    async with session_factory() as session:
        stored = await session.get(Webinar, webinar.id)
        assert stored is not None
        assert stored.status == WebinarStatus.CANCELLED
    answer = await forge(olga, f"aw:publish:{webinar.id}:")
    assert answer.text == "This webinar is cancelled and can no longer be changed."


async def test_group_mode_checks_the_bot_and_the_organizer_rights(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        return await make_webinar(session, org, status=WebinarStatus.DRAFT)

    webinar = await seed(session_factory, build)
    sandbox.add_chat(-1001000000001, "Not admin here", bot_is_admin=False)
    sandbox.add_chat(-1001000000002, "Someone else's club")
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/webinars")
    listing = await olga.next_message()
    await olga.press(listing, text=f"1. {webinar.title}")
    card = await olga.next_message()
    await olga.press(card, text="✏️ Edit")
    menu = await olga.next_message()
    await olga.press(menu, text="Access mode")
    modes = await olga.next_message()
    await olga.press(modes, text="👥 A private Telegram group or channel")
    assert "administrator" in (await olga.next_message()).text
    assert "@username" in await say(olga, "my group")
    assert "not an administrator" in await say(olga, "-1001000000001")
    # The bot is admin there, but Olga is not: she may not sell access to it.
    assert "Only an administrator" in await say(olga, "-1001000000002")
    async with session_factory() as session:
        stored = await session.get(Webinar, webinar.id)
        assert stored is not None
        assert stored.access_mode == AccessMode.PASSWORD

    # A group both administer: accepted, and the webinar now admits its payers there.
    sandbox.add_chat(-1001000000003, "Olga's club", admins={OWNER_ID})
    assert "Connected" in await say(olga, "-1001000000003")
    assert (await olga.next_message()).text == "Saved."  # sent once the change is committed
    async with session_factory() as session:
        stored = await session.get(Webinar, webinar.id)
        assert stored is not None
        assert (stored.access_mode, stored.group_chat_id) == (AccessMode.GROUP, -1001000000003)
