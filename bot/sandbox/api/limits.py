"""Limits and faults: flood limits (429 with ``retry_after``), injected 5xx answers and slow
answers (client timeouts), and the simulated network round trip.

A blocked user's 403 is decided where the chat is resolved (:mod:`bot.sandbox.api.chats`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.sandbox.api.chats import label_of
from bot.sandbox.core.errors import ApiError
from bot.sandbox.core.faults import Fault, Faults
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.state import SimBot

__all__ = ["Fault", "Faults", "before_call", "check_flood", "log_failed_send"]


async def before_call(
    server: Host, bot: SimBot, method: str, params: Params, rate_limited: bool
) -> None:
    """Everything that happens to a call before its method runs; raises the error to answer."""
    if server.rtt_ms:
        await asyncio.sleep(server.rtt_ms / 1000)
    fault = server.faults.take(method)
    if fault is not None:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            raise ApiError(fault.status, fault.description)
    if rate_limited and bot.limiter is not None:
        check_flood(server, bot, params)


def check_flood(server: Host, bot: SimBot, params: Params) -> None:
    """Take a send from the bot's flood budget, or answer 429 with ``retry_after``."""
    assert bot.limiter is not None
    chat = params.raw.get("chat_id")
    key: int | str = chat if isinstance(chat, (int, str)) else str(chat)
    retry_after = bot.limiter.acquire(key)
    if retry_after is not None:
        raise ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)


def log_failed_send(
    server: Host, bot: SimBot, method: str, raw: dict[str, Any], error: ApiError
) -> None:
    chat_id = raw.get("chat_id")
    if not isinstance(chat_id, int):
        return
    icon = "⏳" if error.code == 429 else "✗"
    label = label_of(server, bot, chat_id)
    server.state.transcript.add(
        f"🤖 {icon} → {label}: {method} → {error.code} {error.description}", chat_id
    )
