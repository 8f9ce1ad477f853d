"""``storage.greenlets.in_greenlet``: SQLAlchemy's ``greenlet_spawn`` on kept greenlets, with the
same protocol, context and errors."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from greenlet import getcurrent
from sqlalchemy.util import await_

from storage import greenlets
from storage.greenlets import in_greenlet

urgency: contextvars.ContextVar[int] = contextvars.ContextVar("urgency", default=2)


async def later(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def failing() -> None:
    await asyncio.sleep(0)
    raise LookupError("from the driver")


def sync_code(value: int) -> tuple[int, int]:
    """What SQLAlchemy's sync code does: await the driver, twice, from a plain function."""
    return await_(later(value)), await_(later(value + 1))


async def test_a_call_awaits_the_driver_and_returns_its_value() -> None:
    assert await in_greenlet(sync_code, 40) == (40, 41)


async def test_the_greenlet_is_kept_for_the_next_call() -> None:
    first = await in_greenlet(getcurrent)
    second = await in_greenlet(getcurrent)
    assert first is second
    assert first is not getcurrent()
    assert await in_greenlet(sync_code, 1) == (1, 2)  # still serving after a call that awaited


async def test_the_call_sees_the_callers_context_variables() -> None:
    async def in_task(value: int) -> int:
        urgency.set(value)
        return await in_greenlet(urgency.get)

    # One kept greenlet serves tasks of different contexts in turn, and several at once.
    assert await asyncio.create_task(in_task(0)) == 0
    assert await asyncio.create_task(in_task(1)) == 1
    assert await asyncio.gather(in_task(5), in_task(6)) == [5, 6]
    assert await in_greenlet(urgency.get) == 2


async def test_an_error_is_raised_in_the_caller_and_a_drivers_error_reaches_the_code() -> None:
    def raises() -> None:
        raise ValueError("from the sync code")

    with pytest.raises(ValueError, match="from the sync code"):
        await in_greenlet(raises)

    def handles() -> str:
        try:
            await_(failing())
        except LookupError as error:
            return f"handled: {error}"
        return "not raised"

    assert await in_greenlet(handles) == "handled: from the driver"

    def lets_through() -> None:
        await_(failing())

    with pytest.raises(LookupError, match="from the driver"):
        await in_greenlet(lets_through)
    assert await in_greenlet(sync_code, 7) == (7, 8)


async def test_a_cancelled_caller_cancels_the_code_and_the_greenlet_serves_again() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def waits() -> None:
        await_(forever())

    task = asyncio.create_task(in_greenlet(waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await in_greenlet(sync_code, 3) == (3, 4)


async def test_at_most_a_few_greenlets_are_kept() -> None:
    release = asyncio.Event()

    async def held() -> None:
        await release.wait()

    def waits() -> None:
        await_(held())

    calls = [asyncio.create_task(in_greenlet(waits)) for _ in range(greenlets.KEPT + 10)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*calls)
    assert len(greenlets._idle.workers) == greenlets.KEPT
