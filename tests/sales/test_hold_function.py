"""A checkout's seat hold on PostgreSQL: one statement, its locks held for the server's own work
only (``storage.repositories.sales.CheckoutRepository``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.context import AppContext
from storage.enums import OrderStatus, PaymentMethod
from storage.models import Order, Webinar
from storage.repositories.sales import CheckoutRepository, HoldOutcome, hold_seat_function_sql
from tests.conftest import BACKEND
from tests.sales.test_statements import as_update, world

MIGRATION = next(
    Path(__file__).parents[2].glob("storage/migrations/versions/*_hold_seat_function.py")
)


def test_the_migration_holds_the_function_as_the_counting_rules_render_it() -> None:
    """The function's counts are rendered from the statements' own expressions; the migration
    keeps a copy. A change to the counting rules needs a migration that replaces the function."""
    spec = importlib.util.spec_from_file_location("hold_seat_migration", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert hold_seat_function_sql() == migration.HOLD_SEAT


async def _invoice(app: AppContext, engine: AsyncEngine, session: AsyncSession) -> Order:
    webinar = await world(session, capacity=5)
    await session.commit()
    result, _trace = await as_update(
        app, engine, 5000, "sales.create_invoice", 5000, webinar.id, PaymentMethod.STARS
    )
    return result.order  # type: ignore[no-any-return]


def _checkout(order: Order) -> dict[str, object]:
    return {
        "user_id": 5000,
        "payload": order.token,
        "total_amount": order.amount_minor,
        "currency": order.currency,
    }


async def _status(session: AsyncSession, order: Order) -> str:
    found = await session.scalar(select(Order.status).where(Order.id == order.id))
    await session.commit()
    return str(found)


@pytest.mark.skipif(BACKEND != "postgres", reason="row versions and row locks: PostgreSQL")
async def test_a_webinar_changed_after_the_read_is_read_again(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    order = await _invoice(stars_app, engine, session)
    now = stars_app.clock.now()
    async with stars_app.transaction(autocommit=True) as transaction:
        checkout = CheckoutRepository(transaction)
        found = await checkout.order_context(order.token)
        assert found is not None
        assert found.versions is not None
        # An organizer edits the webinar between the checkout's read and its hold.
        await session.execute(
            update(Webinar).where(Webinar.id == order.webinar_id).values(title="Moved")
        )
        await session.commit()
        hold = await checkout.hold_seat(found, until=now, now=now)
    assert hold.outcome == HoldOutcome.STALE
    assert await _status(session, order) == OrderStatus.CREATED  # nothing written
    # The service reads again, and holds.
    answer, _trace = await as_update(
        stars_app, engine, 5000, "sales.pre_checkout", **_checkout(order)
    )
    assert answer.ok
    assert await _status(session, order) == OrderStatus.HELD


@pytest.mark.skipif(BACKEND != "postgres", reason="row locks: PostgreSQL")
async def test_no_lock_outlives_the_hold(
    session: AsyncSession, stars_app: AppContext, engine: AsyncEngine
) -> None:
    order = await _invoice(stars_app, engine, session)
    async with stars_app.transaction(autocommit=True) as transaction:
        checkout = CheckoutRepository(transaction)
        found = await checkout.order_context(order.token)
        assert found is not None
        now = stars_app.clock.now()
        hold = await checkout.hold_seat(found, until=now, now=now)
        assert hold.outcome == HoldOutcome.HELD
        # Still inside the checkout's block: its locks ended with its statement.
        for table, row_id in (("webinars", order.webinar_id), ("orders", order.id)):
            await session.execute(
                text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE NOWAIT"), {"id": row_id}
            )
        await session.commit()
