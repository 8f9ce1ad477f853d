"""Fixtures for selling: real services on the test database, real refunders against local fakes.

Stars refunds go through a real ``StarsRefunder`` (aiogram ``Bot``) to a small fake of
``refundStarPayment``; Stripe and YooKassa through their real SDKs to localstripe and the
project's fake YooKassa (fixtures shared with tests/payments).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import count

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.factory import create_refunders
from bot.services import Services
from bot.services.purchases import PaymentOutcome
from bot.services.refund_worker import RefundWorker
from bot.services.refunds import RefundStatusCode
from bot.services.sales import CheckoutAnswer, InvoiceResult
from bot.settings import Settings
from storage.enums import PaymentMethod
from storage.models import Order, Webinar
from tests.factories import make_user
from tests.payments.conftest import (  # noqa: F401 - fixtures reused from the payments tests
    SECRET_KEY,
    SHOP_ID,
    STRIPE_KEY,
    FakeBotApi,
    create_payment,
    fake_bot_api,
    fake_yookassa,
    localstripe,
    make_bot,
    make_charge,
    stripe_client,
)

OWNER_ID = 1000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Card methods configured, and a sender that does not make tests wait a second per chat."""
    return settings.model_copy(
        update={
            "stripe_provider_token": SecretStr("284685063:TEST:stripe"),
            "yookassa_provider_token": SecretStr("381764678:TEST:yookassa"),
            "send_rate_per_s": 1000.0,
            "send_rate_per_chat_s": 1000.0,
        }
    )


@pytest.fixture
async def stars_app(
    app_context: AppContext,
    fake_bot_api: FakeBotApi,  # noqa: F811 - the imported fixture
) -> AsyncIterator[AppContext]:
    """The app with a Bot whose ``refundStarPayment`` goes to the fake, and the refunders the
    settings configure (built once, as the application does)."""
    bot = make_bot(fake_bot_api.url)
    app_context.bot = bot
    app_context.refunders = create_refunders(app_context.settings, bot)
    yield app_context
    await app_context.refunders.aclose()
    app_context.bot = None
    await bot.session.close()


_charges = count(1)


def charge_id() -> str:
    return f"stxTEST{next(_charges):08d}"


@dataclass
class Buyer:
    """One buyer going through the service calls the handlers make, on its own session."""

    app: AppContext
    user_id: int
    fake: FakeBotApi | None = None
    work_refunds: bool = True

    async def _run(self, name: str, *args: object, service: str = "sales", **kwargs: object):  # type: ignore[no-untyped-def]
        async with self.app.session_factory() as session:
            return await getattr(getattr(Services(session, self.app), service), name)(
                *args, **kwargs
            )

    async def invoice(
        self, webinar: Webinar, method: PaymentMethod = PaymentMethod.STARS
    ) -> InvoiceResult:
        return await self._run("create_invoice", self.user_id, webinar.id, method)

    async def checkout(
        self, order: Order, *, amount: int | None = None, currency: str | None = None
    ) -> CheckoutAnswer:
        return await self._run(
            "pre_checkout",
            user_id=self.user_id,
            payload=order.token,
            total_amount=order.amount_minor if amount is None else amount,
            currency=currency or order.currency,
        )

    async def pay(
        self, order: Order, *, charge: str | None = None, provider_charge: str | None = None
    ) -> PaymentOutcome:
        charge = charge or charge_id()
        if self.fake is not None:
            self.fake.charges[charge] = self.user_id
        outcome = await self._run(
            "complete_payment",
            service="purchases",
            user_id=self.user_id,
            payload=order.token,
            total_amount=order.amount_minor,
            currency=order.currency,
            telegram_charge_id=charge,
            provider_charge_id=provider_charge,
        )
        if self.work_refunds:
            # What the wake-up after the commit makes the refund worker do in the bot.
            await refunds_done(self.app)
        return outcome

    async def buy(self, webinar: Webinar, method: PaymentMethod = PaymentMethod.STARS):  # type: ignore[no-untyped-def]
        result = await self.invoice(webinar, method)
        assert result.order is not None, result.refusal
        answer = await self.checkout(result.order)
        assert answer.ok, answer.error_message
        return result.order, await self.pay(result.order)


async def add_buyers(session: AsyncSession, first: int, n: int) -> list[int]:
    ids = list(range(first, first + n))
    for user_id in ids:
        await make_user(session, user_id, first_name=f"Buyer{user_id}")
    await session.commit()
    return ids


async def refunds_done(app: AppContext) -> int:
    """Let the refund worker process every refund due now (what its job does in production)."""
    return await RefundWorker(app).run_until_idle()


async def refund_now(app: AppContext, ticket_id: int, by: int | None = OWNER_ID):  # type: ignore[no-untyped-def]
    """An organizer's refund, asked for and then processed by the worker, as the bot does it."""
    async with app.session_factory() as session:
        queued = await Services(session, app).refunds.refund_ticket(ticket_id, requested_by=by)
    if queued.refund_id is None or queued.status != RefundStatusCode.QUEUED:
        return queued
    async with app.session_factory() as session:
        return await Services(session, app).refunds.run(queued.refund_id)


__all__ = ["OWNER_ID", "Buyer", "add_buyers", "charge_id", "refund_now", "refunds_done"]
