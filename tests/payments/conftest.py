"""Fixtures for the payments tests: real SDKs against local fakes, nothing of ours mocked.

- ``localstripe``: one localstripe subprocess for the whole session (it takes ~0.5-1 s).
- ``fake_yookassa``: the in-process fake YooKassa API, one per test.
- ``fake_bot_api`` + ``bot``: a tiny aiohttp stand-in for the one Bot API method Stars
  refunds use, and an aiogram ``Bot`` pointed at it.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web
from yookassa import Configuration, Payment

from bot.sandbox.stripe import LocalStripe
from bot.sandbox.yookassa import FakeYooKassa
from payments.stripe_refunds import StripeRefunder
from payments.yookassa_refunds import YooKassaRefunder

STRIPE_KEY = "sk_test_webinarpass"
SHOP_ID = "100500"
SECRET_KEY = "test_secret_key_1"
BOT_TOKEN = "123456789:AAEtestTokenForSandboxOnly_abcdefghij"


def free_port() -> int:
    """A port nothing listens on (bound and released), to simulate a server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Stripe ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    # Sync session fixture: each test has its own event loop, a subprocess has none.
    with LocalStripe() as server:
        yield server


@pytest.fixture
async def stripe_client(localstripe: LocalStripe) -> AsyncIterator[stripe.StripeClient]:
    """A plain SDK client on localstripe, to create charges the way a shop would."""
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        STRIPE_KEY,
        base_addresses={"api": localstripe.api_base},
        http_client=http,
        max_network_retries=0,
    )
    yield client
    await http.close_async()


MakeCharge = Callable[..., Awaitable[str]]


@pytest.fixture
def make_charge(stripe_client: stripe.StripeClient) -> MakeCharge:
    """``await make_charge(1999, "usd", intent=False)`` -> a paid ``ch_...`` (or ``pi_...``).

    localstripe has no ``tok_visa``/``pm_card_visa``: a PaymentMethod is made from the
    test card number first.
    """

    async def make(amount: int = 1999, currency: str = "usd", *, intent: bool = False) -> str:
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        method = await stripe_client.v1.payment_methods.create_async(
            params={"type": "card", "card": card}  # type: ignore[typeddict-item]
        )
        if intent:
            pi = await stripe_client.v1.payment_intents.create_async(
                params={
                    "amount": amount,
                    "currency": currency,
                    "payment_method": method.id,
                    "confirm": True,
                }
            )
            assert pi.status == "succeeded"
            return pi.id
        charge = await stripe_client.v1.charges.create_async(
            params={"amount": amount, "currency": currency, "source": method.id}
        )
        assert charge.paid
        return charge.id

    return make


@pytest.fixture
async def stripe_refunder(localstripe: LocalStripe) -> AsyncIterator[StripeRefunder]:
    async with StripeRefunder(STRIPE_KEY, localstripe.api_base, max_network_retries=0) as r:
        yield r


# -- YooKassa ----------------------------------------------------------------------------


@pytest.fixture
async def fake_yookassa() -> AsyncIterator[FakeYooKassa]:
    async with FakeYooKassa(shop_id=SHOP_ID, secret_key=SECRET_KEY) as fake:
        yield fake


@pytest.fixture
def yookassa_refunder(fake_yookassa: FakeYooKassa) -> YooKassaRefunder:
    return YooKassaRefunder(SHOP_ID, SECRET_KEY, api_url=fake_yookassa.url, timeout=10)


CreatePayment = Callable[..., Awaitable[str]]


@pytest.fixture
def create_payment(fake_yookassa: FakeYooKassa) -> CreatePayment:
    """``await create_payment("10.00")`` -> id of a succeeded payment, made with the SDK."""

    def create_blocking(value: str, currency: str) -> str:
        Configuration.configure(SHOP_ID, SECRET_KEY, api_url=fake_yookassa.url)
        payment = Payment.create(
            {
                "amount": {"value": value, "currency": currency},
                "capture": True,
                "description": "Webinar ticket",
                "confirmation": {"type": "redirect", "return_url": "https://example.org/"},
            },
            str(uuid.uuid4()),
        )
        assert payment.status == "succeeded"
        return str(payment.id)

    async def create(value: str = "10.00", currency: str = "RUB") -> str:
        return await asyncio.to_thread(create_blocking, value, currency)

    return create


# -- Bot API (Stars) ---------------------------------------------------------------------


@dataclass
class FakeBotApi:
    """Answers ``refundStarPayment`` like Telegram: known charges refund once, then
    ``CHARGE_ALREADY_REFUNDED``; unknown ones get ``CHARGE_NOT_FOUND``."""

    charges: dict[str, int] = field(default_factory=dict)  # charge id -> user id
    refunded: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    next_error: tuple[int, str, dict[str, Any] | None] | None = None
    delay: float = 0.0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["method"].lower() != "refundstarpayment":
            return _tg_error(404, "Not Found: method not found")
        form = dict(await request.post())
        self.calls.append(form)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.next_error is not None:
            status, description, parameters = self.next_error
            self.next_error = None
            return _tg_error(status, description, parameters)
        charge_id = str(form.get("telegram_payment_charge_id", ""))
        user_id = int(str(form.get("user_id", "0")))
        if self.charges.get(charge_id) != user_id:
            return _tg_error(400, "Bad Request: CHARGE_NOT_FOUND")
        if charge_id in self.refunded:
            return _tg_error(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        self.refunded.add(charge_id)
        return web.json_response({"ok": True, "result": True})


def _tg_error(status: int, description: str, parameters: dict[str, Any] | None = None):
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


@pytest.fixture
async def fake_bot_api() -> AsyncIterator[FakeBotApi]:
    fake = FakeBotApi()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", fake.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


def make_bot(base_url: str, *, timeout: float = 5) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(base_url), timeout=timeout)
    return Bot(BOT_TOKEN, session=session)


@pytest.fixture
async def bot(fake_bot_api: FakeBotApi) -> AsyncIterator[Bot]:
    bot = make_bot(fake_bot_api.url)
    yield bot
    await bot.session.close()
