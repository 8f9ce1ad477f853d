"""The server as the API areas see it, so that no area needs the server module itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from bot.sandbox.core.faults import Faults
from bot.sandbox.core.state import Chatter, RefundEvent, SandboxState, ServerStats, SimBot

__all__ = ["CardProcessor", "Host"]


class CardProcessor(Protocol):
    """A payment provider's side of card invoices (a fake provider in tests and demos)."""

    async def record_payment(self, *, amount_minor: int, currency: str, description: str) -> str:
        """Record a succeeded payment; return the provider's payment id."""
        ...


class Host(Protocol):
    """What a method handler may use of :class:`bot.sandbox.server.SandboxServer`."""

    state: SandboxState
    stats: ServerStats
    refund_events: list[RefundEvent]
    faults: Faults
    card_processors: dict[str, CardProcessor]
    clock: Callable[[], float]
    rtt_ms: float
    precheckout_timeout: float
    webhook_retry_delay: float
    webhook_max_retry_delay: float
    webhook_timeout: float
    star_transactions_newest_first: bool

    def http_client(self) -> aiohttp.ClientSession:
        """The server's own HTTP client (webhook posts, file URLs)."""
        ...

    async def execute_call(self, bot: SimBot, method: str, params: dict[str, Any]) -> None:
        """Run a Bot API call that came back in a webhook's response body."""

    def user(self, user_id: int, first_name: str | None = None, *, bot: SimBot) -> Chatter:
        """The simulated user ``user_id`` chatting with ``bot``."""
        ...
