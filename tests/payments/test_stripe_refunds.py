from __future__ import annotations

import uuid

import pytest
import stripe

from bot.sandbox.stripe import LocalStripe
from payments import PaymentMethod, RefundRequest, StripeRefunder
from tests.payments.conftest import STRIPE_KEY, MakeCharge, free_port


def stripe_request(
    target: str | None, amount: int = 1999, currency: str = "USD", key: str | None = None
) -> RefundRequest:
    return RefundRequest(
        method=PaymentMethod.STRIPE,
        user_id=777,
        telegram_payment_charge_id=f"tg-{uuid.uuid4()}",
        provider_payment_charge_id=target,
        amount_minor=amount,
        currency=currency,
        idempotency_key=key or f"refund-{uuid.uuid4()}",
        reason="organizer cancelled the webinar",
    )


async def test_refund_by_charge(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder, stripe_client: stripe.StripeClient
) -> None:
    charge_id = await make_charge(1999, "usd")
    request = stripe_request(charge_id)
    result = await stripe_refunder.refund(request)
    assert result.ok, result
    assert result.error_code is None
    assert result.provider_refund_id
    assert result.provider_refund_id.startswith("re_")
    assert not result.pending

    charge = await stripe_client.v1.charges.retrieve_async(charge_id)
    assert charge.refunded
    assert charge.amount_refunded == 1999
    refund = await stripe_client.v1.refunds.retrieve_async(result.provider_refund_id)
    assert refund.metadata["telegram_user_id"] == "777"
    assert refund.metadata["telegram_payment_charge_id"] == request.telegram_payment_charge_id
    assert refund.metadata["reason"] == "organizer cancelled the webinar"


async def test_refund_by_payment_intent(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder, stripe_client: stripe.StripeClient
) -> None:
    intent_id = await make_charge(1000, "eur", intent=True)
    result = await stripe_refunder.refund(stripe_request(intent_id, 1000, "EUR"))
    assert result.ok, result
    refund = await stripe_client.v1.refunds.retrieve_async(result.provider_refund_id or "")
    assert refund.payment_intent == intent_id
    assert refund.amount == 1000


async def test_double_refund_is_already_refunded(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder, stripe_client: stripe.StripeClient
) -> None:
    charge_id = await make_charge()
    assert (await stripe_refunder.refund(stripe_request(charge_id))).ok
    again = await stripe_refunder.refund(stripe_request(charge_id))  # a new idempotency key
    assert again.ok
    assert again.error_code == "already_refunded"
    assert again.provider_refund_id is None
    # No second refund was made.
    refunds = await stripe_client.v1.refunds.list_async(params={"charge": charge_id})
    assert len(refunds.data) == 1


async def test_retry_with_same_key_returns_the_same_refund(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder
) -> None:
    charge_id = await make_charge()
    request = stripe_request(charge_id, key="refund-order-17")
    first = await stripe_refunder.refund(request)
    retry = await stripe_refunder.refund(request)
    assert first.ok
    assert retry.ok
    assert retry.error_code is None
    assert retry.provider_refund_id == first.provider_refund_id


async def test_partial_refunds_then_already_refunded(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder
) -> None:
    charge_id = await make_charge(2000)
    assert (await stripe_refunder.refund(stripe_request(charge_id, 500))).ok
    assert (await stripe_refunder.refund(stripe_request(charge_id, 1500))).ok
    last = await stripe_refunder.refund(stripe_request(charge_id, 100))
    assert (last.ok, last.error_code) == (True, "already_refunded")


@pytest.mark.parametrize("target", ["ch_doesnotexist", "pi_doesnotexist"])
async def test_unknown_payment_is_not_found(stripe_refunder: StripeRefunder, target: str) -> None:
    result = await stripe_refunder.refund(stripe_request(target))
    assert (result.ok, result.error_code) == (False, "not_found")


async def test_missing_provider_charge_id_is_not_found(stripe_refunder: StripeRefunder) -> None:
    result = await stripe_refunder.refund(stripe_request(None))
    assert (result.ok, result.error_code) == (False, "not_found")


async def test_currency_mismatch_is_provider_error(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder
) -> None:
    charge_id = await make_charge(1999, "usd")
    result = await stripe_refunder.refund(stripe_request(charge_id, currency="EUR"))
    assert (result.ok, result.error_code) == (False, "provider_error")
    assert "currency" in (result.detail or "")


async def test_localstripe_down_is_network_error() -> None:
    async with StripeRefunder(
        STRIPE_KEY, f"http://127.0.0.1:{free_port()}", max_network_retries=0
    ) as refunder:
        result = await refunder.refund(stripe_request("ch_whatever"))
    assert (result.ok, result.error_code) == (False, "network_error")
    assert result.retryable


async def test_stopped_server_is_network_error() -> None:
    # A real localstripe that goes away mid-life, not just a closed port.
    server = LocalStripe()
    api_base = server.start()
    server.stop()
    assert not server.running
    async with StripeRefunder(STRIPE_KEY, api_base, max_network_retries=0) as refunder:
        result = await refunder.refund(stripe_request("ch_whatever"))
    assert result.error_code == "network_error"


async def test_without_api_key_is_not_configured() -> None:
    async with StripeRefunder("") as refunder:
        result = await refunder.refund(stripe_request("ch_1"))
    assert (result.ok, result.error_code) == (False, "not_configured")


async def test_aclose_is_idempotent(localstripe: LocalStripe) -> None:
    refunder = StripeRefunder(STRIPE_KEY, localstripe.api_base)
    await refunder.aclose()
    await refunder.aclose()
    result = await refunder.refund(stripe_request("ch_1"))
    assert result.error_code == "not_configured"


async def test_refund_status_reads_a_refund(
    make_charge: MakeCharge, stripe_refunder: StripeRefunder
) -> None:
    # localstripe finishes every refund at once, so only the end of the road is seen here;
    # the pending and canceled paths are followed against the fake YooKassa.
    made = await stripe_refunder.refund(stripe_request(await make_charge(1999, "usd")))
    assert made.provider_refund_id
    status = await stripe_refunder.refund_status(made.provider_refund_id)
    assert (status.ok, status.pending, status.provider_refund_id) == (
        True,
        False,
        made.provider_refund_id,
    )
    unknown = await stripe_refunder.refund_status("re_doesnotexist")
    assert (unknown.ok, unknown.error_code) == (False, "not_found")
