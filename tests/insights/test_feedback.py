"""Feedback end to end: the real bot against the sandbox. A participant who bought through the
sandbox is asked once after the end, rates, comments; the organizer reads it in /stats and in
the CSV. Forged presses change nothing and say nothing."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.sandbox import SandboxServer
from bot.services.feedback import FeedbackCallback
from bot.services.insight_jobs import plan_feedback
from bot.settings import Settings
from storage.enums import OutboxKind, OutboxStatus
from storage.models import Feedback, OutboxMessage, Ticket, Webinar
from tests.conftest import OWNER_ID
from tests.factories import NOW, make_org, make_webinar
from tests.insights.conftest import sell
from tests.reminders.conftest import make_ticket
from tests.sales.test_flows import buy

Sessions = async_sessionmaker[AsyncSession]
START = NOW + timedelta(days=1)
END = START + timedelta(minutes=90)  # the factory's webinars last 90 minutes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One update at a time, in order: an answer to a later update proves an earlier one was
    handled (a refused press says nothing, so there is nothing else to wait for)."""
    return settings.model_copy(
        update={"update_slots": 1, "send_rate_per_s": 1000.0, "send_rate_per_chat_s": 1000.0}
    )


async def _world(sessions: Sessions) -> Webinar:
    async with sessions() as session:
        org = await make_org(session, OWNER_ID, name="Acme", language="it")
        webinar = await make_webinar(session, org, title="Pricing", starts_at=START, capacity=20)
        other = await make_webinar(session, org, title="Next", starts_at=START + timedelta(days=5))
        await make_ticket(session, webinar, 3002, language_code="es")  # a free ticket
        await sell(session, webinar, 3003, refunded=True)  # refunded: never asked
        await sell(session, other, 3004)  # a webinar not over yet
        await session.commit()
        return webinar


async def _feedback_rows(sessions: Sessions) -> list[OutboxMessage]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.FEEDBACK)
        )
        return list(rows)


async def _feedback(sessions: Sessions) -> list[Feedback]:
    async with sessions() as session:
        return list(await session.scalars(select(Feedback).order_by(Feedback.id)))


async def test_participants_are_asked_once_and_the_organizer_reads_the_answers(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    webinar = await _world(session_factory)
    app = bot_app.app
    bob = sandbox.user(3001, first_name="Bob", language_code="en")
    carol = sandbox.user(3002, first_name="Carol", language_code="es")
    carol.started = True
    _card, _invoice, paid = await buy(bob, webinar)
    assert paid.ok
    await bob.next_message()  # the calendar file, the payment confirmed and the access its caption
    async with session_factory() as session:
        bob_ticket = await session.scalar(select(Ticket.id).where(Ticket.user_id == 3001))
        carol_ticket = await session.scalar(select(Ticket.id).where(Ticket.user_id == 3002))

    # Not before the end plus the organization's delay (an hour by default).
    bot_app.app.clock.set(END + timedelta(minutes=59))  # type: ignore[attr-defined]
    assert await plan_feedback(app) == 0
    bot_app.app.clock.set(END + timedelta(minutes=61))  # type: ignore[attr-defined]
    assert await plan_feedback(app) == 2  # Bob and Carol; not the refunded ticket
    assert await plan_feedback(app) == 0  # again (another replica, a restart): nothing new
    await bot_app.outbox.idle()
    await bot_app.outbox.run_until_idle()

    question = await bob.next_message()
    # In the organization's language (Italian), whatever Bob's own.
    assert "Com'è andato <b>Pricing</b>?" in (question.text or "")
    assert question.button_texts == ["1 ⭐", "2 ⭐", "3 ⭐", "4 ⭐", "5 ⭐"]
    assert "Com'è andato" in (await carol.next_message()).text

    answer = await bob.press(question, text="4 ⭐")
    assert answer is not None
    assert answer.text == "Grazie!"
    edited = await bob.next_message()
    assert "Il tuo voto: 4 su 5" in (edited.text or "")
    assert "✅ 4" in edited.button_texts
    # A second press changes the rating (a mis-tap corrected); it never adds a rating.
    await bob.press(edited, text="5 ⭐")
    await bob.next_message()
    assert [(f.ticket_id, f.rating) for f in await _feedback(session_factory)] == [(bob_ticket, 5)]

    await bob.send("Ottimo, grazie! =1+1")
    assert "leggerà il tuo commento" in (await bob.next_message()).text
    assert (await _feedback(session_factory))[0].comment == "Ottimo, grazie! =1+1"

    # Carol forges a press for Bob's ticket: nothing changes, nothing is said.
    forged = await carol.forge_callback(FeedbackCallback(ticket_id=bob_ticket, rating=1).pack())
    assert forged is not None
    assert not forged.text
    assert [(f.ticket_id, f.rating) for f in await _feedback(session_factory)] == [(bob_ticket, 5)]
    await carol.expect_silence()
    # Her own ticket: fine, and rated once.
    await carol.forge_callback(FeedbackCallback(ticket_id=carol_ticket, rating=2).pack())
    # A rating out of range is refused the same way.
    refused = await carol.forge_callback(FeedbackCallback(ticket_id=carol_ticket, rating=9).pack())
    assert refused is not None
    assert not refused.text
    ratings = {f.ticket_id: f.rating for f in await _feedback(session_factory)}
    assert ratings == {bob_ticket: 5, carol_ticket: 2}

    # Later runs and a day of dispatching: nobody is asked again.
    bot_app.app.clock.set(END + timedelta(days=1))  # type: ignore[attr-defined]
    assert await plan_feedback(app) == 0
    await bot_app.outbox.run_until_idle()
    await bob.expect_silence()
    rows = await _feedback_rows(session_factory)
    assert sorted(row.status for row in rows) == [OutboxStatus.SENT, OutboxStatus.SENT]

    # The organizer: average, distribution and comments in /stats, for this webinar.
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/stats")
    figures = await olga.next_message()
    month = await olga.next_message()
    assert month.photo is not None
    assert month.caption == "Sales, last 30 days"
    await olga.press(figures, text="📊 Pricing")
    detail = await olga.next_message()
    assert "Rating: 3.5 of 5 (2 ratings)" in (detail.text or "")
    assert "5 ⭐ ▇▇▇▇▇▇▇▇▇▇ 1" in detail.text
    assert "2 ⭐ ▇▇▇▇▇▇▇▇▇▇ 1" in detail.text
    assert "3 ⭐ · 0" in detail.text
    assert "• 5 ⭐ «Ottimo, grazie! =1+1»" in detail.text
    chart = await olga.next_message()
    assert chart.photo is not None
    assert chart.caption == "Sales of this webinar"

    # ... and in the participants' CSV.
    await olga.command("/participants")
    picker = await olga.next_message()
    await olga.press(picker, text="Pricing · 👥 2")
    people = await olga.next_message()
    await olga.press(people, text="📄 Export CSV")
    document = await olga.next_message()
    rows_csv = list(csv.reader(io.StringIO((document.file_bytes or b"").decode("utf-8-sig"))))
    assert rows_csv[0][-2:] == ["Rating (1-5)", "Comment"]
    by_user = {row[1]: row[-2:] for row in rows_csv[1:]}
    assert by_user["3001"] == ["5", "Ottimo, grazie! =1+1"]
    assert by_user["3002"] == ["2", ""]
    assert by_user["3003"] == ["", ""]


async def test_a_comment_too_long_is_refused_with_why_and_nothing_stored(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    await _world(session_factory)
    carol = sandbox.user(3002, first_name="Carol", language_code="es")
    carol.started = True
    bot_app.app.clock.set(END + timedelta(hours=2))  # type: ignore[attr-defined]
    assert await plan_feedback(bot_app.app) == 1
    await bot_app.outbox.idle()
    await bot_app.outbox.run_until_idle()
    question = await carol.next_message()
    await carol.press(question, text="3 ⭐")
    await carol.next_message()
    await carol.send("x" * 1001)
    assert "meno di 1000 caratteri" in (await carol.next_message()).text
    assert (await _feedback(session_factory))[0].comment is None
    await carol.send("Bene")
    await carol.next_message()
    assert (await _feedback(session_factory))[0].comment == "Bene"


async def test_organizers_choose_when_or_whether_participants_are_asked(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions
) -> None:
    await _world(session_factory)
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/org")
    card = await olga.next_message()
    assert "Participants asked for a rating: 1 hour after the end" in (card.text or "")
    await olga.press(card, text="🙏 Ratings after webinars")
    choices = await olga.next_message()
    assert choices.button_texts[:4] == [
        "✓ 1 hour after the end",
        "3 hours after the end",
        "24 hours after the end",
        "never",
    ]
    await olga.press(choices, text="never")
    card = await olga.next_message()
    assert "Participants asked for a rating: never" in (card.text or "")
    bad = await olga.forge_callback("ao:fbset:7")
    assert bad is not None
    assert bad.text == "Choose one of the options on the buttons."

    bot_app.app.clock.set(END + timedelta(hours=2))  # type: ignore[attr-defined]
    assert await plan_feedback(bot_app.app) == 0
    async with session_factory() as session:
        planned = await session.scalar(
            select(func.count())
            .select_from(Webinar)
            .where(Webinar.feedback_planned_at.is_not(None))
        )
    assert planned == 0  # switched back on later, the webinar is still asked about
