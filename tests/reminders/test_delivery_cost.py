"""What one delivery costs the database, counted on the real engine: the shape of the dispatcher's
work, pinned so that a change which adds a statement or a transaction per message shows here.

Per access message (text, then its calendar file): the claim (one ``UPDATE ... RETURNING`` for
the whole batch, which loads the rows too), the render's reads in one transaction taken after the
pace wait (they are the send-time check of the ticket), the progress mark between the two parts,
and the result with the ticket's ``access_delivered_at``: four transactions, the last of two
statements. The render's own reads belong to the access service and are only bounded here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import OutboxDispatcher
from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage, Ticket
from tests.factories import make_org, make_user, make_webinar
from tests.reminders.conftest import FakeBot, fast_sender, make_ticket

# Reads the access renderer may make (ticket, webinar, organization, link, holder): a bound, not
# the dispatcher's figure.
RENDER_READS_MAX = 5


class Statements:
    """Every statement and commit the engine runs, by kind (``BEGIN`` left out)."""

    def __init__(self) -> None:
        self.all: list[str] = []
        self.commits = 0

    def on_statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statement = re.sub(r"\s+", " ", statement).strip()
        if not statement.upper().startswith("BEGIN"):
            self.all.append(statement)

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


async def test_an_access_message_costs_four_transactions(
    session: AsyncSession, app_context: AppContext, engine: AsyncEngine, fake_bot: FakeBot
) -> None:
    org = await make_org(session, 1000)
    webinar = await make_webinar(session, org)
    ticket = await make_ticket(session, webinar, 2000)
    await Services(session, app_context).access.enqueue(ticket, webinar)
    await session.commit()
    dispatcher = OutboxDispatcher(app_context, fast_sender(fake_bot))

    with counted(engine) as statements:
        stats = await dispatcher.run_once()

    assert (stats.sent, len(fake_bot.sent)) == (1, 2)  # the text, then the calendar file
    assert statements.count(r"UPDATE outbox SET status=.*attempts=.*RETURNING") == 1  # claim
    assert statements.count(r"SELECT .*FROM outbox") == 0  # the claim loaded the row
    assert statements.count(r"UPDATE outbox SET payload=") == 1  # progress between the parts
    assert statements.count(r"UPDATE outbox SET status=.*sent_at=") == 1  # the result
    assert statements.count(r"UPDATE tickets SET access_delivered_at=") == 1
    # No check of its own: the render, after the wait, read the ticket.
    assert statements.count(r"SELECT tickets.status FROM") == 0
    writes = 4
    assert len(statements.all) - writes <= RENDER_READS_MAX, statements.kinds()
    assert statements.commits == 4  # claim, render, progress, result

    await session.rollback()
    delivered = await session.scalar(
        select(Ticket.access_delivered_at).where(Ticket.id == ticket.id)
    )
    assert delivered is not None


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

    assert (stats.claimed, stats.sent, len(fake_bot.sent)) == (10, 10, 20)
    assert statements.count(r"UPDATE outbox SET status=.*attempts=") == 1
    assert statements.count(r"SELECT .*FROM outbox") == 0
    assert statements.count(r"SELECT tickets.status FROM") == 0
    assert statements.commits == 1 + 3 * 10


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
