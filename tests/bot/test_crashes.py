"""The real bot as a separate process (``python -m bot``), crashed at chosen points
(``bot/faults.py``) and started again: what was acknowledged to Telegram is never lost, and money
moves exactly once. Also: SIGTERM ends the process gracefully, with exit code 0.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.faults import ENV as CRASH_ENV
from bot.faults import EXIT_CODE as CRASH_EXIT
from bot.sandbox import SandboxServer, SimUser
from storage.database import create_engine, create_session_factory
from storage.enums import InboundStatus, OutboxKind, OutboxStatus
from storage.migrate import upgrade
from storage.models import InboundUpdate, Order, OutboxMessage, Payment, Ticket, Webinar
from tests.conftest import BACKEND, OWNER_ID, TEST_TOKEN, _truncate
from tests.factories import make_org, make_webinar

ROOT = Path(__file__).resolve().parents[2]
STARS_BUTTON = "⭐ Paga con Telegram Stars: 100 ⭐"
CONFIRMATION = "Pagamento ricevuto"
ACCESS = "s3cret"  # the room password, in the access message only
START_S = 60.0  # a cold process imports, migrates and says hello; two cores are shared


@pytest.fixture
async def database(postgres_url: str | None, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A database migrated by Alembic (the bot process migrates at start and checks the head)."""
    if postgres_url is not None:
        engine = create_engine(postgres_url)
        await _truncate(engine)
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
        await upgrade(engine)
    yield engine
    await engine.dispose()


class BotProcess:
    """``python -m bot`` in its own process, its output in a file (read on failure)."""

    def __init__(self, tmp_path: Path, name: str, **env: str) -> None:
        self.log_path = tmp_path / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if k not in {CRASH_ENV, "WEBHOOK_URL"}}
        self.env = {
            **base,
            "PYTHONPATH": str(ROOT),
            "BOT_TOKEN": TEST_TOKEN,
            "BOT_OWNER_IDS": str(OWNER_ID),
            "SEND_RATE_PER_S": "1000",
            "SEND_RATE_PER_CHAT_S": "1000",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.cwd = tmp_path
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> BotProcess:
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=self._log,
        )
        return self

    async def exit_code(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the bot did not exit:\n{self.output()}") from None
        if self._log is not None:
            self._log.close()
        return code

    async def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self.exit_code()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._log is not None:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    async def up(self) -> None:
        """Wait until the process is up (its signal handlers installed: a SIGTERM before that
        ends it as the default action does, exit code -15)."""
        for _ in range(int(START_S * 10)):
            if "webinarpass is up as" in self.log_path.read_text(errors="replace"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the bot did not come up:\n{self.output()}")


@pytest.fixture
async def processes() -> AsyncIterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    for process in started:
        await process.kill()


async def world(engine: AsyncEngine) -> Webinar:
    async with create_session_factory(engine)() as session:
        org = await make_org(session, OWNER_ID, language="it", timezone="Europe/Rome")
        webinar = await make_webinar(session, org, price_stars=100, capacity=20)
        await session.commit()
    return webinar


async def pay(user: SimUser, webinar: Webinar) -> None:
    await user.command("/start", f"w_{webinar.code}")
    card = await user.next_message(timeout=START_S)
    await user.press(card, text=STARS_BUTTON)
    invoice = await user.next_message(timeout=30)
    assert (await user.pay(invoice)).ok


def count(user: SimUser, text: str) -> int:
    """Messages holding ``text``, in their text or their caption (the access message is the
    calendar file with the access as its caption)."""
    return sum(1 for message in user.messages if text in message.body)


async def settled(engine: AsyncEngine) -> dict[str, Any]:
    """What a crash must not have doubled nor lost."""
    async with create_session_factory(engine)() as session:
        payments = list((await session.scalars(select(Payment))).all())
        tickets = list((await session.scalars(select(Ticket))).all())
        access = list(
            (
                await session.scalars(
                    select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.ACCESS)
                )
            ).all()
        )
        updates = list((await session.scalars(select(InboundUpdate))).all())
    paid = [u for u in updates if "successful_payment" in u.payload.get("message", {})]
    return {
        "payments": len(payments),
        "tickets": len(tickets),
        "access": [row.status for row in access],
        "payment_update": [(u.status, u.attempts) for u in paid],
        "open": [u.update_id for u in updates if u.status == InboundStatus.PENDING],
    }


async def wait_settled(engine: AsyncEngine, sandbox: SandboxServer, want: dict[str, Any]) -> None:
    for _ in range(300):
        now = await settled(engine)
        if all(now[key] == value for key, value in want.items()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{now} != {want}\n{sandbox.transcript(last=20)}")


@pytest.mark.parametrize(
    ("point", "confirmations"),
    [
        # Stored and committed, neither handled nor acknowledged: handled once after the restart.
        ("intake.stored:payment", 1),
        # The payment committed, the update not finished: the retry finds it recorded and
        # changes nothing. The access message, which confirms the payment, was planned in the
        # payment's transaction: one confirmation, in it.
        ("payments.recorded", 1),
    ],
)
async def test_a_crash_while_a_payment_is_handled_loses_nothing_and_doubles_nothing(
    sandbox: SandboxServer,
    database: AsyncEngine,
    processes: list[BotProcess],
    tmp_path: Path,
    point: str,
    confirmations: int,
) -> None:
    webinar = await world(database)
    url = database.url.render_as_string(hide_password=False)
    env = {"TELEGRAM_API_URL": sandbox.url, "DATABASE_URL": url}
    first = BotProcess(tmp_path, "first", **env, **{CRASH_ENV: point})
    processes.append(await first.start())
    bob = sandbox.user(6001, first_name="Bob", language_code="en")
    await pay(bob, webinar)
    assert await first.exit_code() == CRASH_EXIT, first.output()

    second = BotProcess(tmp_path, "second", **env)
    processes.append(await second.start())
    await sandbox.wait_until(lambda: count(bob, ACCESS), timeout=START_S, message="access")
    await wait_settled(
        database,
        sandbox,
        {
            "payments": 1,
            "tickets": 1,
            "access": [OutboxStatus.SENT],
            "payment_update": [(InboundStatus.DONE, 2)],
            "open": [],
        },
    )
    bob.drain()
    await bob.expect_silence(1.0)
    assert count(bob, ACCESS) == 1
    assert count(bob, CONFIRMATION) == confirmations
    assert await second.terminate() == 0, second.output()


async def test_a_crash_between_an_order_and_its_invoice_sends_one_invoice_for_one_order(
    sandbox: SandboxServer, database: AsyncEngine, processes: list[BotProcess], tmp_path: Path
) -> None:
    """The buy button's buyer and order are committed (in the use case's own transaction), the
    invoice not sent: the button's update is handled again after the restart, reuses the order
    and sends its invoice once, which pays for one ticket."""
    webinar = await world(database)
    url = database.url.render_as_string(hide_password=False)
    env = {"TELEGRAM_API_URL": sandbox.url, "DATABASE_URL": url}
    first = BotProcess(tmp_path, "first", **env, **{CRASH_ENV: "sales.ordered"})
    processes.append(await first.start())
    eve = sandbox.user(6005, first_name="Eve", language_code="en")
    await eve.command("/start", f"w_{webinar.code}")
    await eve.press(await eve.next_message(timeout=START_S), text=STARS_BUTTON)
    assert await first.exit_code() == CRASH_EXIT, first.output()

    second = BotProcess(tmp_path, "second", **env)
    processes.append(await second.start())
    invoice = await eve.next_message(timeout=START_S)
    assert invoice.invoice is not None
    assert (await eve.pay(invoice)).ok
    await sandbox.wait_until(lambda: count(eve, ACCESS), timeout=START_S, message="access")
    await wait_settled(database, sandbox, {"payments": 1, "tickets": 1, "open": []})
    async with create_session_factory(database)() as session:
        orders = (await session.scalars(select(Order))).all()
    assert len(orders) == 1
    eve.drain()
    await eve.expect_silence(0.5)
    assert sum(1 for message in eve.messages if message.invoice is not None) == 1
    assert await second.terminate() == 0, second.output()


async def test_a_crash_after_the_reply_repeats_the_reply_only(
    sandbox: SandboxServer, database: AsyncEngine, processes: list[BotProcess], tmp_path: Path
) -> None:
    """Handled and answered, not yet marked done: handled again after the restart. A command's
    reply may come twice (documented); a payment would find itself recorded and do nothing."""
    url = database.url.render_as_string(hide_password=False)
    env = {"TELEGRAM_API_URL": sandbox.url, "DATABASE_URL": url}
    first = BotProcess(tmp_path, "first", **env, **{CRASH_ENV: "intake.handled"})
    processes.append(await first.start())
    ann = sandbox.user(6004, first_name="Ann", language_code="en")
    await ann.command("/help")
    help_text = (await ann.next_message(timeout=START_S)).text
    assert await first.exit_code() == CRASH_EXIT, first.output()

    second = BotProcess(tmp_path, "second", **env)
    processes.append(await second.start())
    assert (await ann.next_message(timeout=START_S)).text == help_text
    async with create_session_factory(database)() as session:
        (stored,) = (await session.scalars(select(InboundUpdate))).all()
    assert stored.attempts == 2
    ann.drain()
    await ann.expect_silence(0.5)
    assert await second.terminate() == 0, second.output()


async def test_sigterm_finishes_or_releases_what_is_in_hand_and_exits_0(
    sandbox: SandboxServer, database: AsyncEngine, processes: list[BotProcess], tmp_path: Path
) -> None:
    url = database.url.render_as_string(hide_password=False)
    env = {"TELEGRAM_API_URL": sandbox.url, "DATABASE_URL": url}
    first = BotProcess(tmp_path, "first", **env)
    processes.append(await first.start())
    ann = sandbox.user(6002, first_name="Ann", language_code="en")
    await ann.command("/help")
    await ann.next_message(timeout=START_S)
    for _ in range(5):
        await ann.command("/help")
    # Some of these are being handled, some stored, some not fetched yet: each must end well.
    assert await first.terminate() == 0, first.output()
    assert "stopping: finishing the updates in hand" in first.output()
    async with create_session_factory(database)() as session:
        rows = list((await session.scalars(select(InboundUpdate))).all())
    # Whatever was in hand was finished, or released for the next start: never left leased.
    assert all(row.status == InboundStatus.DONE or row.lease_until is None for row in rows), [
        (row.update_id, row.status, row.lease_until) for row in rows
    ]

    second = BotProcess(tmp_path, "second", **env)
    processes.append(await second.start())
    await sandbox.wait_until(lambda: len(ann.messages) == 6, timeout=START_S, message="6 replies")
    await second.up()  # the first may have finished all six: the second then has nothing to do
    ann.drain()
    await ann.expect_silence(0.5)
    assert await second.terminate() == 0, second.output()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(BACKEND != "postgres", reason="replicas share a PostgreSQL database")
async def test_a_replica_that_dies_mid_update_leaves_it_to_another_after_the_lease(
    sandbox: SandboxServer, database: AsyncEngine, processes: list[BotProcess], tmp_path: Path
) -> None:
    webinar = await world(database)
    url = database.url.render_as_string(hide_password=False)
    secret = secrets.token_urlsafe(32)

    def replica(name: str, **extra: str) -> BotProcess:
        port = free_port()
        return BotProcess(
            tmp_path,
            name,
            TELEGRAM_API_URL=sandbox.url,
            DATABASE_URL=url,
            WEBHOOK_URL=f"http://127.0.0.1:{port}",
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            WEBHOOK_SECRET=secret,
            INTAKE_LEASE_S="3",
            **extra,
        )

    survivor = replica("survivor")
    processes.append(await survivor.start())
    port_of = lambda process: process.env["WEBHOOK_PORT"]  # noqa: E731
    await sandbox.wait_until(
        lambda: port_of(survivor) in sandbox.bot().webhook_url, timeout=START_S
    )
    # The second replica registers its URL last: Telegram (the sandbox) pushes to it.
    doomed = replica("doomed", **{CRASH_ENV: "payments.recorded"})
    processes.append(await doomed.start())
    await sandbox.wait_until(lambda: port_of(doomed) in sandbox.bot().webhook_url, timeout=START_S)

    bob = sandbox.user(6003, first_name="Bob", language_code="en")
    await pay(bob, webinar)
    assert await doomed.exit_code() == CRASH_EXIT, doomed.output()

    # The survivor's sweep claims the update once the dead replica's lease has run out.
    await sandbox.wait_until(lambda: count(bob, ACCESS), timeout=START_S, message="access")
    await wait_settled(
        database,
        sandbox,
        {
            "payments": 1,
            "tickets": 1,
            "access": [OutboxStatus.SENT],
            "payment_update": [(InboundStatus.DONE, 2)],
            "open": [],
        },
    )
    bob.drain()
    await bob.expect_silence(1.0)
    assert count(bob, ACCESS) == 1
    assert await survivor.terminate() == 0, survivor.output()
