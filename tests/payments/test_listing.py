"""Provider listings for reconciliation: payments made through the sandbox Bot API server (and
the provider fakes behind its card invoices) are found again by each provider's lister, page by
page, inside their time window, with their refunds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.sandbox import PaymentResult, SandboxServer, SimUser
from bot.sandbox.stripe import LocalStripe
from bot.sandbox.yookassa import FakeYooKassa
from payments import (
    PaymentMethod,
    RefundRequest,
    StarsRefunder,
    StripeRefunder,
    YooKassaRefunder,
    build_invoice,
)
from payments.listing import (
    ListingError,
    ProviderCharge,
    list_star_charges,
    list_stripe_charges,
    list_yookassa_charges,
)
from tests.payments.conftest import SECRET_KEY, SHOP_ID, STRIPE_KEY

TOKEN = "123456:TEST"
STRIPE_TOKEN = "284685063:TEST:stripe"
YOOKASSA_TOKEN = "381764678:TEST:yookassa"
START = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """The sandbox's (and the fake YooKassa's) idea of now, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def unix(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[False, True], ids=["chronological", "newest-first"])
async def sandbox(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[SandboxServer]:
    server = SandboxServer(
        precheckout_timeout=5.0, clock=clock.unix, star_transactions_newest_first=request.param
    )
    await server.start()
    server.add_bot(token=TOKEN, username="webinarpass_bot", first_name="WebinarPass")
    yield server
    await server.stop()
    assert not server.internal_errors, server.internal_errors


@pytest.fixture
async def sandbox_bot(sandbox: SandboxServer) -> AsyncIterator[Bot]:
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
    yield bot
    await bot.session.close()


async def buy(
    bot: Bot, user: SimUser, method: PaymentMethod, payload: str, amount: int, currency: str
) -> PaymentResult:
    """An invoice sent by the bot and paid by ``user``, the pre-checkout answered ok."""
    token = {PaymentMethod.STRIPE: STRIPE_TOKEN, PaymentMethod.YOOKASSA: YOOKASSA_TOKEN}
    kwargs = build_invoice(
        method,
        chat_id=user.id,
        title="Python webinar",
        description="Two hours live",
        payload=payload,
        amount_minor=amount,
        currency=currency,
        provider_token=token.get(method),
        label="Ticket",
    )
    await bot.send_invoice(**kwargs)
    invoice = await user.next_message()
    paying = asyncio.create_task(user.pay(invoice))
    offset = None
    while not paying.done():
        updates = await bot.get_updates(offset=offset, timeout=1)
        if updates:
            offset = updates[-1].update_id + 1
        for update in updates:
            if update.pre_checkout_query:
                await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    result = await paying
    assert result.ok, result
    return result


async def started(sandbox: SandboxServer, user_id: int) -> SimUser:
    user = sandbox.user(user_id, f"Buyer{user_id}")
    await user.start()
    return user


async def collect(listing: AsyncIterator[ProviderCharge]) -> list[ProviderCharge]:
    return [charge async for charge in listing]


def refund_request(method: PaymentMethod, paid: PaymentResult, user_id: int) -> RefundRequest:
    assert paid.telegram_payment_charge_id
    return RefundRequest(
        method=method,
        user_id=user_id,
        telegram_payment_charge_id=paid.telegram_payment_charge_id,
        provider_payment_charge_id=paid.provider_payment_charge_id,
        amount_minor=paid.total_amount,
        currency=paid.currency,
        idempotency_key=f"refund-{paid.telegram_payment_charge_id}",
    )


# -- Stars ----------------------------------------------------------------------------------


async def test_star_transactions_have_telegrams_shape(
    sandbox: SandboxServer, sandbox_bot: Bot, clock: Clock
) -> None:
    alice = await started(sandbox, 1001)
    paid = await buy(sandbox_bot, alice, PaymentMethod.STARS, "order:a", 150, "XTR")
    clock.advance(minutes=5)
    assert (
        await StarsRefunder(sandbox_bot).refund(refund_request(PaymentMethod.STARS, paid, alice.id))
    ).ok

    # aiogram parses the answer into its StarTransactions model: the shape is Telegram's.
    listed = (await sandbox_bot.get_star_transactions()).transactions
    by_direction = {"in" if t.source else "out": t for t in listed}
    incoming, outgoing = by_direction["in"], by_direction["out"]
    assert incoming.id == outgoing.id == paid.telegram_payment_charge_id
    assert (incoming.amount, incoming.date) == (150, START)
    assert incoming.source is not None
    assert incoming.source.type == "user"
    assert incoming.source.transaction_type == "invoice_payment"
    assert incoming.source.invoice_payload == "order:a"
    assert incoming.source.user.id == alice.id
    assert outgoing.receiver is not None
    assert outgoing.receiver.user.id == alice.id
    assert outgoing.date == START + timedelta(minutes=5)

    order = [t.source is None for t in listed]
    assert order == ([True, False] if sandbox.star_transactions_newest_first else [False, True])
    assert (await sandbox_bot.get_star_transactions(offset=1, limit=1)).transactions == listed[1:]
    with pytest.raises(Exception, match="limit"):
        await sandbox_bot.get_star_transactions(limit=101)


async def test_stars_listing_pages_keeps_to_the_window_and_shows_refunds(
    sandbox: SandboxServer, sandbox_bot: Bot, clock: Clock
) -> None:
    buyers = [await started(sandbox, 1001 + n) for n in range(4)]
    paid = []
    for number, buyer in enumerate(buyers):
        paid.append(
            await buy(
                sandbox_bot, buyer, PaymentMethod.STARS, f"order:{number}", 100 + number, "XTR"
            )
        )
        clock.advance(hours=1)
    # The second payment is refunded later, after the window closes.
    refunder = StarsRefunder(sandbox_bot)
    assert (await refunder.refund(refund_request(PaymentMethod.STARS, paid[1], buyers[1].id))).ok

    since, until = START + timedelta(minutes=30), START + timedelta(hours=2, minutes=30)
    found = await collect(list_star_charges(sandbox_bot, since, until, page_size=1))

    assert [c.telegram_payment_charge_id for c in found] == [
        paid[1].telegram_payment_charge_id,
        paid[2].telegram_payment_charge_id,
    ]
    refunded, kept = found
    assert (refunded.refunded, refunded.refunded_minor) == (True, 101)
    assert refunded.refund_ids == (paid[1].telegram_payment_charge_id,)
    assert (kept.refunded, kept.refunded_minor, kept.refund_ids) == (False, 0, ())
    assert kept == ProviderCharge(
        method=PaymentMethod.STARS,
        charge_id=paid[2].telegram_payment_charge_id or "",
        telegram_payment_charge_id=paid[2].telegram_payment_charge_id,
        provider_payment_charge_id=None,
        user_id=buyers[2].id,
        amount_minor=102,
        currency="XTR",
        payload="order:2",
        created_at=START + timedelta(hours=2),
        refunded=False,
        refunded_minor=0,
        refund_ids=(),
    )
    pages = [c.params for c in sandbox.calls_of("getStarTransactions")]
    assert all(p.get("limit") == 1 for p in pages)
    assert len(pages) >= 3  # one transaction a page: the listing did turn pages


async def test_a_stars_listing_failure_is_an_error_not_an_empty_list(
    sandbox: SandboxServer, sandbox_bot: Bot
) -> None:
    sandbox.faults.fail_next("getStarTransactions", status=502)
    with pytest.raises(ListingError, match="stars"):
        await collect(list_star_charges(sandbox_bot, START, START + timedelta(days=1)))


# -- Stripe ---------------------------------------------------------------------------------


class LocalStripeCards:
    """The Stripe side of the sandbox's card invoices: each payment is a localstripe charge."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    async def record_payment(self, *, amount_minor: int, currency: str, description: str) -> str:
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        method = await self.client.v1.payment_methods.create_async(
            params={"type": "card", "card": card}  # type: ignore[typeddict-item]
        )
        charge = await self.client.v1.charges.create_async(
            params={
                "amount": amount_minor,
                "currency": currency.lower(),
                "source": method.id,
                "description": description,
            }
        )
        return str(charge.id)


@pytest.mark.parametrize("sandbox", [False], indirect=True, ids=[""])
async def test_stripe_listing_finds_sandbox_payments_pages_and_shows_refunds(
    sandbox: SandboxServer,
    sandbox_bot: Bot,
    stripe_client: stripe.StripeClient,
    localstripe: LocalStripe,
    stripe_refunder: StripeRefunder,
) -> None:
    sandbox.connect_provider(STRIPE_TOKEN, LocalStripeCards(stripe_client))
    before = datetime.now(UTC).replace(microsecond=0)
    alice, bob = await started(sandbox, 1001), await started(sandbox, 1002)
    first = await buy(sandbox_bot, alice, PaymentMethod.STRIPE, "order:s1", 1999, "USD")
    second = await buy(sandbox_bot, bob, PaymentMethod.STRIPE, "order:s2", 2500, "EUR")
    assert (first.provider_payment_charge_id or "").startswith("ch_")
    refund = await stripe_refunder.refund(refund_request(PaymentMethod.STRIPE, first, alice.id))
    assert refund.ok, refund

    after = datetime.now(UTC) + timedelta(seconds=1)
    # localstripe is shared by the session: other tests' charges may be listed too.
    found = {
        c.charge_id: c
        for c in await collect(
            list_stripe_charges(
                STRIPE_KEY, before, after, api_base=localstripe.api_base, page_size=1
            )
        )
    }
    one, two = (
        found[first.provider_payment_charge_id or ""],
        found[second.provider_payment_charge_id or ""],
    )
    assert (one.method, one.amount_minor, one.currency) == (PaymentMethod.STRIPE, 1999, "USD")
    assert one.provider_payment_charge_id == first.provider_payment_charge_id
    assert (one.refunded, one.refunded_minor, one.refund_ids) == (
        True,
        1999,
        (refund.provider_refund_id,),
    )
    assert (two.amount_minor, two.currency, two.refunded, two.refund_ids) == (
        2500,
        "EUR",
        False,
        (),
    )
    assert before <= one.created_at <= after

    later = await collect(
        list_stripe_charges(
            STRIPE_KEY,
            after + timedelta(hours=1),
            after + timedelta(hours=2),
            api_base=localstripe.api_base,
        )
    )
    assert later == []
    earlier = await collect(
        list_stripe_charges(
            STRIPE_KEY,
            before - timedelta(hours=2),
            before - timedelta(seconds=1),
            api_base=localstripe.api_base,
        )
    )
    assert not {c.charge_id for c in earlier} & set(found)


async def test_a_stripe_listing_failure_is_an_error(localstripe: LocalStripe) -> None:
    with pytest.raises(ListingError, match="stripe"):
        await collect(
            list_stripe_charges(
                "sk_test_x", START, START + timedelta(days=1), api_base="http://127.0.0.1:9"
            )
        )


# -- YooKassa -------------------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", [False], indirect=True, ids=[""])
async def test_yookassa_listing_finds_sandbox_payments_pages_and_shows_refunds(
    sandbox: SandboxServer,
    sandbox_bot: Bot,
    clock: Clock,
    fake_yookassa: FakeYooKassa,
    yookassa_refunder: YooKassaRefunder,
) -> None:
    fake_yookassa.clock = lambda: clock.now
    sandbox.connect_provider(YOOKASSA_TOKEN, fake_yookassa)
    buyers = [await started(sandbox, 1001 + n) for n in range(4)]
    paid = []
    for number, buyer in enumerate(buyers):
        paid.append(
            await buy(
                sandbox_bot,
                buyer,
                PaymentMethod.YOOKASSA,
                f"order:y{number}",
                10000 + number,
                "RUB",
            )
        )
        clock.advance(hours=1)
    # The fake recorded each payment made through the sandbox; its id is Telegram's provider id.
    assert [p.provider_payment_charge_id for p in paid] == list(fake_yookassa.payments)
    refund = await yookassa_refunder.refund(
        refund_request(PaymentMethod.YOOKASSA, paid[2], buyers[2].id)
    )
    assert refund.ok, refund

    since, until = START + timedelta(hours=1), START + timedelta(hours=2)
    found = await collect(
        list_yookassa_charges(
            SHOP_ID, SECRET_KEY, since, until, api_url=fake_yookassa.url, page_size=1
        )
    )

    # Newest first, as YooKassa lists; both bounds inclusive.
    assert [c.provider_payment_charge_id for c in found] == [
        paid[2].provider_payment_charge_id,
        paid[1].provider_payment_charge_id,
    ]
    refunded, kept = found
    assert (refunded.refunded, refunded.refunded_minor, refunded.refund_ids) == (
        True,
        10002,
        (refund.provider_refund_id,),
    )
    assert kept == ProviderCharge(
        method=PaymentMethod.YOOKASSA,
        charge_id=paid[1].provider_payment_charge_id or "",
        telegram_payment_charge_id=None,
        provider_payment_charge_id=paid[1].provider_payment_charge_id,
        user_id=None,
        amount_minor=10001,
        currency="RUB",
        payload=None,
        created_at=START + timedelta(hours=1),
        refunded=False,
        refunded_minor=0,
        refund_ids=(),
    )
    pages = [r for r in fake_yookassa.requests if r.method == "GET" and r.path == "/v3/payments"]
    assert len(pages) == 2  # one payment a page, the second page reached through next_cursor


async def test_yookassa_list_answers_in_yookassas_shape(
    fake_yookassa: FakeYooKassa, clock: Clock
) -> None:
    fake_yookassa.clock = lambda: clock.now
    ids = []
    for _ in range(3):
        ids.append(fake_yookassa.add_payment(1000, metadata={"invoice_payload": "order:1"})["id"])
        clock.advance(seconds=1)
    found = await collect(
        list_yookassa_charges(
            SHOP_ID, SECRET_KEY, START, clock.now, api_url=fake_yookassa.url, page_size=2
        )
    )
    assert [c.charge_id for c in found] == ids[::-1]
    assert {c.payload for c in found} == {"order:1"}


async def test_a_yookassa_listing_failure_is_an_error(fake_yookassa: FakeYooKassa) -> None:
    fake_yookassa.fail_next(500)
    with pytest.raises(ListingError, match="yookassa"):
        await collect(
            list_yookassa_charges(
                SHOP_ID, SECRET_KEY, START, START + timedelta(days=1), api_url=fake_yookassa.url
            )
        )
