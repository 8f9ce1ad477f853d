from __future__ import annotations

import asyncio
import uuid

from bot.sandbox.yookassa import FakeYooKassa
from payments import PaymentMethod, RefundRequest, YooKassaRefunder
from tests.payments.conftest import SECRET_KEY, SHOP_ID, CreatePayment, free_port


def yk_request(
    payment_id: str | None, amount: int = 1000, key: str | None = None, reason: str | None = None
) -> RefundRequest:
    return RefundRequest(
        method=PaymentMethod.YOOKASSA,
        user_id=777,
        telegram_payment_charge_id=f"tg-{uuid.uuid4()}",
        provider_payment_charge_id=payment_id,
        amount_minor=amount,
        currency="RUB",
        idempotency_key=key or f"refund-{uuid.uuid4()}",
        reason=reason,
    )


async def test_refund_ok(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    result = await yookassa_refunder.refund(yk_request(payment_id, reason="webinar cancelled"))
    assert result.ok, result
    assert result.error_code is None
    assert not result.pending
    assert result.provider_refund_id in fake_yookassa.refunds

    sent = fake_yookassa.requests[-1]
    assert (sent.method, sent.path, sent.status) == ("POST", "/v3/refunds", 200)
    assert sent.json["payment_id"] == payment_id
    assert sent.json["amount"] == {"value": "10.00", "currency": "RUB"}
    assert sent.json["description"] == "webinar cancelled"
    assert sent.json["metadata"]["telegram_user_id"] == "777"
    assert sent.headers["Idempotence-Key"].startswith("refund-")
    assert fake_yookassa.payments[payment_id]["refunded_amount"]["value"] == "10.00"


async def test_idempotent_retry_returns_same_refund(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    request = yk_request(payment_id, 400, key="refund-order-17")
    first = await yookassa_refunder.refund(request)
    retry = await yookassa_refunder.refund(request)
    assert first.ok
    assert retry.ok
    assert retry.provider_refund_id == first.provider_refund_id
    assert len(fake_yookassa.refunds_for(payment_id)) == 1
    assert fake_yookassa.payments[payment_id]["refunded_amount"]["value"] == "4.00"


async def test_long_idempotency_key_is_hashed_to_yookassa_limit(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    request = yk_request(payment_id, key="refund:" + "x" * 100)
    first = await yookassa_refunder.refund(request)
    retry = await yookassa_refunder.refund(request)
    assert first.ok
    assert retry.provider_refund_id == first.provider_refund_id
    assert len(fake_yookassa.requests[-1].headers["Idempotence-Key"]) == 64


async def test_over_refund_is_provider_error(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    assert (await yookassa_refunder.refund(yk_request(payment_id, 600))).ok
    result = await yookassa_refunder.refund(yk_request(payment_id, 600))
    assert (result.ok, result.error_code) == (False, "provider_error")
    assert "invalid_request" in (result.detail or "")
    assert "amount.value" in (result.detail or "")
    assert len(fake_yookassa.refunds_for(payment_id)) == 1


async def test_refund_of_fully_refunded_payment_is_already_refunded(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    assert (await yookassa_refunder.refund(yk_request(payment_id))).ok
    again = await yookassa_refunder.refund(yk_request(payment_id))  # a new key
    assert (again.ok, again.error_code) == (True, "already_refunded")
    assert len(fake_yookassa.refunds_for(payment_id)) == 1


async def test_unknown_payment_is_not_found(yookassa_refunder: YooKassaRefunder) -> None:
    result = await yookassa_refunder.refund(yk_request(str(uuid.uuid4())))
    assert (result.ok, result.error_code) == (False, "not_found")
    assert "not_found" in (result.detail or "")


async def test_malformed_payment_id_is_not_found(yookassa_refunder: YooKassaRefunder) -> None:
    for payment_id in ("ch_123", None):
        result = await yookassa_refunder.refund(yk_request(payment_id))
        assert (result.ok, result.error_code) == (False, "not_found")


async def test_wrong_credentials_are_not_configured(
    fake_yookassa: FakeYooKassa, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    refunder = YooKassaRefunder(SHOP_ID, "wrong-secret", api_url=fake_yookassa.url)
    result = await refunder.refund(yk_request(payment_id))
    assert (result.ok, result.error_code) == (False, "not_configured")
    assert "invalid_credentials" in (result.detail or "")
    assert fake_yookassa.requests[-1].status == 401
    assert fake_yookassa.refunds_for(payment_id) == []


async def test_empty_credentials_are_not_configured() -> None:
    result = await YooKassaRefunder("", "").refund(yk_request(str(uuid.uuid4())))
    assert (result.ok, result.error_code) == (False, "not_configured")


async def test_server_error_is_network_error_and_retry_succeeds(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    request = yk_request(payment_id)
    fake_yookassa.fail_next(500)
    failed = await yookassa_refunder.refund(request)
    assert (failed.ok, failed.error_code) == (False, "network_error")
    assert failed.retryable
    assert (await yookassa_refunder.refund(request)).ok


async def test_server_down_is_network_error() -> None:
    refunder = YooKassaRefunder(SHOP_ID, SECRET_KEY, api_url=f"http://127.0.0.1:{free_port()}/v3")
    result = await refunder.refund(yk_request(str(uuid.uuid4())))
    assert (result.ok, result.error_code) == (False, "network_error")
    assert "Connection" in (result.detail or "")


async def test_slow_server_is_network_error(
    fake_yookassa: FakeYooKassa, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    fake_yookassa.delay = 0.5
    refunder = YooKassaRefunder(SHOP_ID, SECRET_KEY, api_url=fake_yookassa.url, timeout=0.1)
    result = await refunder.refund(yk_request(payment_id))
    assert (result.ok, result.error_code) == (False, "network_error")
    assert "0.1s" in (result.detail or "")
    # Let the abandoned SDK call finish before the fake stops.
    await asyncio.sleep(0.6)


async def test_pending_refund_counts_as_ok(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    fake_yookassa.refund_status = "pending"
    result = await yookassa_refunder.refund(yk_request(payment_id))
    assert result.ok
    assert result.pending
    assert result.provider_refund_id


async def test_two_shops_in_parallel_do_not_mix_credentials() -> None:
    # yookassa.Configuration is global. Concurrent refunds for two shops must each reach
    # their own shop with their own credentials (a smoke test: the race the refunder's
    # lock prevents is too narrow to provoke reliably from here).
    async with (
        FakeYooKassa(shop_id="111", secret_key="secret-a") as shop_a,
        FakeYooKassa(shop_id="222", secret_key="secret-b") as shop_b,
    ):
        refunder_a = YooKassaRefunder("111", "secret-a", api_url=shop_a.url)
        refunder_b = YooKassaRefunder("222", "secret-b", api_url=shop_b.url)
        payments_a = [shop_a.add_payment(1000)["id"] for _ in range(10)]
        payments_b = [shop_b.add_payment(1000)["id"] for _ in range(10)]
        results = await asyncio.gather(
            *(refunder_a.refund(yk_request(p)) for p in payments_a),
            *(refunder_b.refund(yk_request(p)) for p in payments_b),
        )
    assert all(r.ok for r in results), results
    assert {r.status for r in shop_a.requests} == {200}
    assert {r.status for r in shop_b.requests} == {200}


async def test_a_pending_refund_is_followed_to_success_with_find_one(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    fake_yookassa.refund_status = "pending"
    accepted = await yookassa_refunder.refund(yk_request(payment_id))
    assert accepted.provider_refund_id
    refund_id = accepted.provider_refund_id

    still = await yookassa_refunder.refund_status(refund_id)
    assert (still.ok, still.pending, still.provider_refund_id) == (True, True, refund_id)
    assert fake_yookassa.requests[-1].path == f"/v3/refunds/{refund_id}"

    fake_yookassa.settle_refund(refund_id, "succeeded")
    done = await yookassa_refunder.refund_status(refund_id)
    assert (done.ok, done.pending, done.error_code) == (True, False, None)


async def test_a_pending_refund_the_provider_cancels_is_refund_canceled(
    fake_yookassa: FakeYooKassa, yookassa_refunder: YooKassaRefunder, create_payment: CreatePayment
) -> None:
    payment_id = await create_payment("10.00")
    fake_yookassa.refund_status = "pending"
    accepted = await yookassa_refunder.refund(yk_request(payment_id))
    assert accepted.provider_refund_id
    assert fake_yookassa.payments[payment_id]["refundable"] is False

    fake_yookassa.settle_refund(
        accepted.provider_refund_id, "canceled", reason="insufficient_funds"
    )
    result = await yookassa_refunder.refund_status(accepted.provider_refund_id)
    assert (result.ok, result.error_code) == (False, "refund_canceled")
    assert "insufficient_funds" in (result.detail or "")
    # The money was never sent: the payment can be refunded again, with a new key.
    assert fake_yookassa.payments[payment_id]["refunded_amount"]["value"] == "0.00"
    assert (await yookassa_refunder.refund(yk_request(payment_id))).ok


async def test_following_an_unknown_refund_or_an_unreachable_server(
    yookassa_refunder: YooKassaRefunder,
) -> None:
    unknown = await yookassa_refunder.refund_status(str(uuid.uuid4()))
    assert (unknown.ok, unknown.error_code) == (False, "not_found")
    down = YooKassaRefunder(SHOP_ID, SECRET_KEY, api_url=f"http://127.0.0.1:{free_port()}/v3")
    unreachable = await down.refund_status(str(uuid.uuid4()))
    assert (unreachable.ok, unreachable.error_code) == (False, "network_error")


async def test_a_hung_yookassa_never_takes_the_threads_the_bot_needs(
    fake_yookassa: FakeYooKassa, create_payment: CreatePayment
) -> None:
    """Refunds against a provider that does not answer: each SDK call ends at its own HTTP
    timeout, on the SDK's own threads, so the event loop's default executor (aiohttp resolves
    host names there) stays free however many refunds queue up behind the SDK's lock."""
    payment_id = await create_payment("10.00")
    fake_yookassa.delay = 0.6
    refunder = YooKassaRefunder(SHOP_ID, SECRET_KEY, api_url=fake_yookassa.url, timeout=0.3)
    loop = asyncio.get_running_loop()
    calls = [asyncio.create_task(refunder.refund(yk_request(payment_id))) for _ in range(12)]
    await asyncio.sleep(0.1)
    resolved = await asyncio.wait_for(loop.run_in_executor(None, lambda: "resolved"), 2.0)
    assert resolved == "resolved"
    results = await asyncio.gather(*calls)
    assert {result.error_code for result in results} == {"network_error"}
    fake_yookassa.delay = 0.0
    await asyncio.sleep(0.7)  # the last abandoned calls end at their HTTP timeout
