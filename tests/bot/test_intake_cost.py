"""What the durable intake costs the database per handled update, counted on the real engine.

The shape is pinned, not the time: a stored update costs its share of one insert, and its done
mark rides on the intake's next transaction while anything else is in hand, so a busy process
spends no transaction of its own on marking updates done.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import F, Router
from aiogram.types import Message
from sqlalchemy import event, exc, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.logs import current_update_id
from bot.sandbox import SandboxServer
from bot.settings import Settings
from storage.enums import InboundStatus
from storage.models import InboundUpdate
from tests.conftest import OWNER_ID
from tests.factories import make_org, make_webinar

DONE_MARK = re.compile(r"UPDATE inbound_updates SET status")
STORE = re.compile(r"INSERT INTO inbound_updates")
CLAIM = re.compile(r"UPDATE inbound_updates SET attempts")


class Transactions:
    """Every statement the engine runs, grouped by the transaction (connection) it ran in."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.open: dict[int, list[str]] = {}
        self.committed: list[list[str]] = []

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):
            return
        self.open.setdefault(id(conn), []).append(" ".join(statement.split()))

    def _commit(self, conn: Any) -> None:
        self.committed.append(self.open.pop(id(conn), []))

    def _rollback(self, conn: Any) -> None:
        self.open.pop(id(conn), None)

    def __enter__(self) -> Transactions:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)

    def with_statement(self, pattern: re.Pattern[str]) -> list[list[str]]:
        return [t for t in self.committed if any(pattern.match(s) for s in t)]


def raw_message(update_id: int, text: str) -> dict[str, Any]:
    user = {"id": 7100, "is_bot": False, "first_name": "Tess", "language_code": "en"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": 7100, "type": "private", "first_name": "Tess"},
            "from": user,
            "text": text,
        },
    }


class Gate:
    """A test router: ``hold`` waits until released, ``quick`` ends at once; neither replies."""

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.quick = 0
        self.router = Router(name="gate")
        self.router.message(F.text == "hold")(self._hold)
        self.router.message(F.text == "quick")(self._quick)

    async def _hold(self, _message: Message, session: AsyncSession) -> None:
        await session.commit()  # SQLite's one connection: let the others write meanwhile
        self.held.set()
        await self.release.wait()

    async def _quick(self, _message: Message) -> None:
        self.quick += 1


@pytest.fixture
async def intake_app(
    sandbox: SandboxServer,
    settings: Settings,
    engine: AsyncEngine,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[BotApplication, Gate]]:
    """The real bot's intake and dispatcher, fed as the webhook feeds it (``accept``), with the
    sweep slowed down so that only what a test does runs."""
    monkeypatch.setattr("bot.intake.SWEEP_S", 3600.0)
    application = BotApplication(
        settings.model_copy(update={"telegram_api_url": sandbox.url}),
        clock=clock,
        run_scheduler=False,
        migrate=False,
        engine=engine,
    )
    await application.setup()
    gate = Gate()
    application.dispatcher.sub_routers.insert(0, gate.router)
    gate.router._parent_router = application.dispatcher
    await application.intake.start()
    await asyncio.sleep(0.05)  # the sweep's first round (nothing due) is over
    try:
        yield application, gate
    finally:
        gate.release.set()
        await application.stop()


async def statuses(session: AsyncSession) -> dict[int, InboundStatus]:
    rows = await session.execute(
        select(InboundUpdate.update_id, InboundUpdate.status).execution_options(
            populate_existing=True
        )
    )
    found: dict[int, InboundStatus] = {row[0]: row[1] for row in rows}
    await session.commit()
    return found


async def settle(check: Any) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not settled")


async def test_an_update_handled_alone_costs_one_store_and_one_done_mark(
    intake_app: tuple[BotApplication, Gate], engine: AsyncEngine, session: AsyncSession
) -> None:
    application, gate = intake_app
    intake = application.intake
    await intake.accept([raw_message(1, "quick")])  # the user is stored once, here
    await settle(lambda: _is_done(session, 1))
    with Transactions(engine) as seen:
        await intake.accept([raw_message(2, "quick")])
        await settle(lambda: _is_done(session, 2))
    assert gate.quick == 2
    intake_transactions = seen.with_statement(STORE) + seen.with_statement(DONE_MARK)
    assert [len(t) for t in intake_transactions] == [1, 1], intake_transactions
    # The handler's own session: the known, unchanged user costs one read, no write.
    handler = [t for t in seen.committed if t and t[0].startswith("SELECT users")]
    assert [len(t) for t in handler] == [1], seen.committed


async def _is_done(session: AsyncSession, update_id: int) -> bool:
    return (await statuses(session)).get(update_id) == InboundStatus.DONE


async def test_while_others_are_in_hand_done_marks_ride_on_the_next_store(
    intake_app: tuple[BotApplication, Gate], engine: AsyncEngine, session: AsyncSession
) -> None:
    application, gate = intake_app
    intake = application.intake
    with Transactions(engine) as seen:
        await intake.accept([raw_message(10, "hold")])
        await asyncio.wait_for(gate.held.wait(), 10)
        await intake.accept([raw_message(11, "quick")])
        await settle(lambda: _quick_done(gate, 1))
        await asyncio.sleep(0.1)  # time enough for a done mark of its own: none is written
        assert seen.with_statement(DONE_MARK) == []
        assert (await statuses(session))[11] == InboundStatus.PENDING
        # The next store writes the mark in its own transaction, committed before it returns.
        await intake.accept([raw_message(12, "quick")])
        assert (await statuses(session))[11] == InboundStatus.DONE
        (riding,) = seen.with_statement(DONE_MARK)
        assert [bool(STORE.match(s)) for s in riding] == [False, True], riding  # the mark first
        # The last update in hand ends: nothing else is, so its mark (and 12's) goes at once.
        await settle(lambda: _quick_done(gate, 2))
        gate.release.set()
        await settle(lambda: _all_done(session, {10, 11, 12}))
    marks = seen.with_statement(DONE_MARK)
    assert len(marks) == 2, marks
    assert [len(t) for t in marks] == [2, 1], marks  # the store and its mark; the marks alone
    # Three updates, three stores and two done marks: no transaction for a mark alone but the
    # last one, when the process fell idle.
    stores = seen.with_statement(STORE)
    assert len(stores) == 3
    assert seen.with_statement(CLAIM) == []


async def _quick_done(gate: Gate, n: int) -> bool:
    return gate.quick >= n


async def _all_done(session: AsyncSession, ids: set[int]) -> bool:
    found = await statuses(session)
    return all(found.get(i) == InboundStatus.DONE for i in ids)


async def _a_mark_pending(intake: Any, gate: Gate, first: int) -> None:
    """Update ``first`` is held in its handler, ``first + 1`` handled: its done mark waits for
    the intake's next write."""
    await intake.accept([raw_message(first, "hold")])
    await asyncio.wait_for(gate.held.wait(), 10)
    await intake.accept([raw_message(first + 1, "quick")])
    await settle(lambda: _quick_done(gate, 1))


async def test_a_failed_store_keeps_the_done_marks_it_carried(
    intake_app: tuple[BotApplication, Gate], engine: AsyncEngine, session: AsyncSession
) -> None:
    """A store that fails (Telegram sends the batch again) must not lose the marks it carried."""
    application, gate = intake_app
    intake = application.intake
    await _a_mark_pending(intake, gate, 20)
    await asyncio.sleep(0.05)

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("UPDATE inbound_updates SET status"):
            raise exc.OperationalError(statement, {}, RuntimeError("disk I/O error (injected)"))

    event.listen(engine.sync_engine, "before_cursor_execute", fail)
    try:
        with pytest.raises(Exception, match="injected"):
            await intake.accept([raw_message(22, "quick")])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", fail)
    found = await statuses(session)
    assert 22 not in found  # the whole store rolled back: the batch is not acknowledged
    assert found[21] == InboundStatus.PENDING
    await intake.accept([raw_message(22, "quick")])  # Telegram sends it again
    assert (await statuses(session))[21] == InboundStatus.DONE
    gate.release.set()
    await settle(lambda: _all_done(session, {20, 21, 22}))


async def test_batches_of_any_size_share_one_compiled_store(
    intake_app: tuple[BotApplication, Gate], engine: AsyncEngine, session: AsyncSession
) -> None:
    """The store and the done marks run on the driver (``storage.direct``): planned once per
    batch size, so no batch is compiled again (a batch built as ``.values([...])`` of its
    payloads had no cache key and was). A redelivered update in a batch is skipped, the others
    are held."""
    application, gate = intake_app
    intake = application.intake
    compiled: list[str] = []
    marks: list[str] = []

    def _seen(_conn: Any, _cursor: Any, statement: str, _p: Any, context: Any, _m: Any) -> None:
        if STORE.match(statement):
            compiled.append("prebuilt" if context is None else context.cache_hit.name)
        elif DONE_MARK.match(statement):
            # Run on the driver (storage.direct): planned once per process, no context.
            marks.append("prebuilt" if context is None else context.cache_hit.name)

    event.listen(engine.sync_engine, "before_cursor_execute", _seen)
    try:
        assert await intake.accept([raw_message(30, "quick")]) == 1
        await settle(lambda: _is_done(session, 30))  # the user is stored once, here
        assert await intake.accept([raw_message(30, "quick"), raw_message(31, "quick")]) == 1
        batch = [raw_message(i, "quick") for i in (31, 32, 33, 34)]
        assert await intake.accept(batch) == 3
        assert await intake.accept([raw_message(35, "quick"), raw_message(36, "quick")]) == 2
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", _seen)
    await settle(lambda: _all_done(session, set(range(30, 37))))
    assert gate.quick == 7  # each update handled once
    assert compiled == ["prebuilt"] * 4, compiled
    # The done marks: one prebuilt statement for any number of updates (one or many at once).
    assert marks
    assert set(marks) == {"prebuilt"}, marks


async def test_a_new_users_double_tap_is_handled_once_each_without_a_retry(
    intake_app: tuple[BotApplication, Gate], session: AsyncSession
) -> None:
    """Two updates of a user nobody has stored yet, handled at once: on PostgreSQL both see no
    row and both insert it; the second must take the first's row, not fail on the key."""
    application, gate = intake_app
    await application.intake.accept([raw_message(40, "quick"), raw_message(41, "quick")])
    await settle(lambda: _all_done(session, {40, 41}))
    assert gate.quick == 2
    rows = await session.execute(select(InboundUpdate.update_id, InboundUpdate.attempts))
    assert {row[0]: row[1] for row in rows} == {40: 1, 41: 1}  # no failed attempt, no retry


STARS_BUTTON = "⭐ Paga con Telegram Stars: 100 ⭐"


class StatementsByUpdate:
    """The statements run while each update was handled (the update id the logs stamp)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.by_update: dict[int | None, list[str]] = {}

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.by_update.setdefault(current_update_id.get(), []).append(" ".join(statement.split()))

    def __enter__(self) -> StatementsByUpdate:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)


def reads_user(statements: list[str]) -> bool:
    return any(s.startswith("SELECT users.") for s in statements)


async def test_a_pre_checkout_query_does_not_read_a_user_this_process_just_saw(
    sandbox: SandboxServer, bot_app: BotApplication, engine: AsyncEngine, session: AsyncSession
) -> None:
    org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
    webinar = await make_webinar(session, org, price_stars=100, capacity=20)
    await session.commit()
    bob = sandbox.user(7200, first_name="Bob", language_code="en")
    with StatementsByUpdate(engine) as seen:
        await bob.command("/start", f"w_{webinar.code}")
        card = await bob.next_message()
        await bob.press(card, text=STARS_BUTTON)
        invoice = await bob.next_message()
        assert (await bob.pay(invoice)).ok
        assert "Pagamento ricevuto" in (await bob.next_message()).body  # the access message
        stored = list(
            (await session.scalars(select(InboundUpdate).order_by(InboundUpdate.update_id))).all()
        )
        await session.commit()
    kinds = [(row.kind, reads_user(seen.by_update.get(row.update_id, []))) for row in stored]
    assert kinds == [
        ("message", True),  # /start: the user is stored
        ("callback_query", True),
        ("pre_checkout_query", False),  # the same user, unchanged, not blocked: no read
        ("message", True),  # the payment
    ], kinds


async def test_a_batch_with_a_checkout_is_stored_alone(
    intake_app: tuple[BotApplication, Gate], engine: AsyncEngine, session: AsyncSession
) -> None:
    """The checkout waits for nothing but its own store: pending marks wait for the next write."""
    application, gate = intake_app
    intake = application.intake
    await _a_mark_pending(intake, gate, 30)
    checkout = {
        "update_id": 32,
        "pre_checkout_query": {
            "id": "checkout-32",
            "from": {"id": 7100, "is_bot": False, "first_name": "Tess"},
            "currency": "XTR",
            "total_amount": 1,
            "invoice_payload": "no-such-order",
        },
    }
    with Transactions(engine) as seen:
        await intake.accept([checkout])
    (store,) = seen.with_statement(STORE)
    assert len(store) == 1, store
    assert (await statuses(session))[31] == InboundStatus.PENDING
    with Transactions(engine) as seen:
        await intake.accept([raw_message(33, "quick")])
    (riding,) = seen.with_statement(DONE_MARK)
    assert [bool(STORE.match(s)) for s in riding] == [False, True], riding
    assert (await statuses(session))[31] == InboundStatus.DONE
    gate.release.set()
