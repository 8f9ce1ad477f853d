"""The fakes themselves: what the SDKs and other tests rely on."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import urllib.request
import uuid

import aiohttp
import psutil
import pytest
from yookassa import Configuration, Refund

from bot.sandbox.stripe import LocalStripe
from bot.sandbox.yookassa import FakeYooKassa
from tests.payments.conftest import SECRET_KEY, SHOP_ID

AUTH = "Basic " + base64.b64encode(f"{SHOP_ID}:{SECRET_KEY}".encode()).decode()


async def post(url: str, body: object, **headers: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_fake_yookassa_listens_on_loopback_with_v3_prefix(
    fake_yookassa: FakeYooKassa,
) -> None:
    assert fake_yookassa.url.startswith("http://127.0.0.1:")
    assert fake_yookassa.url.endswith("/v3")


async def test_fake_yookassa_error_shapes(fake_yookassa: FakeYooKassa) -> None:
    payment = fake_yookassa.add_payment(1000)
    refunds = f"{fake_yookassa.url}/refunds"
    body = {"payment_id": payment["id"], "amount": {"value": "1.00", "currency": "RUB"}}

    status, error = await post(refunds, body, **{"Idempotence-Key": "k"})
    assert status == 401
    assert error["type"] == "error"
    assert error["code"] == "invalid_credentials"
    assert error["id"]

    status, error = await post(refunds, body, Authorization=AUTH)
    assert (status, error["parameter"]) == (400, "Idempotence-Key")

    too_much = {**body, "amount": {"value": "10.01", "currency": "RUB"}}
    status, error = await post(refunds, too_much, Authorization=AUTH, **{"Idempotence-Key": "a"})
    assert status == 400
    assert error["code"] == "invalid_request"
    assert error["parameter"] == "amount.value"
    assert error["description"]

    unknown = {**body, "payment_id": str(uuid.uuid4())}
    status, error = await post(refunds, unknown, Authorization=AUTH, **{"Idempotence-Key": "b"})
    assert (status, error["code"]) == (404, "not_found")

    # The same key with other parameters is refused, as YooKassa does.
    status, _ = await post(refunds, body, Authorization=AUTH, **{"Idempotence-Key": "c"})
    assert status == 200
    other = {**body, "amount": {"value": "2.00", "currency": "RUB"}}
    status, error = await post(refunds, other, Authorization=AUTH, **{"Idempotence-Key": "c"})
    assert (status, error["code"]) == (400, "invalid_request")

    assert [r.status for r in fake_yookassa.requests] == [401, 400, 400, 404, 200, 400]


async def test_fake_yookassa_refund_objects_parse_in_the_sdk(
    fake_yookassa: FakeYooKassa,
) -> None:
    payment = fake_yookassa.add_payment(1500, description="Ticket")

    def create_and_fetch() -> tuple[object, object]:
        Configuration.configure(SHOP_ID, SECRET_KEY, api_url=fake_yookassa.url)
        created = Refund.create(
            {"payment_id": payment["id"], "amount": {"value": "5.00", "currency": "RUB"}},
            "key-1",
        )
        return created, Refund.find_one(created.id)

    created, fetched = await asyncio.to_thread(create_and_fetch)
    assert created.id == fetched.id  # type: ignore[attr-defined]
    assert fetched.status == "succeeded"  # type: ignore[attr-defined]
    assert str(fetched.amount.value) == "5.00"  # type: ignore[attr-defined]
    assert fetched.payment_id == payment["id"]  # type: ignore[attr-defined]
    assert payment["refunded_amount"] == {"value": "5.00", "currency": "RUB"}
    assert payment["refundable"] is True


async def test_fake_yookassa_refuses_refunds_of_unpaid_payments(
    fake_yookassa: FakeYooKassa,
) -> None:
    payment = fake_yookassa.add_payment(1000, status="canceled")
    body = {"payment_id": payment["id"], "amount": {"value": "1.00", "currency": "RUB"}}
    status, error = await post(
        f"{fake_yookassa.url}/refunds", body, Authorization=AUTH, **{"Idempotence-Key": "k"}
    )
    assert (status, error["code"]) == (400, "invalid_request")


def test_localstripe_binds_loopback_only_and_keeps_no_pickle(localstripe: LocalStripe) -> None:
    pickle_path = "/tmp/localstripe.pickle"
    existed_before = os.path.exists(pickle_path)
    # A write that stock localstripe would persist to the shared pickle.
    request = urllib.request.Request(
        f"{localstripe.api_base}/v1/customers",
        data=b"email=a%40example.org",
        headers={"Authorization": "Bearer sk_test_webinarpass"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    if not existed_before:
        assert not os.path.exists(pickle_path)

    # Stock localstripe listens on "::" (all interfaces); ours on loopback only.
    assert localstripe.pid is not None
    listening = [
        c.laddr
        for c in psutil.Process(localstripe.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening == [("127.0.0.1", localstripe.port)]


async def test_localstripe_async_start_flush_and_stop() -> None:
    server = LocalStripe()
    async with server:
        port = server.port
        assert server.running
        customers = f"{server.api_base}/v1/customers"
        auth = {"Authorization": "Bearer sk_test_webinarpass"}
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(customers, data={"email": "a@example.org"}) as response:
                assert response.status == 200
            await asyncio.to_thread(server.flush)
            async with http.get(customers) as response:
                assert (await response.json())["data"] == []
    server.stop()  # idempotent
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        _ = server.api_base
