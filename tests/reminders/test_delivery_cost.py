"""What one delivery costs the database, counted on the real engine: the shape of the dispatcher's
work, pinned so that a change which adds a statement or a transaction per message shows here.

Per access message (one Bot API call: the calendar file with the access as its caption): the
claim (one ``UPDATE ... RETURNING`` for the whole batch, which loads the rows too), the render's
read in one transaction taken after the pace wait (it is the send-time check of the ticket), and
the result with the ticket's ``access_delivered_at``: three transactions, none of them a
session's (``storage.direct``). An access too long for
a caption goes as its text, then the calendar file, with a progress mark between the two: two
calls, four transactions. The render reads the ticket, its webinar, organization, link and
holder's time zone in one Core statement; the result is two statements on SQLite and one on
PostgreSQL (the ticket's mark rides on the row's as a CTE), where the claim, the render's read
and the result each commit on their own, without ``BEGIN`` and ``COMMIT`` round trips. Every
statement is built once: a second message compiles nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import OutboxDispatcher
from storage.enums import AccessMode, OutboxKind, OutboxStatus, TicketStatus
from storage.models import AccessLink, OutboxMessage, Ticket, User
from tests.conftest import BACKEND
from tests.factories import make_org, make_user, make_webinar
from tests.reminders.conftest import NOW, FakeBot, fast_sender, make_ticket

# The access render's one read: ticket, webinar, organization, link and holder, joined.
ACCESS_VIEW = (
    r"SELECT tickets\.id, .*FROM tickets JOIN webinars .*JOIN organizations "
    r".*LEFT OUTER JOIN access_links .*LEFT OUTER JOIN users "
)


class Statements:
    """Every statement and commit the engine runs, by kind (``BEGIN`` left out)."""

    def __init__(self) -> None:
        self.all: list[str] = []
        self.commits = 0
        self.compiled: list[str] = []  # statements SQLAlchemy compiled instead of reusing

    def on_statement(
        self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        statement = re.sub(r"\s+", " ", statement).strip()
        if not statement.upper().startswith("BEGIN"):
            self.all.append(statement)
        if context is not None and context.compiled is not None and context.cache_hit.value:
            self.compiled.append(f"{context.cache_hit.name}: {statement[:80]}")

    def on_commit(self, _conn: Any) -> None:
        self.commits += 1

    def count(self, pattern: str) -> int:
        return sum(1 for statement in self.all if re.match(pattern, statement, re.IGNORECASE))

    def kinds(self) -> Counter[str]:
        return Counter(" ".join(statement.split()[:3]) for statement in self.all)


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[Statements]:
    statements = Statements()
    sync_engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", statements.on_statement)
    event.listen(sync_engine, "commit", statements.on_commit)
    try:
        yield statements
    finally:
        event.remove(sync_engine, "before_cursor_execute", statements.on_statement)
        event.remove(sync_engine, "commit", statements.on_commit)


async def _queued_access(session: AsyncSession, app_context: AppContext, **webinar: Any) -> Ticket:
    """A ticket of buyer 2000 whose access message waits in the outbox (not committed)."""
    org = await make_org(session, 1000)
    made = await make_webinar(session, org, **webinar)
    ticket = await make_ticket(session, made, 2000)
    await Services(session, app_context).access.enqueue(ticket, made)
    return ticket


def _result(statements: Statements, engine: AsyncEngine) -> int:
    """Check the result's statements (the row's sent mark with the ticket's delivery mark);
    returns how many they are."""
    if engine.dialect.name == "postgresql":
        # The result, with the ticket's access_delivered_at as a CTE of the same statement.
        result = r"WITH delivered AS \(UPDATE tickets SET access_delivered_at=.* UPDATE outbox"
        assert statements.count(result + r" SET status=.*sent_at=") == 1
        return 1
    assert statements.count(r"UPDATE outbox SET status=.*sent_at=") == 1
    assert statements.count(r"UPDATE tickets SET access_delivered_at=") == 1
    return 2


async def test_an_access_message_costs_one_call_and_three_transactions(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    ticket = await _queued_access(session, app_context)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))
    sessions_begun: list[object] = []  # a Connection's (a session's) begin, not storage.direct's

    def begun(connection: object) -> None:
        sessions_begun.append(connection)

    event.listen(engine.sync_engine, "begin", begun)
    try:
        with counted(engine) as statements:
            stats = await dispatcher.run_once()
    finally:
        event.remove(engine.sync_engine, "begin", begun)

    assert (stats.sent, fake_bot.calls) == (1, 1)
    assert sessions_begun == []  # claim, render and result each without a session
    [access] = fake_bot.sent  # the calendar file, the access as its caption
    assert access.document is not None
    assert access.caption is not None
    assert "s3cret" in access.caption
    assert statements.count(r"UPDATE outbox SET status=.*attempts=.*RETURNING") == 1  # claim
    assert statements.count(r"SELECT .*FROM outbox") == 0  # the claim loaded the row
    # The render: one read, after the wait (it is the send-time check of the ticket).
    assert statements.count(ACCESS_VIEW) == 1
    assert statements.count(r"SELECT") == 1, statements.kinds()
    assert statements.count(r"UPDATE outbox SET payload=") == 0  # one part: no progress mark
    assert len(statements.all) == 2 + _result(statements, engine), statements.kinds()
    assert statements.commits == 3  # claim, render, result

    await session.rollback()
    delivered = await session.scalar(
        select(Ticket.access_delivered_at).where(Ticket.id == ticket.id)
    )
    assert delivered is not None


@pytest.mark.skipif(BACKEND != "postgres", reason="SQLite's blocks are one transaction each")
async def test_on_postgresql_an_access_message_begins_no_transaction(
    session: AsyncSession,
    app_context: AppContext,
    engine: AsyncEngine,
    fake_bot: FakeBot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim, the render's read and the result are one statement each, and each commits on
    its own: no ``BEGIN`` and no ``COMMIT`` round trips around them."""
    await _queued_access(session, app_context)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))
    begun: list[str] = []
    start = AsyncAdapt_asyncpg_connection._start_transaction

    async def counted_start(adapted: AsyncAdapt_asyncpg_connection) -> None:
        if not adapted.autocommit:
            begun.append("BEGIN")
        await start(adapted)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "_start_transaction", counted_start)
    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert stats.sent == 1
    assert statements.count(ACCESS_VIEW) == 1
    assert _result(statements, engine) == 1
    assert begun == []


async def test_an_access_too_long_for_a_caption_costs_two_calls_and_a_progress_mark(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    room = "https://meet.example.org/room/" + "r" * 1000  # over a caption's 1,024 alone
    ticket = await _queued_access(session, app_context, room_url=room)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert (stats.sent, fake_bot.calls) == (1, 2)
    text, calendar = fake_bot.sent  # today's two parts, in this order
    assert text.text is not None
    assert room in text.text
    assert "s3cret" in text.text
    assert calendar.document is not None
    assert calendar.caption == "Add the webinar to your calendar."
    assert statements.count(ACCESS_VIEW) == 1
    assert statements.count(r"UPDATE outbox SET payload=") == 1  # progress between the parts
    assert len(statements.all) == 3 + _result(statements, engine), statements.kinds()
    assert statements.commits == 4  # claim, render, progress, result

    await session.rollback()
    row = await session.scalar(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id))
    assert row is not None
    assert (row.status, row.payload) == (OutboxStatus.SENT, {"parts_sent": 1})


async def test_a_second_access_message_compiles_no_statement(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    """The dispatcher's and the render's statements are built once and found in SQLAlchemy's
    compiled cache: compiling one costs more CPU than running it."""
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org)
    access = Services(session, app_context).access
    await access.enqueue(await make_ticket(session, webinar, 2000), webinar)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))
    assert (await dispatcher.run_once()).sent == 1
    await access.enqueue(await make_ticket(session, webinar, 2001), webinar)
    await session.commit()

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert stats.sent == 1
    assert statements.compiled == []


async def test_the_access_render_reads_the_link_and_the_holders_zone_in_its_one_statement(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    org = await make_org(session, 1000, timezone="Europe/Rome")
    webinar = await make_webinar(session, org, access_mode=AccessMode.LINKS)
    ticket = await make_ticket(session, webinar, 2000)
    holder = await session.get(User, 2000)
    assert holder is not None
    holder.timezone = "America/New_York"
    session.add(
        AccessLink(
            webinar_id=webinar.id,
            url="https://meet.example/p-2000",
            ticket_id=ticket.id,
            assigned_at=NOW,
            created_at=NOW,
        )
    )
    await Services(session, app_context).access.enqueue(ticket, webinar)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert stats.sent == 1
    [access] = fake_bot.sent
    assert access.document is not None
    assert access.caption is not None
    assert "https://meet.example/p-2000" in access.caption
    assert "your time" in access.caption  # the holder's own zone differs from the organization's
    assert statements.count(ACCESS_VIEW) == 1
    assert statements.count(r"SELECT") == 1, statements.kinds()


async def test_an_access_message_of_a_refunded_ticket_costs_its_read_and_its_drop(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    ticket = await _queued_access(session, app_context)
    ticket.status = TicketStatus.REFUNDED
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert (stats.dropped, fake_bot.sent) == (1, [])
    assert statements.count(ACCESS_VIEW) == 1
    assert statements.count(r"UPDATE outbox SET status=.*last_error=") == 1  # dropped
    assert len(statements.all) == 3, statements.kinds()  # claim, read, drop
    assert statements.commits == 3  # claim, the render's read (a block of its own), drop


async def test_a_batch_of_access_messages_is_claimed_in_one_statement(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org)
    access = Services(session, app_context).access
    for user_id in range(2000, 2010):
        await access.enqueue(await make_ticket(session, webinar, user_id), webinar)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert (stats.claimed, stats.sent, len(fake_bot.sent)) == (10, 10, 10)
    assert statements.count(r"UPDATE outbox SET status=.*attempts=") == 1
    assert statements.count(r"SELECT .*FROM outbox") == 0
    assert statements.count(r"SELECT tickets.status FROM") == 0
    assert statements.commits == 1 + 2 * 10


async def test_a_reminder_is_checked_once_after_its_wait(
    session: AsyncSession,
    app_context: AppContext,
    engine: AsyncEngine,
    clock: FakeClock,
    fake_bot: FakeBot,
) -> None:
    """Reminders are rendered before the wait (a stale one is dropped without taking a share of
    Telegram's budget): their ticket is read once more right before they leave."""
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org, starts_at=clock.now() + timedelta(days=3))
    ticket = await make_ticket(session, webinar, 2000)
    await Services(session, app_context).reminders.plan_for_ticket(ticket, webinar)
    await session.commit()
    clock.set(webinar.starts_at - timedelta(days=1))
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert (stats.sent, stats.by_kind) == (1, {OutboxKind.REMINDER: 1})
    assert statements.count(r"SELECT tickets.status FROM") == 1
    assert statements.count(r"UPDATE outbox SET status=.*sent_at=") == 1
    assert statements.count(r"UPDATE tickets") == 0
    assert statements.commits == 4  # claim, render, check, result


async def test_a_notice_costs_its_claim_and_its_result(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    await make_user(session, 3000)
    await Services(session, app_context).outbox.notice(dedupe_key="n", chat_id=3000, text="hi")
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert stats.sent == 1
    assert len(statements.all) == 2, statements.all
    assert statements.commits == 2
    await session.rollback()
    row = await session.scalar(select(OutboxMessage))
    assert row is not None
    assert row.status == OutboxStatus.SENT
