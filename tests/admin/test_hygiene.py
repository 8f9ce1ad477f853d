"""Review findings (issue 11): escaping, menus, forged callbacks, join requests, CSV, long lists,
link-import caps, group rights and group changes. End to end through the real Dispatcher and the
sandbox Bot API server, which rejects malformed HTML and over-long texts as Telegram does."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.commands import ORGANIZER_COMMANDS, PARTICIPANT_COMMANDS, commands_for
from bot.formatting import escape, page_bounds, visible_length
from bot.i18n import LOCALES, Translator
from bot.sandbox import BotMessage, SandboxServer
from bot.sandbox.api.messages import html_plain_text
from bot.sandbox.users import CallbackAnswer, SimUser
from bot.settings import Settings
from storage.enums import AccessMode, BroadcastStatus, TicketStatus, WebinarStatus
from storage.models import AccessLink, Broadcast, Ticket, Webinar
from storage.repositories.links import LinkRepository
from tests.admin.test_bot import OTHER_OWNER, _services, say, seed, two_orgs
from tests.admin.test_services import sell
from tests.conftest import OWNER_ID
from tests.factories import NOW, make_org, make_user, make_webinar
from tests.sales.test_flows import buy

Sessions = async_sessionmaker[AsyncSession]
ROOT = Path(__file__).resolve().parents[2]

HOSTILE_ORG = "<b>Acme & Co</i>"
HOSTILE_TITLE = "<i>Pricing</b> & more"
HOSTILE_NAME = "</i><b>Tom & Jerry"
HOSTILE_TEXT = "a < b && c > d </i> &amp;"
SORRY = "something went wrong"
REFUSALS = {
    "This button is no longer active.",
    "This is no longer available.",
    "Only organizers can send broadcasts.",
    "This webinar is no longer available.",
    "This broadcast was already sent or cancelled.",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One update at a time, in arrival order: a reply to a later update proves an earlier one
    was handled, so a test can check that it changed nothing and said nothing."""
    return settings.model_copy(
        update={"update_slots": 1, "send_rate_per_s": 1000.0, "send_rate_per_chat_s": 1000.0}
    )


def visible(message: BotMessage) -> str:
    """What the user reads: the HTML as Telegram parses it (the sandbox rejects broken HTML)."""
    return html_plain_text(message.body)


async def forge(user: SimUser, data: str, message: BotMessage) -> CallbackAnswer:
    answer = await user.forge_callback(data, message)
    assert answer is not None, f"no answer to {data!r}"
    return answer


async def read(user: SimUser) -> str:
    text = visible(await user.next_message())
    assert SORRY not in text
    return text


async def hostile_world(session: AsyncSession) -> Webinar:
    org = await make_org(
        session,
        OWNER_ID,
        name=HOSTILE_ORG,
        support_contact="<script>@help</script>",
        terms_text=HOSTILE_TEXT,
    )
    webinar = await make_webinar(
        session, org, title=HOSTILE_TITLE, room_password="<pass&word>", capacity=10
    )
    webinar.description = HOSTILE_TEXT
    await make_user(session, 2001, first_name=HOSTILE_NAME)
    await sell(_services(session), webinar, 2002)
    return webinar


async def test_hostile_names_and_texts_reach_everyone_verbatim(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    webinar = await seed(session_factory, hostile_world)
    tom = sandbox.user(2001, first_name=HOSTILE_NAME, language_code="en")

    await tom.start()
    assert HOSTILE_NAME in await read(tom)

    await tom.start(f"w_{webinar.code}")
    card = await tom.next_message()
    for text in (HOSTILE_TITLE, HOSTILE_TEXT, HOSTILE_ORG):
        assert text in visible(card)
    await tom.press(card, text="⭐ Pay with Telegram Stars: 100 ⭐")
    invoice = await tom.next_message()
    assert (await tom.pay(invoice)).ok
    # The calendar file, the payment's confirmation and the access as its caption.
    access = await read(tom)
    assert "Payment received" in access
    assert HOSTILE_TITLE in access
    assert "<pass&word>" in access

    await tom.command("/my")
    assert "<pass&word>" in await read(tom)
    await tom.command("/terms")
    assert HOSTILE_TEXT in await read(tom)
    await tom.command("/paysupport")
    assert "<script>@help</script>" in await read(tom)

    olga = sandbox.user(OWNER_ID, first_name="<Olga>", language_code="en")
    await olga.command("/participants")
    picker = await olga.next_message()
    await olga.press(picker, text=picker.button_texts[0])
    listing = await olga.next_message()
    assert HOSTILE_NAME in visible(listing)
    assert HOSTILE_TITLE in visible(listing)
    refund = next(text for text in listing.button_texts if "Tom" in text)
    await olga.press(listing, text=refund)
    assert HOSTILE_NAME in await read(olga)

    for command in ("/webinars", "/org", "/team", "/stats"):
        await olga.command(command)
        assert HOSTILE_ORG in await read(olga), command
    await olga.command("/broadcast")
    await read(olga)


def help_commands(text: str) -> set[str]:
    return set(re.findall(r"^/(\w+):", text, flags=re.MULTILINE))


async def test_organizer_menu_matches_help_and_readme_in_every_language(
    sandbox: SandboxServer, bot_app: BotApplication, translator: Translator
) -> None:
    items = ORGANIZER_COMMANDS + PARTICIPANT_COMMANDS
    menu = {name for name, _text in items}
    assert "refund" in menu
    readme = set(re.findall(r"^\| `/(\w+)", (ROOT / "README.md").read_text(), flags=re.M))
    assert readme == menu
    english = {c.command: c.description for c in commands_for("en", items)}
    for n, locale in enumerate(LOCALES):
        user = sandbox.user(7000 + n, language_code=locale.replace("_", "-").lower())
        await user.command("/help")
        assert help_commands(await read(user)) | {"start", "help"} == menu, locale
        if locale != "en":
            with translator.context():
                translated = commands_for(locale, items)
            assert {c.command for c in translated} == menu
            assert all(c.description != english[c.command] for c in translated), locale


async def test_join_requests_to_chats_that_are_no_webinar_group_are_left_alone(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        return await make_webinar(session, org, access_mode=AccessMode.GROUP, group_chat_id=-100600)

    await seed(session_factory, build)
    sandbox.add_chat(-100600, "Webinar group")
    sandbox.add_chat(-100700, "The organizer's other club")
    other = await bot_app.bot.create_chat_invite_link(-100700, creates_join_request=True)
    ours = await bot_app.bot.create_chat_invite_link(-100600, creates_join_request=True)
    eve = sandbox.user(2002, first_name="Eve", language_code="en")
    assert await eve.join_via(other.invite_link) == "pending"
    await eve.command("/help")  # one update at a time: the request was handled before this
    await read(eve)
    assert 2002 in sandbox.chat(-100700).join_requests
    assert not sandbox.calls_of("declineChatJoinRequest")
    assert not sandbox.calls_of("approveChatJoinRequest")

    assert await eve.join_via(ours.invite_link) == "pending"
    await sandbox.wait_for_call("declineChatJoinRequest")
    assert 2002 not in sandbox.chat(-100600).join_requests


FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(1)", "\t=1+1", "\r=1+1", "Plain"]


async def test_csv_export_never_starts_a_cell_as_a_formula(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        webinar = await make_webinar(session, org, capacity=20)
        for n, name in enumerate(FORMULAS):
            await sell(_services(session), webinar, 3000 + n)
            (await make_user(session, 3000 + n)).first_name = name
        return webinar

    await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/participants")
    picker = await olga.next_message()
    await olga.press(picker, text=picker.button_texts[0])
    listing = await olga.next_message()
    await olga.press(listing, text="📄 Export CSV")
    document = await olga.next_message()
    rows = list(csv.reader(io.StringIO((document.file_bytes or b"").decode("utf-8-sig"))))
    names = [row[2] for row in rows[1:]]
    usernames = [row[3] for row in rows[1:]]
    assert names == [f"'{name}" for name in FORMULAS[:-1]] + ["Plain"]
    # Readable and safe: the bare username, never "@name" (a formula to spreadsheets).
    assert usernames == [f"p{3000 + n}" for n in range(len(FORMULAS))]
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


async def test_link_imports_split_lines_like_the_parser_and_are_capped(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        return await make_webinar(session, org, access_mode=AccessMode.LINKS)

    webinar = await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="it")

    async def start_import() -> None:
        await olga.command("/webinars")
        listing = await olga.next_message()
        await olga.press(listing, text=f"1. {webinar.title}")
        card = await olga.next_message()
        await olga.press(card, text="📥 Importa link")
        await olga.next_message()

    async def upload(name: str, data: bytes) -> str:
        await olga.send_document(name, data)
        return await read(olga)

    # Old Mac line ends: one link a line, numbered as the organizer's editor shows them.
    await start_import()
    links = b"\r".join(b"https://meet.example.org/j/%d" % i for i in range(3))
    report = await upload("mac.txt", links + b"\rnot a link")
    assert "3 link importati" in report
    assert "riga 4" in report
    await olga.next_message()  # the card

    # Refused whole, with why; the import still waits for a smaller list.
    await start_import()
    too_many = b"\r".join(b"https://meet.example.org/k/%d" % i for i in range(10_001))
    assert "Troppe righe: 10001" in await upload("many.txt", too_many)
    too_big = b"https://meet.example.org/big\n" * (1024 * 1024 // 29 + 1)
    assert "1 MB" in await upload("big.txt", too_big)
    async with session_factory() as session:
        assert len(await LinkRepository(session).urls(webinar.id)) == 3


async def test_participant_pages_fit_telegram_with_long_names(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        webinar = await make_webinar(session, org, title="&" * 128, capacity=100)
        for n in range(45):
            await sell(_services(session), webinar, 4000 + n)
            # 64 emoji and 64 "&": 192 UTF-16 units as Telegram counts, 448 chars escaped.
            user = await make_user(session, 4000 + n)
            user.first_name, user.last_name = "😀" * 64, "&" * 63
        return webinar

    await seed(session_factory, build)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/participants")
    picker = await olga.next_message()
    await olga.press(picker, text=picker.button_texts[0])
    seen: list[str] = []
    pages = 0
    while True:
        page = await olga.next_message()
        text = visible(page)
        assert SORRY not in text
        assert len(text.encode("utf-16-le")) // 2 <= 4096
        pages += 1
        lines = [line for line in text.splitlines() if line[:1].isdigit()]
        assert lines
        seen += [line.split()[1] for line in lines]
        refunds = [t for t in page.button_texts if t.startswith("↩️")]
        assert [t.split()[2] for t in refunds] == [line.split()[1] for line in lines]
        if "➡️" not in page.button_texts:
            break
        await olga.press(page, text="➡️")
    assert pages > 2
    assert f"({pages}/{pages})" in text
    assert len(seen) == len(set(seen)) == 45


@given(
    st.lists(st.text(alphabet="ab😀&<>", max_size=30).map(escape), max_size=40),
    st.integers(min_value=1, max_value=80),
    st.integers(min_value=1, max_value=10),
)
def test_page_bounds_keep_blocks_whole_and_pages_within_the_limit(
    blocks: list[str], limit: int, most: int
) -> None:
    bounds = page_bounds(blocks, limit, most=most)
    assert [i for a, b in bounds for i in range(a, b)] == list(range(len(blocks)))
    for a, b in bounds:
        assert 0 < b - a <= most
        if b - a > 1:
            assert visible_length("\n".join(blocks[a:b])) <= limit


async def test_forged_callbacks_say_and_change_nothing_before_the_authorization_check(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> tuple[Webinar, int, int]:
        mine, _other = await two_orgs(session)
        ticket = (await session.scalars(select(Ticket))).one()
        broadcast = Broadcast(
            org_id=mine.org_id,
            webinar_id=mine.id,
            created_by=OWNER_ID,
            text="Hello",
            status=BroadcastStatus.DRAFT,
            created_at=NOW,
        )
        session.add(broadcast)
        await session.flush()
        return mine, ticket.id, broadcast.id

    mine, ticket_id, broadcast_id = await seed(session_factory, build)
    stranger = sandbox.user(2000, first_name="Ivan", language_code="en")
    rival = sandbox.user(OTHER_OWNER, first_name="Rita", language_code="en")
    forged = [
        f"refund:{ticket_id}:no",
        f"refund:{ticket_id}:yes",
        f"refund:{ticket_id}:ask",
        *(
            f"aw:{action}:{mine.id}:{value}"
            for action, value in [
                ("open", ""),
                ("publish", ""),
                ("unpublish", ""),
                ("cancel", ""),
                ("cancel_yes", ""),
                ("edit", ""),
                ("field", "title"),
                ("mode", ""),
                ("group", ""),
                ("links", ""),
                ("people", ""),
                ("people", "1"),
                ("csv", ""),
                ("resend", ""),
            ]
        ),
        f"at:remove:{OWNER_ID}",
        f"at:remove_yes:{OWNER_ID}",
        f"ao:switch:{mine.org_id}",
        f"bcast:pick:{mine.id}",
        f"bcast:send:{broadcast_id}",
        f"bcast:drop:{broadcast_id}",
    ]
    for user in (stranger, rival):
        await user.command("/help")
        own = await user.next_message()  # forged buttons come "on" the presser's own message
        for data in forged:
            answer = await forge(user, data, own)
            assert answer.text in REFUSALS, (user.first_name, data, answer.text)
        await user.command("/help")  # one update at a time: everything above was handled
        assert (await user.next_message()).message_id != own.message_id, "a message was edited"
    async with session_factory() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        assert ticket.status == TicketStatus.ACTIVE
        webinar = await session.get(Webinar, mine.id)
        assert webinar is not None
        assert webinar.status == WebinarStatus.PUBLISHED
        broadcast = await session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        assert broadcast.status == BroadcastStatus.DRAFT
    assert not sandbox.refund_events
    assert not sandbox.calls_of("sendDocument")


async def open_edit_menu(olga: SimUser, webinar: Webinar) -> BotMessage:
    await olga.command("/webinars")
    listing = await olga.next_message()
    await olga.press(listing, text=f"1. {webinar.title}")
    card = await olga.next_message()
    await olga.press(card, text=card.button_texts[0])  # ✏️ Edit, in her language
    return await olga.next_message()


async def test_group_mode_needs_the_ban_right_too(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID)
        return await make_webinar(session, org, status=WebinarStatus.DRAFT)

    webinar = await seed(session_factory, build)
    no_ban = {"can_restrict_members": False}
    no_invite = {"can_invite_users": False}
    sandbox.add_chat(-100801, "No ban", admins={OWNER_ID}, bot_rights=no_ban)
    sandbox.add_chat(-100802, "No invite", admins={OWNER_ID}, bot_rights=no_invite)
    sandbox.add_chat(-100803, "Neither", admins={OWNER_ID}, bot_rights=no_ban | no_invite)
    sandbox.add_chat(-100804, "Both", admins={OWNER_ID})
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="ru")
    menu = await open_edit_menu(olga, webinar)
    await olga.press(menu, text="Способ входа")
    modes = await olga.next_message()
    await olga.press(modes, text=modes.button_texts[-1])
    assert "блокировать" in await read(olga)  # the prompt names both rights
    assert "право админа блокировать" in await say(olga, "-100801")
    assert "приглашать пользователей по ссылкам" in await say(olga, "-100802")
    assert "два права" in await say(olga, "-100803")
    async with session_factory() as session:
        stored = await session.get(Webinar, webinar.id)
        assert stored is not None
        assert stored.group_chat_id is None
    assert "-100804" not in await say(olga, "-100804")  # "Connected: Both."
    assert await read(olga)  # "Saved.", sent once the change is committed
    async with session_factory() as session:
        stored = await session.get(Webinar, webinar.id)
        assert stored is not None
        assert stored.group_chat_id == -100804


def invite_in(message: BotMessage) -> str:
    return next(word for word in visible(message).split() if word.startswith("https://t.me/+"))


async def test_a_new_group_reinvites_every_ticket_holder_and_revokes_the_old_invites(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    async def build(session: AsyncSession) -> Webinar:
        org = await make_org(session, OWNER_ID, language="it")
        return await make_webinar(
            session, org, access_mode=AccessMode.GROUP, group_chat_id=-100901, capacity=5
        )

    webinar = await seed(session_factory, build)
    sandbox.add_chat(-100901, "Old group", admins={OWNER_ID})
    sandbox.add_chat(-100902, "New group", admins={OWNER_ID})
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    await buy(bob, webinar, button="⭐ Paga con Telegram Stars: 100 ⭐")
    # In the calendar file's caption, after the payment's confirmation.
    old_invite = invite_in(await bob.next_message())

    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    menu = await open_edit_menu(olga, webinar)
    await olga.press(menu, text="Telegram group")
    await olga.next_message()
    assert "New group" in await say(olga, "-100902")
    assert await read(olga) == "Saved."

    told = await read(bob)  # in the organization's language
    assert "Il gruppo dei partecipanti" in told
    access = await bob.next_message()
    new_invite = invite_in(access)
    assert new_invite != old_invite
    assert access.document is not None  # the calendar file again, the new access its caption
    await sandbox.wait_for_call("revokeChatInviteLink")
    with pytest.raises(ValueError, match="EXPIRED"):
        await bob.join_via(old_invite)
    assert await bob.join_via(new_invite) == "pending"
    await sandbox.wait_until(lambda: sandbox.is_member(-100902, 2001), message="Bob admitted")
    async with session_factory() as session:
        links = (await session.scalars(select(AccessLink).order_by(AccessLink.id))).all()
        assert [(link.url, link.revoked_at is not None) for link in links] == [
            (old_invite, True),
            (new_invite, False),
        ]
