from __future__ import annotations

import pytest
from aiogram import Bot

from payments import PaymentMethod, RefundRequest, StarsRefunder
from tests.payments.conftest import FakeBotApi, free_port, make_bot


def stars_request(charge_id: str = "stxCHARGE1", user_id: int = 777) -> RefundRequest:
    return RefundRequest(
        method=PaymentMethod.STARS,
        user_id=user_id,
        telegram_payment_charge_id=charge_id,
        provider_payment_charge_id=None,
        amount_minor=250,
        currency="XTR",
        idempotency_key="refund-stars-1",
    )


async def test_refund_ok(fake_bot_api: FakeBotApi, bot: Bot) -> None:
    fake_bot_api.charges["stxCHARGE1"] = 777
    result = await StarsRefunder(bot).refund(stars_request())
    assert result.ok
    assert result.error_code is None
    assert fake_bot_api.calls == [{"user_id": "777", "telegram_payment_charge_id": "stxCHARGE1"}]
    assert "stxCHARGE1" in fake_bot_api.refunded


async def test_second_refund_is_already_refunded_and_ok(fake_bot_api: FakeBotApi, bot: Bot) -> None:
    fake_bot_api.charges["stxCHARGE1"] = 777
    refunder = StarsRefunder(bot)
    assert (await refunder.refund(stars_request())).ok
    again = await refunder.refund(stars_request())
    assert again.ok
    assert again.error_code == "already_refunded"
    assert "CHARGE_ALREADY_REFUNDED" in (again.detail or "")


async def test_unknown_charge_is_not_found(fake_bot_api: FakeBotApi, bot: Bot) -> None:
    result = await StarsRefunder(bot).refund(stars_request("stxUNKNOWN"))
    assert (result.ok, result.error_code) == (False, "not_found")


async def test_other_bad_request_is_provider_error(fake_bot_api: FakeBotApi, bot: Bot) -> None:
    fake_bot_api.next_error = (400, "Bad Request: USER_ID_INVALID", None)
    result = await StarsRefunder(bot).refund(stars_request())
    assert (result.ok, result.error_code) == (False, "provider_error")
    assert result.detail == "Bad Request: USER_ID_INVALID"
    assert not result.retryable


@pytest.mark.parametrize(
    ("status", "description", "parameters"),
    [
        (500, "Internal Server Error", None),
        (502, "Bad Gateway", None),
        (429, "Too Many Requests: retry after 3", {"retry_after": 3}),
    ],
)
async def test_server_trouble_is_network_error(
    fake_bot_api: FakeBotApi, bot: Bot, status: int, description: str, parameters: dict | None
) -> None:
    fake_bot_api.charges["stxCHARGE1"] = 777
    fake_bot_api.next_error = (status, description, parameters)
    refunder = StarsRefunder(bot)
    result = await refunder.refund(stars_request())
    assert (result.ok, result.error_code) == (False, "network_error")
    assert result.retryable
    # The retry goes through.
    assert (await refunder.refund(stars_request())).ok


async def test_bad_token_is_not_configured(fake_bot_api: FakeBotApi, bot: Bot) -> None:
    fake_bot_api.next_error = (401, "Unauthorized", None)
    result = await StarsRefunder(bot).refund(stars_request())
    assert (result.ok, result.error_code) == (False, "not_configured")


async def test_api_down_is_network_error() -> None:
    bot = make_bot(f"http://127.0.0.1:{free_port()}")
    try:
        result = await StarsRefunder(bot).refund(stars_request())
    finally:
        await bot.session.close()
    assert (result.ok, result.error_code) == (False, "network_error")


async def test_timeout_is_network_error(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.charges["stxCHARGE1"] = 777
    fake_bot_api.delay = 2
    bot = make_bot(fake_bot_api.url, timeout=0.3)
    try:
        result = await StarsRefunder(bot).refund(stars_request())
    finally:
        await bot.session.close()
    assert (result.ok, result.error_code) == (False, "network_error")


async def test_request_for_another_method_is_a_bug(bot: Bot) -> None:
    wrong = RefundRequest(
        method="stripe",
        user_id=1,
        telegram_payment_charge_id="t",
        provider_payment_charge_id="ch_1",
        amount_minor=100,
        currency="USD",
        idempotency_key="k",
    )
    with pytest.raises(ValueError, match="stars refunder got a stripe request"):
        await StarsRefunder(bot).refund(wrong)
