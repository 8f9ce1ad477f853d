"""Two replicas' intakes on one database, one of them shutting down (a deploy's SIGTERM): what it
is handling keeps its lease to the end, so no other replica handles the same update again, and
what it had not started goes back at once, for another replica to handle now.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.sandbox import SandboxServer
from bot.settings import Settings
from storage.models import InboundUpdate
from tests.bot.test_intake_cost import Gate, raw_message, settle, statuses

LEASE_S = 0.3  # real seconds between renewals: a third of it


@pytest.fixture
async def replicas(
    sandbox: SandboxServer,
    settings: Settings,
    engine: AsyncEngine,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Callable[[], asyncio.Future[tuple[BotApplication, Gate]]]]:
    """Start replicas of the real bot's intake, one slot each, sweeping only when woken."""
    monkeypatch.setattr("bot.intake.SWEEP_S", 3600.0)
    started: list[tuple[BotApplication, Gate]] = []

    async def start() -> tuple[BotApplication, Gate]:
        application = BotApplication(
            settings.model_copy(
                update={
                    "telegram_api_url": sandbox.url,
                    "intake_lease_s": LEASE_S,
                    "update_slots": 1,
                }
            ),
            clock=clock,
            run_scheduler=False,
            migrate=False,
            engine=engine,
        )
        await application.setup()
        application.intake.slots.limit = 1  # one update at a time, whatever the loop's load
        gate = Gate()
        application.dispatcher.sub_routers.insert(0, gate.router)
        gate.router._parent_router = application.dispatcher
        await application.intake.start()
        await asyncio.sleep(0.05)  # the sweep's first round (nothing due) is over
        started.append((application, gate))
        return application, gate

    try:
        yield start  # type: ignore[misc]
    finally:
        for application, gate in started:
            gate.release.set()
            await application.stop()


async def lease_of(session: AsyncSession, update_id: int) -> tuple[int, datetime | None]:
    row = (
        await session.execute(
            select(InboundUpdate.attempts, InboundUpdate.lease_until)
            .where(InboundUpdate.update_id == update_id)
            .execution_options(populate_existing=True)
        )
    ).one()
    await session.commit()
    return row[0], row[1]


async def test_an_update_still_handled_at_shutdown_keeps_its_lease_and_is_handled_once(
    replicas: Callable[[], asyncio.Future[tuple[BotApplication, Gate]]],
    session: AsyncSession,
    clock: FakeClock,
) -> None:
    first, first_gate = await replicas()
    second, second_gate = await replicas()
    await first.intake.accept([raw_message(1, "hold")])
    await asyncio.wait_for(first_gate.held.wait(), 10)

    stopping = asyncio.create_task(first.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # it waits for the handler
    for _ in range(3):
        # Past the lease it held: only a renewal made since keeps the update its own.
        clock.advance(timedelta(seconds=2 * LEASE_S))
        await asyncio.sleep(LEASE_S / 2)
        first.intake.wake()

        async def renewed() -> bool:
            _attempts, until = await lease_of(session, 1)
            return until is not None and until > clock.now()

        await settle(renewed)
        second.intake.wake()
        await asyncio.sleep(0.05)
        assert not second_gate.held.is_set()

    first_gate.release.set()
    await asyncio.wait_for(stopping, 10)
    attempts, _until = await lease_of(session, 1)
    assert attempts == 1  # claimed by nobody else
    assert (await statuses(session))[1].value == "done"
    second.intake.wake()
    await asyncio.sleep(0.1)
    assert not second_gate.held.is_set()


async def test_updates_not_started_at_shutdown_go_to_another_replica_at_once(
    replicas: Callable[[], asyncio.Future[tuple[BotApplication, Gate]]],
    session: AsyncSession,
) -> None:
    first, first_gate = await replicas()
    second, second_gate = await replicas()
    await first.intake.accept([raw_message(1, "hold")])
    await asyncio.wait_for(first_gate.held.wait(), 10)
    await first.intake.accept([raw_message(2, "quick")])  # waits for the one slot
    await asyncio.sleep(0.05)
    assert first_gate.quick == 0

    stopping = asyncio.create_task(first.stop())

    # The clock stands still, so no lease lapses: only a release lets the second replica in.
    async def taken_over() -> bool:
        second.intake.wake()
        return second_gate.quick == 1

    await settle(taken_over)
    assert not stopping.done()  # while the first one still handles its update
    first_gate.release.set()
    await asyncio.wait_for(stopping, 10)
    assert first_gate.quick == 0

    async def both_done() -> bool:  # the second replica writes its done mark right after
        found = await statuses(session)
        return {found[1].value, found[2].value} == {"done"}

    await settle(both_done)
