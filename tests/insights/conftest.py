"""Fixtures for charts, daily summaries and feedback."""

from __future__ import annotations

import struct
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from storage.enums import OrderStatus, PaymentMethod, PaymentStatus, TicketStatus
from storage.models import Order, Payment, Ticket, Webinar
from tests.factories import NOW, make_user


async def sell(
    session: AsyncSession,
    webinar: Webinar,
    user_id: int,
    *,
    amount: int = 100,
    currency: str = "XTR",
    at: datetime = NOW,
    refunded: bool = False,
    language_code: str = "en",
) -> Ticket:
    """A paid ticket as the selling flow leaves it (written straight, not through sales)."""
    await make_user(session, user_id, first_name=f"P{user_id}", language_code=language_code)
    method = PaymentMethod.STARS if currency == "XTR" else PaymentMethod.STRIPE
    order = Order(
        token=f"t{user_id}-{webinar.id}-{at.timestamp()}",
        webinar_id=webinar.id,
        user_id=user_id,
        method=method,
        amount_minor=amount,
        currency=currency,
        status=OrderStatus.REFUNDED if refunded else OrderStatus.PAID,
        created_at=at,
    )
    session.add(order)
    await session.flush()
    payment = Payment(
        order_id=order.id,
        user_id=user_id,
        method=method,
        telegram_payment_charge_id=f"ch-{order.id}",
        amount_minor=amount,
        currency=currency,
        status=PaymentStatus.REFUNDED if refunded else PaymentStatus.SUCCEEDED,
        created_at=at,
    )
    session.add(payment)
    await session.flush()
    ticket = Ticket(
        order_id=order.id,
        payment_id=payment.id,
        webinar_id=webinar.id,
        user_id=user_id,
        status=TicketStatus.REFUNDED if refunded else TicketStatus.ACTIVE,
        created_at=at,
    )
    session.add(ticket)
    await session.flush()
    return ticket


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header; fails on anything that is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
