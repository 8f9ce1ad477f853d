"""Telegram-like flood limits for the sandbox Bot API server.

Telegram throttles a bot globally (about 30 messages per second) and per chat
(about one message per second, with short bursts allowed). The sandbox models
both with token buckets and answers ``429 Too Many Requests`` with an integer
``retry_after`` when a message-creating call would exceed either of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Flood-limit configuration, applied per bot.

    ``*_per_s`` is the sustained rate (tokens refilled per second) and
    ``*_burst`` the bucket capacity (messages that may be sent back to back).
    """

    global_per_s: float = 30.0
    global_burst: int = 30
    per_chat_per_s: float = 1.0
    per_chat_burst: int = 3

    def __post_init__(self) -> None:
        if self.global_per_s <= 0 or self.per_chat_per_s <= 0:
            raise ValueError("rates must be positive")
        if self.global_burst < 1 or self.per_chat_burst < 1:
            raise ValueError("bursts must be at least 1")


class TokenBucket:
    """A classic token bucket; time is supplied by the caller."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.updated = now

    def wait_time(self, now: float) -> float:
        """Refill, then return 0 if a token is available or the seconds until one is."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        """Consume one token (call only after :meth:`wait_time` returned 0)."""
        self.tokens -= 1.0


class RateLimiter:
    """Checks one bot's outgoing messages against a :class:`RateLimit`."""

    __slots__ = ("_chats", "_clock", "_global", "limit")

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._global = TokenBucket(limit.global_per_s, limit.global_burst, clock())
        self._chats: dict[int | str, TokenBucket] = {}

    def acquire(self, chat_id: int | str) -> int | None:
        """Take a token for a message to ``chat_id``.

        Returns ``None`` when the message may be sent, otherwise the number of
        whole seconds to wait (``retry_after``, at least 1). A refused message
        consumes no tokens, like Telegram, so a client that honours
        ``retry_after`` gets through.
        """
        now = self._clock()
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = TokenBucket(self.limit.per_chat_per_s, self.limit.per_chat_burst, now)
            self._chats[chat_id] = chat
        wait = max(self._global.wait_time(now), chat.wait_time(now))
        if wait > 0:
            return max(1, math.ceil(wait))
        self._global.take()
        chat.take()
        return None
