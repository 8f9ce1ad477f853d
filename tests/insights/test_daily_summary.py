"""The daily summary end to end: switched on in /org, planned once per organizer and day after
the chosen hour (9:00 by default) in the organization's time zone, sent through the outbox in
each organizer's language with the chart; never for organizations that did not ask, never
twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.sandbox import SandboxServer
from bot.services import Services
from bot.services.insight_jobs import plan_summaries
from storage.enums import OutboxKind, OutboxStatus, RefundReason, RefundStatus, Role
from storage.models import OrgMember, OutboxMessage, Refund
from tests.conftest import OWNER_ID
from tests.factories import NOW, make_org, make_user, make_webinar
from tests.insights.conftest import sell

Sessions = async_sessionmaker[AsyncSession]
IVAN, RIVAL, FAR = 5001, 5002, 5003
MORNING = datetime(2026, 11, 23, 8, 5, tzinfo=UTC)  # 09:05 in Rome, 02:05 in Mexico City


async def _world(sessions: Sessions) -> None:
    async with sessions() as session:
        acme = await make_org(session, OWNER_ID, name="Acme", timezone="Europe/Rome")
        ivan = await make_user(session, IVAN, first_name="Ivan", language_code="en")
        ivan.locale = "ru"  # chosen with /language: his summary is in Russian
        session.add(OrgMember(org_id=acme.id, user_id=IVAN, role=Role.ADMIN, created_at=NOW))
        pricing = await make_webinar(
            session, acme, title="Pricing", starts_at=NOW + timedelta(days=3), capacity=20
        )
        # Yesterday in Rome (the 22nd): two sales; a refund of an older sale reached its buyer.
        await sell(session, pricing, 6001, amount=150, at=NOW - timedelta(days=1))
        await sell(session, pricing, 6002, amount=1999, currency="USD", at=NOW - timedelta(days=1))
        refunded = await sell(session, pricing, 6003, at=NOW - timedelta(days=3), refunded=True)
        session.add(
            Refund(
                payment_id=refunded.payment_id,
                status=RefundStatus.SUCCEEDED,
                reason=RefundReason.ORGANIZER,
                idempotency_key="r-6003",
                completed_at=NOW - timedelta(hours=20),
                created_at=NOW - timedelta(hours=20),
            )
        )
        # Today's sale is tomorrow's news.
        await sell(session, pricing, 6004, amount=150, at=NOW)
        await make_org(session, RIVAL, name="Rival")  # never asked for a summary
        await make_user(session, FAR, first_name="Fabio", language_code="es")
        await make_org(
            session,
            FAR,
            name="Far",
            timezone="America/Mexico_City",
            language="es",
            daily_summary=True,
        )
        await session.commit()


async def _summaries(sessions: Sessions) -> dict[OutboxStatus, int]:
    async with sessions() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count())
            .where(OutboxMessage.kind == OutboxKind.SUMMARY)
            .group_by(OutboxMessage.status)
        )
        return {OutboxStatus(status): count for status, count in rows}


async def test_each_organizer_who_asked_gets_one_summary_a_day(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions, clock: FakeClock
) -> None:
    await _world(session_factory)
    app = bot_app.app
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    ivan = sandbox.user(IVAN, first_name="Ivan", language_code="en")
    rival = sandbox.user(RIVAL, first_name="Rita", language_code="en")
    far = sandbox.user(FAR, first_name="Fabio", language_code="es")
    for user in (ivan, rival, far):
        user.started = True

    clock.set(MORNING)
    assert await plan_summaries(app) == 0  # Acme has not asked yet (Far: still night)

    await olga.command("/org")
    card = await olga.next_message()
    assert "Daily summary at 9:00\u202fAM (Europe/Rome): off" in (card.text or "")
    await olga.press(card, text="⬜ 📬 Daily summary")
    hours = await olga.next_message()
    assert "At what time (Europe/Rome)?" in (hours.text or "")
    assert hours.button_texts[:8] == [
        "7:00\u202fAM",
        "8:00\u202fAM",
        "9:00\u202fAM",
        "10:00\u202fAM",
        "12:00\u202fPM",
        "6:00\u202fPM",
        "9:00\u202fPM",
        "✓ off",
    ]
    answer = await olga.press(hours, text="9:00\u202fAM")
    assert answer is not None
    assert answer.text == "Switched on."
    card = await olga.next_message()
    assert "Daily summary at 9:00\u202fAM (Europe/Rome): on" in (card.text or "")
    assert "✅ 📬 Daily summary" in card.button_texts
    # A forged hour changes nothing.
    bad = await olga.forge_callback("ao:sumset:3")
    assert bad is not None
    assert bad.text == "Choose one of the options on the buttons."

    clock.set(MORNING - timedelta(minutes=40))  # 08:25 in Rome: too early
    assert await plan_summaries(app) == 0
    clock.set(MORNING)
    assert await plan_summaries(app) == 2  # Olga and Ivan
    assert await plan_summaries(app) == 0  # any number of runs, replicas, restarts
    await bot_app.outbox.idle()
    await bot_app.outbox.run_until_idle()

    text = await olga.next_message()
    assert "<b>Acme</b>: your day of November 22, 2026" in (text.text or "")
    assert "🎟 2 tickets sold" in text.text
    assert "💵 Revenue: $19.99 · 150 ⭐" in text.text
    assert "↩️ Refunded: 1, 100 ⭐" in text.text
    assert "• Pricing: Nov 26, 2026, 10:00\u202fAM (UTC+01:00) · 🎟 3/20" in text.text
    chart = await olga.next_message()
    assert chart.photo is not None
    assert chart.photo[-1]["width"] == 800
    assert chart.caption == "Sales, last 14 days"

    russian = await ivan.next_message()
    assert "<b>Acme</b>: итоги за 22 ноября 2026\u202fг." in (russian.text or "")
    assert "Продано 2 билета" in russian.text
    assert (await ivan.next_message()).caption == "Продажи за последние 14 дней"
    await rival.expect_silence()
    await far.expect_silence()

    # Later the same day: nothing more. Far's morning comes at 15:00 UTC.
    clock.set(MORNING + timedelta(hours=7))
    assert await plan_summaries(app) == 1
    await bot_app.outbox.idle()
    await bot_app.outbox.run_until_idle()
    assert "<b>Far</b>: tu día" in ((await far.next_message()).text or "")
    await far.expect_silence()  # no sales there: no chart
    await olga.expect_silence()

    # The next morning: one more each, about the 23rd.
    clock.set(MORNING + timedelta(days=1))
    assert await plan_summaries(app) == 2
    await bot_app.outbox.idle()
    await bot_app.outbox.run_until_idle()
    again = await olga.next_message()
    assert "your day of November 23, 2026" in (again.text or "")
    assert "🎟 1 ticket sold" in again.text
    assert "↩️ No refunds." in again.text
    assert (await olga.next_message()).photo is not None
    assert "итоги за 23 ноября" in ((await ivan.next_message()).text or "")
    assert (await ivan.next_message()).photo is not None

    # Switched off after the next one was planned: it is dropped, not sent.
    clock.set(MORNING + timedelta(days=2))
    async with session_factory() as session:  # planned without waking the dispatcher
        assert await Services(session, app).summaries.plan_due() == 2
    await olga.command("/org")
    card = await olga.next_message()
    await olga.press(card, text="✅ 📬 Daily summary")
    await olga.press(await olga.next_message(), text="off")
    await olga.next_message()
    await bot_app.outbox.idle()
    await bot_app.outbox.run_until_idle()
    await olga.expect_silence()
    await ivan.expect_silence()
    assert await _summaries(session_factory) == {OutboxStatus.SENT: 5, OutboxStatus.DROPPED: 2}


async def test_the_summary_comes_at_the_hour_the_organization_chose(
    sandbox: SandboxServer, bot_app: BotApplication, session_factory: Sessions, clock: FakeClock
) -> None:
    await _world(session_factory)
    app = bot_app.app
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/org")
    card = await olga.next_message()
    await olga.press(card, text="⬜ 📬 Daily summary")
    answer = await olga.press(await olga.next_message(), text="6:00\u202fPM")
    assert answer is not None
    assert answer.text == "Switched on."
    card = await olga.next_message()
    assert "Daily summary at 6:00\u202fPM (Europe/Rome): on" in (card.text or "")

    clock.set(MORNING)  # 09:05 in Rome: not yet
    assert await plan_summaries(app) == 0
    clock.set(MORNING + timedelta(hours=9))  # 18:05 in Rome, 11:05 in Mexico City
    assert await plan_summaries(app) == 3  # Olga and Ivan; Far's at its own 9:00

    # Moved to 21:00 the same day: today's summary is not sent twice.
    await olga.press(card, text="✅ 📬 Daily summary")
    hours = await olga.next_message()
    assert "✓ 6:00\u202fPM" in hours.button_texts
    answer = await olga.press(hours, text="9:00\u202fPM")
    assert answer is not None
    assert answer.text == "Saved."
    card = await olga.next_message()
    clock.set(MORNING + timedelta(hours=12, minutes=30))  # 21:35 in Rome
    assert await plan_summaries(app) == 0

    # Switched off: no summary the next evening.
    await olga.press(card, text="✅ 📬 Daily summary")
    answer = await olga.press(await olga.next_message(), text="off")
    assert answer is not None
    assert answer.text == "Switched off."
    card = await olga.next_message()
    assert "Daily summary at 9:00\u202fPM (Europe/Rome): off" in (card.text or "")
    clock.set(MORNING + timedelta(days=1, hours=13))
    assert await plan_summaries(app) == 1  # Far's only
