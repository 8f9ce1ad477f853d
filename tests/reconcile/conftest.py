"""Fixtures for reconciliation: the real providers' fakes, dated by the test's clock.

The clock starts at the real time, because localstripe dates its charges with it; the sandbox
(Stars transactions) and the fake YooKassa follow the test's clock. localstripe is this
test's own, so no other test's charges are in its listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import FakeClock
from bot.context import AppContext
from bot.factory import create_refunders
from bot.sandbox import SandboxServer, SimUser
from bot.sandbox.stripe import LocalStripe
from bot.sandbox.yookassa import FakeYooKassa
from bot.settings import Settings
from payments import PaymentMethod as ProviderMethod
from payments import build_invoice
from storage.models import Order
from tests.conftest import TEST_TOKEN
from tests.payments.conftest import (  # noqa: F401 - fixtures reused from the payments tests
    SECRET_KEY,
    SHOP_ID,
    STRIPE_KEY,
    fake_yookassa,
)

OWNER_ID = 1000
SECOND_OWNER_ID = 1001


@pytest.fixture
def own_localstripe() -> Iterator[LocalStripe]:
    # One per test (about a second to start): a shared one would list other tests' charges.
    with LocalStripe() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def sandbox(clock: FakeClock) -> AsyncIterator[SandboxServer]:
    server = SandboxServer(clock=lambda: clock.now().timestamp())
    await server.start()
    server.add_bot(token=TEST_TOKEN, username="webinarpass_bot", first_name="WebinarPass")
    yield server
    await server.stop()
    assert not server.internal_errors, server.internal_errors


@pytest.fixture
def dated_yookassa(fake_yookassa: FakeYooKassa, clock: FakeClock) -> FakeYooKassa:  # noqa: F811
    fake_yookassa.clock = clock.now
    return fake_yookassa


@pytest.fixture
def settings(
    settings: Settings, own_localstripe: LocalStripe, dated_yookassa: FakeYooKassa
) -> Settings:
    """Every provider configured; two owners; a sender that does not wait between sends."""
    return settings.model_copy(
        update={
            "bot_owner_ids": frozenset({OWNER_ID, SECOND_OWNER_ID}),
            "stripe_provider_token": SecretStr("284685063:TEST:stripe"),
            "yookassa_provider_token": SecretStr("381764678:TEST:yookassa"),
            "stripe_api_key": SecretStr(STRIPE_KEY),
            "stripe_api_base": own_localstripe.api_base,
            "yookassa_shop_id": SHOP_ID,
            "yookassa_secret_key": SecretStr(SECRET_KEY),
            "yookassa_api_url": dated_yookassa.url,
            "send_rate_per_s": 1000.0,
            "send_rate_per_chat_s": 1000.0,
        }
    )


@pytest.fixture
async def stripe_client(own_localstripe: LocalStripe) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        STRIPE_KEY,
        base_addresses={"api": own_localstripe.api_base},
        http_client=http,
        max_network_retries=0,
    )
    yield client
    await http.close_async()


@pytest.fixture
async def app(app_context: AppContext, sandbox: SandboxServer) -> AsyncIterator[AppContext]:
    """The service-level app: its Bot talks to the sandbox (Stars listing and refunds)."""
    bot = Bot(TEST_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
    app_context.bot = bot
    app_context.refunders = create_refunders(app_context.settings, bot)
    yield app_context
    await app_context.refunders.aclose()
    app_context.bot = None
    await bot.session.close()


async def stripe_charge(
    client: stripe.StripeClient,
    amount: int,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
) -> str:
    """A paid localstripe charge, as Telegram's Stripe payments are (``ch_...``)."""
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    method = await client.v1.payment_methods.create_async(
        params={"type": "card", "card": card}  # type: ignore[typeddict-item]
    )
    params: dict[str, Any] = {"amount": amount, "currency": currency, "source": method.id}
    if metadata:
        params["metadata"] = metadata
    charge = await client.v1.charges.create_async(params=params)  # type: ignore[arg-type]
    assert charge.paid
    return str(charge.id)


async def lost_stars_payment(bot: Bot, user: SimUser, order: Order) -> str:
    """``user`` pays ``order``'s Stars invoice and the bot never sees the payment: Telegram took
    the money, the ``successful_payment`` update was lost. Returns Telegram's charge id."""
    await bot.send_invoice(
        **build_invoice(
            ProviderMethod.STARS,
            chat_id=user.id,
            title="Pricing for founders",
            description="Two hours live",
            payload=order.token,
            amount_minor=order.amount_minor,
            currency="XTR",
            provider_token=None,
            label="Ticket",
        )
    )
    invoice = await user.next_message()
    paying = asyncio.create_task(user.pay(invoice))
    offset: int | None = None
    while not paying.done():
        updates = await bot.get_updates(offset=offset, timeout=1)
        if updates:
            offset = updates[-1].update_id + 1
        for update in updates:
            if update.pre_checkout_query:
                await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    paid = await paying
    assert paid.ok, paid
    assert paid.telegram_payment_charge_id
    # Confirm every update: the successful_payment is gone for good.
    while updates := await bot.get_updates(offset=offset, timeout=0):
        offset = updates[-1].update_id + 1
    return paid.telegram_payment_charge_id


async def all_rows(session: AsyncSession, model: type, *where: Any) -> list[Any]:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    found = list((await session.scalars(statement)).all())
    await session.commit()
    return found
