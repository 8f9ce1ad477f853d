"""Buyers end to end: the real bot (Dispatcher, middlewares, routers, outbox dispatcher) polling
the sandbox Bot API server, simulated users paying in the chat."""

from __future__ import annotations

import asyncio
from typing import Any

from icalendar import Calendar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.sandbox import SandboxServer
from storage.enums import AccessMode, PaymentStatus, TicketStatus
from storage.models import Payment, Ticket, Webinar
from tests.factories import add_links, make_org, make_webinar
from tests.sales.conftest import OWNER_ID


async def world(session: AsyncSession, **webinar: Any) -> Webinar:
    org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
    made = await make_webinar(session, org, price_stars=100, capacity=20, **webinar)
    await session.commit()  # one SQLite connection: let the bot write
    return made


async def rows(session: AsyncSession, model: type) -> list[Any]:
    result = list(
        (await session.scalars(select(model).execution_options(populate_existing=True))).all()
    )
    await session.commit()
    return result


async def buy(user: Any, webinar: Webinar, button: str = "⭐ Paga con Telegram Stars: 100 ⭐"):  # type: ignore[no-untyped-def]
    await user.command("/start", f"w_{webinar.code}")
    card = await user.next_message()
    await user.press(card, text=button)
    invoice = await user.next_message()
    return card, invoice, await user.pay(invoice)


async def test_a_buyer_pays_in_the_chat_and_gets_access_once(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    card, invoice, result = await buy(bob, webinar)

    assert "Pricing for founders" in card.text
    assert "UTC+01:00" in card.text  # the organization's time zone, with its offset
    assert "Restano 20 posti" in card.text  # the organization's language, not Bob's
    assert invoice.invoice["currency"] == "XTR"
    assert invoice.invoice["total_amount"] == 100
    assert result.ok
    assert result.precheckout_latency_s is not None
    assert result.precheckout_latency_s < 1

    # One message: the calendar file, with the payment's confirmation and the access as its
    # caption. No confirmation of its own before it.
    access = await bob.next_message()
    assert access.caption is not None
    assert access.caption.startswith("✅ Pagamento ricevuto: il tuo biglietto è confermato.")
    assert "https://meet.example.org/room/42" in access.caption
    assert "s3cret" in access.caption
    event = Calendar.from_ical(access.file_bytes).walk("VEVENT")[0]
    assert event.decoded("DTSTART") == webinar.starts_at

    # Organizers see in /participants that access reached him (marked once the row is settled).
    for _ in range(100):
        (ticket,) = await rows(session, Ticket)
        if ticket.access_delivered_at is not None:
            break
        await asyncio.sleep(0.02)
    assert ticket.access_delivered_at is not None

    # Telegram redelivers the payment update: nothing changes, nothing is sent.
    await bob.replay_last_update()
    await bob.expect_silence(0.5)
    assert len(await rows(session, Payment)) == 1

    # A second charge of the same invoice: told why, refunded automatically.
    await bob.pay_again(result)
    notice = await bob.next_message()
    assert "rimborsato" in notice.text
    await sandbox.wait_until(lambda: sandbox.refund_events, message="the duplicate is refunded")
    assert [e.telegram_payment_charge_id for e in sandbox.refund_events] != [
        result.telegram_payment_charge_id
    ]
    # The refund worker records the provider's answer right after it arrives.
    for _ in range(200):
        payments = await rows(session, Payment)
        if PaymentStatus.REFUNDED in {p.status for p in payments}:
            break
        await asyncio.sleep(0.02)
    assert sorted(p.status for p in payments) == [PaymentStatus.REFUNDED, PaymentStatus.SUCCEEDED]

    await bob.command("/my")
    mine = await bob.next_message()
    assert "Pricing for founders" in mine.text
    assert "s3cret" in mine.text


async def test_a_foreign_invoice_is_refused_at_checkout(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    eve = sandbox.user(2002, first_name="Eve", language_code="en")
    await bob.command("/start", f"w_{webinar.code}")
    card = await bob.next_message()
    await bob.press(card, text="⭐ Paga con Telegram Stars: 100 ⭐")
    invoice = await bob.next_message()
    result = await eve.pay(invoice)  # Eve forwards herself Bob's invoice
    assert not result.ok
    assert result.error_message
    assert await rows(session, Payment) == []


async def test_an_organizer_refunds_a_ticket_after_confirming(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    webinar = await world(session, access_mode=AccessMode.LINKS, room_url=None)
    await add_links(session, webinar, 3)
    await session.commit()
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    _card, _invoice, result = await buy(bob, webinar)
    assert result.ok
    await bob.next_message()  # the access, which confirms the payment
    [ticket] = await rows(session, Ticket)

    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    stranger = sandbox.user(3000, first_name="Sam", language_code="en")
    await stranger.command("/refund", str(ticket.id))
    assert "no ticket" in (await stranger.next_message()).text

    await owner.command("/refund", str(ticket.id))
    confirm = await owner.next_message()
    assert "Bob" in confirm.text
    await owner.press(confirm, text="💸 Refund 100 ⭐")
    queued = await owner.next_message()
    assert "Refunding ticket" in queued.text  # the update does not wait on the provider
    done = await owner.next_message()  # the refund worker's answer
    assert "refunded" in done.text
    [event] = sandbox.refund_events
    assert event.telegram_payment_charge_id == result.telegram_payment_charge_id
    told = await bob.next_message()
    assert "rimborsato" in told.text
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.REFUNDED


async def test_a_refund_made_by_telegram_is_recorded(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    webinar = await world(session)
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    _card, _invoice, result = await buy(bob, webinar)
    await bob.next_message()  # the access, which confirms the payment
    await bob.refunded_payment(result)
    told = await bob.next_message()
    assert "non è più valido" in told.text
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.REFUNDED
    [payment] = await rows(session, Payment)
    assert payment.status == PaymentStatus.REFUNDED


async def test_group_access_approves_ticket_holders_only(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    sandbox.add_chat(-100500, "Pricing participants")
    webinar = await world(
        session, access_mode=AccessMode.GROUP, room_url=None, group_chat_id=-100500
    )
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    eve = sandbox.user(2002, first_name="Eve", language_code="en")
    _card, _invoice, result = await buy(bob, webinar)
    assert result.ok
    access = await bob.next_message()
    link = next(word for word in access.body.split() if word.startswith("https://t.me/+"))
    assert await bob.join_via(link) == "pending"
    await sandbox.wait_until(lambda: sandbox.is_member(-100500, 2001), message="Bob approved")
    assert await eve.join_via(link) == "pending"
    await sandbox.wait_for_call("declineChatJoinRequest")
    assert not sandbox.is_member(-100500, 2002)


async def test_a_refunded_member_the_bot_cannot_remove_is_reported_to_the_organizers(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    """Someone took the bot's ban right after the group was set: the refund still goes through,
    and the organizers hear that the member is still in the group."""
    chat = sandbox.add_chat(-100510, "Pricing participants")
    webinar = await world(
        session, access_mode=AccessMode.GROUP, room_url=None, group_chat_id=-100510
    )
    bob = sandbox.user(2001, first_name="Bob", language_code="en")
    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    _card, _invoice, result = await buy(bob, webinar)
    assert result.ok
    access = await bob.next_message()
    link = next(word for word in access.body.split() if word.startswith("https://t.me/+"))
    assert await bob.join_via(link) == "pending"
    await sandbox.wait_until(lambda: sandbox.is_member(-100510, 2001), message="Bob approved")
    chat.bot_rights["can_restrict_members"] = False
    [ticket] = await rows(session, Ticket)

    await owner.command("/refund", str(ticket.id))
    confirm = await owner.next_message()
    await owner.press(confirm, text="💸 Refund 100 ⭐")
    texts = [(await owner.next_message()).text for _ in range(3)]
    assert any("could not remove user 2001" in text for text in texts), texts
    assert sandbox.is_member(-100510, 2001)
    [ticket] = await rows(session, Ticket)
    assert ticket.status == TicketStatus.REFUNDED
