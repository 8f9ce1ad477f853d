"""Recordings end to end: the organizer adds one to a finished webinar from its card, every
ticket holder gets it once in the organization's language, and it is sold after the event with
the same money rules as a ticket (pay, replayed update, refund)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.sandbox import SandboxServer
from bot.sandbox.users import SimUser
from storage.enums import OutboxKind, OutboxStatus, PaymentStatus, Product, TicketStatus
from storage.models import OutboxMessage, Payment, Ticket, Webinar
from tests.sales.conftest import OWNER_ID
from tests.sales.test_flows import buy, rows, world

RECORDING = "https://video.example.org/rec/1"


async def drain(user: SimUser, n: int) -> list[Any]:
    return [await user.next_message() for _ in range(n)]


async def add_recording(
    owner: SimUser,
    webinar: Webinar,
    *,
    stars: str | None,
    file: bytes | None = None,
    video: bool = False,
) -> str:
    """The organizer's path: /webinars, the webinar's card, 🎬 Recording, four answers (the
    recording itself a link, or the file when ``file`` is given)."""
    await owner.command("/webinars")
    listing = await owner.next_message()
    await owner.press(listing, text=next(t for t in listing.button_texts if webinar.title in t))
    card = await owner.next_message()
    await owner.press(card, text="🎬 Recording")
    assert "Send the recording" in (await owner.next_message()).text
    if file is None:
        await owner.send(RECORDING)
    elif video:
        await owner.send_video("recording.mp4", file)
    else:
        await owner.send_document("recording.mp4", file, mime_type="video/mp4")
    expiry = await owner.next_message()
    assert "Until when" in expiry.text
    await owner.send("2026-12-31 20:00")  # Europe/Rome
    price = await owner.next_message()
    await owner.press(price, text="No card price")
    stars_question = await owner.next_message()
    if stars is None:
        await owner.press(stars_question, text="No Stars price")
    else:
        await owner.send(stars)
    saved = await owner.next_message()
    await owner.next_message()  # the card again
    return saved.text or ""


async def test_a_recording_reaches_every_buyer_once_and_is_sold_after_the_event(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession, clock: FakeClock
) -> None:
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    ann = sandbox.user(2002, first_name="Ann", language_code="en")
    for buyer in (bob, ann):
        await buy(buyer, webinar)
        await drain(buyer, 1)  # the access, which confirms the payment
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")

    # Before the end there is no recording to add.
    await owner.command("/webinars")
    listing = await owner.next_message()
    await owner.press(listing, text=listing.button_texts[0])
    assert "🎬 Recording" not in (await owner.next_message()).button_texts

    clock.set(webinar.starts_at + timedelta(hours=2))  # the 90-minute webinar is over
    saved = await add_recording(owner, webinar, stars="50")
    assert "on its way to 2 participants" in saved
    assert "offers it for sale" in saved

    for buyer in (bob, ann):
        [message] = await drain(buyer, 1)
        assert RECORDING in message.text
        assert "registrazione" in message.text  # the organization's language (it)
        assert "31 dic 2026" in message.text  # the expiry, in Rome's time
    await bob.expect_silence(0.3)
    sent = [
        row
        for row in await rows(session, OutboxMessage)
        if row.kind == OutboxKind.RECORDING and row.status == OutboxStatus.SENT
    ]
    assert sorted(row.chat_id for row in sent) == [2001, 2002]

    # Ticket holders find it in /my too.
    await bob.command("/my")
    assert RECORDING in (await bob.next_message()).text

    # Someone who missed the webinar buys the recording on the card of the past webinar.
    carl = sandbox.user(2003, first_name="Carl", language_code="en")
    await carl.command("/start", f"w_{webinar.code}")
    card = await carl.next_message()
    assert "registrazione" in card.text
    [button] = [text for text in card.button_texts if "50 ⭐" in text]
    await carl.press(card, text=button)
    invoice = await carl.next_message()
    assert invoice.invoice["total_amount"] == 50
    result = await carl.pay(invoice)
    assert result.ok
    confirmation, delivered = await drain(carl, 2)
    assert "registrazione" in confirmation.text
    assert RECORDING in delivered.text

    # Telegram redelivers the payment: nothing changes, nothing is sent again.
    await carl.replay_last_update()
    await carl.expect_silence(0.5)
    payments = await rows(session, Payment)
    assert len(payments) == 3
    tickets = {ticket.user_id: ticket for ticket in await rows(session, Ticket)}
    assert tickets[2003].product == Product.RECORDING
    assert tickets[2003].payment_id == next(p.id for p in payments if p.user_id == 2003)

    # A second purchase of the recording is refused before any invoice.
    await carl.command("/start", f"w_{webinar.code}")
    assert "✅" in (await carl.next_message()).text  # "you have a ticket"

    # The organizer refunds the recording: only Carl's payment moves, only his ticket goes.
    await owner.command("/refund", str(tickets[2003].id))
    confirm = await owner.next_message()
    await owner.press(confirm, text="💸 Refund 50 ⭐")
    await drain(owner, 2)  # queued, then the worker's answer
    [event] = sandbox.refund_events
    assert event.telegram_payment_charge_id == result.telegram_payment_charge_id
    assert "rimborsato" in (await carl.next_message()).text
    tickets = {ticket.user_id: ticket for ticket in await rows(session, Ticket)}
    assert tickets[2003].status == TicketStatus.REFUNDED
    assert tickets[2001].status == tickets[2002].status == TicketStatus.ACTIVE
    statuses = {p.user_id: p.status for p in await rows(session, Payment)}
    assert statuses == {
        2001: PaymentStatus.SUCCEEDED,
        2002: PaymentStatus.SUCCEEDED,
        2003: PaymentStatus.REFUNDED,
    }
    await carl.command("/my")
    assert RECORDING not in (await carl.next_message()).text

    # After the expiry the recording is gone from /my and no longer sold.
    clock.set(webinar.starts_at + timedelta(days=60))
    await bob.command("/my")
    assert RECORDING not in (await bob.next_message()).text
    dave = sandbox.user(2004, first_name="Dave", language_code="en")
    await dave.command("/start", f"w_{webinar.code}")
    assert not [t for t in (await dave.next_message()).button_texts if "50 ⭐" in t]


async def test_a_recording_not_for_sale_goes_to_ticket_holders_only(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession, clock: FakeClock
) -> None:
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    await buy(bob, webinar)
    await drain(bob, 1)  # the access, which confirms the payment
    clock.set(webinar.starts_at + timedelta(hours=2))
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    saved = await add_recording(owner, webinar, stars=None)
    assert "on its way to 1 participant." in saved
    assert "for sale" not in saved
    [message] = await drain(bob, 1)
    assert RECORDING in message.text

    carl = sandbox.user(2003, first_name="Carl", language_code="en")
    await carl.command("/start", f"w_{webinar.code}")
    card = await carl.next_message()
    assert not card.button_texts
    stored = (
        await session.scalars(select(Webinar).execution_options(populate_existing=True))
    ).one()
    await session.commit()
    assert stored.recording_url == RECORDING
    assert stored.recording_price_stars is None


@pytest.mark.parametrize("video", [False, True], ids=["file", "video"])
async def test_a_recording_sent_as_a_file_reaches_every_ticket_holder_as_that_file(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session: AsyncSession,
    clock: FakeClock,
    video: bool,
) -> None:
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    await buy(bob, webinar)
    await drain(bob, 1)  # the access, which confirms the payment
    clock.set(webinar.starts_at + timedelta(hours=2))
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    content = b"\x00\x00\x00\x18ftypmp42 the whole webinar"
    saved = await add_recording(owner, webinar, stars=None, file=content, video=video)
    assert "on its way to 1 participant." in saved
    [message] = await drain(bob, 1)
    assert message.file_bytes == content  # the organizer's very file, in the organization's words
    assert (message.video is not None, message.document is not None) == (video, not video)
    assert message.caption
    await bob.expect_silence(0.3)  # once
