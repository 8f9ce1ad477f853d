"""Telegram's send limits as a budget: about 30 messages a second per bot, one a second per chat,
and a 429 ``retry_after`` pause that holds for the whole bot.

Those limits belong to the bot, not to a process. :class:`LocalBudget` keeps them in memory (one
process: SQLite, polling). :class:`RedisBudget` keeps them in Redis, so every replica of one bot
draws from the same budget and a 429 seen by one pauses them all. Its check-and-take is one Lua
script (atomic on the Redis server) over GCRA state: each key holds the "theoretical arrival
time" of the next message, which is one number per bucket, reads Redis's own clock so replicas'
clocks do not matter, and refuses without taking anything when either budget is short.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

# A bucket of a quarter second's tokens: enough to catch up after the loop's small stalls, too
# few for a burst that a whole second's bucket would allow after a pause (Telegram counts per
# second).
BURST_S = 0.25


# Telegram lets a chat take a few messages back to back before its one a second holds (the
# sandbox models 3, as observed): replies may use that burst, background messages never do.
CHAT_BURST = 3
# Telegram counts by when a message reaches it, the budget by when it lets one go, and the way
# between them varies (a new connection, a busy loop): a reply let go at the very edge of the
# burst may arrive a little early and draw a 429 (seen in a test: the first of four replies
# arrived 10 ms late, the fourth on time). So the burst ends a tenth of an interval early.
CHAT_EDGE_MARGIN = 0.1


def burst_of(rate_per_s: float) -> float:
    return max(rate_per_s * BURST_S, 1.0)


def reply_ahead_of(chat_interval_s: float) -> float:
    """How far (s) a reply may run ahead of its chat's pace: the burst, less the margin."""
    return chat_interval_s * (CHAT_BURST - 1 - CHAT_EDGE_MARGIN)


class SendBudget(Protocol):
    async def acquire(self, chat_id: int, *, reply: bool = False) -> None:
        """Wait until a message to ``chat_id`` fits in both budgets and no pause holds.

        ``reply``: an answer to what the user just did. It waits for the bot's budget (Telegram
        counts it), and it may run ahead of the chat's pace by Telegram's short burst (a user
        who taps a button expects the answer at once; three replies in a second are fine, a
        fourth waits its turn). It takes the chat's slot all the same, so the next background
        message to that chat waits."""

    async def pause(self, chat_id: int, seconds: float) -> None:
        """Telegram answered 429: hold every send for ``seconds``, this chat's too."""

    async def close(self) -> None: ...


class PerChatPacer:
    """At most one message per ``interval`` seconds to each chat, remembered for recent chats.

    Each chat's state is the time its next message may go at the pace (GCRA's "theoretical
    arrival time"); a reply may go up to :func:`reply_ahead_of` ahead of it.
    """

    def __init__(self, interval: float, remember: int = 50_000) -> None:
        self.interval = interval
        self.reply_ahead = reply_ahead_of(interval)
        self.remember = remember
        self._next_slot: OrderedDict[int, float] = OrderedDict()

    async def wait(self, chat_id: int, *, reply: bool = False) -> None:
        now = time.monotonic()
        due = max(now, self._next_slot.get(chat_id, 0.0))
        slot = max(now, due - self.reply_ahead) if reply else due
        self._next_slot[chat_id] = due + self.interval
        self._next_slot.move_to_end(chat_id)
        while len(self._next_slot) > self.remember:
            self._next_slot.popitem(last=False)
        if slot > now:
            await asyncio.sleep(slot - now)

    def push_back(self, chat_id: int, seconds: float) -> None:
        self._next_slot[chat_id] = max(
            self._next_slot.get(chat_id, 0.0), time.monotonic() + seconds
        )


class LocalBudget:
    """One process's budget, in memory."""

    def __init__(self, rate_per_s: float, chat_interval_s: float) -> None:
        rate = max(rate_per_s, 1.0)
        self.global_limiter = AsyncLimiter(burst_of(rate), max(BURST_S, 1.0 / rate))
        self.chats = PerChatPacer(chat_interval_s)
        self.paused_until = 0.0  # a 429 on any chat pauses everyone: Telegram's limit is global

    async def acquire(self, chat_id: int, *, reply: bool = False) -> None:
        await self.chats.wait(chat_id, reply=reply)
        while True:
            pause = self.paused_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            await self.global_limiter.acquire()
            # A 429 may have arrived while this call queued for the token: honour it too.
            if self.paused_until <= time.monotonic():
                return

    async def pause(self, chat_id: int, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self.chats.push_back(chat_id, seconds)

    async def close(self) -> None:
        return None


# Lua 5.1 prints numbers with 14 significant digits: timestamps in µs are written with '%d'.
# KEYS: global GCRA key, chat GCRA key, pause key.
# ARGV: global emission interval (µs), global burst tolerance (µs), chat interval (µs), 1 for a
# reply, and how far (µs) a reply may run ahead of its chat's pace (Telegram's short burst).
# Returns 0 when a message was taken, else the microseconds to wait before asking again.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause > now then
  return pause - now
end
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local chat_interval = tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local global_wait = tat - tolerance - now
local chat_tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
local chat_wait = chat_tat - now
if ARGV[4] == '1' then
  chat_wait = chat_wait - tonumber(ARGV[5])
end
local wait = math.max(global_wait, chat_wait)
if wait > 0 then
  return wait
end
local ttl = math.ceil((emission + tolerance) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', tat + emission), 'PX', ttl)
local chat_ttl = math.ceil((chat_tat - now + chat_interval) / 1000) + 1000
redis.call('SET', KEYS[2], string.format('%d', chat_tat + chat_interval), 'PX', chat_ttl)
return 0
"""

# KEYS: pause key, chat GCRA key. ARGV: pause length (µs). Only ever lengthens a pause.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local ttl = math.ceil(tonumber(ARGV[1]) / 1000) + 1000
if tonumber(redis.call('GET', KEYS[1]) or '0') < until_ then
  redis.call('SET', KEYS[1], string.format('%d', until_), 'PX', ttl)
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < until_ then
  redis.call('SET', KEYS[2], string.format('%d', until_), 'PX', ttl)
end
return 0
"""

MICRO = 1_000_000


class RedisBudget:
    """The bot's budget shared by every process through Redis (see the module doc)."""

    def __init__(
        self,
        redis: Redis,
        *,
        bot_id: int,
        rate_per_s: float,
        chat_interval_s: float,
        prefix: str = "webinarpass:send",
        owns_client: bool = False,
    ) -> None:
        rate = max(rate_per_s, 1.0)
        self.redis = redis
        self.emission_us = int(MICRO / rate)
        self.tolerance_us = int(self.emission_us * (burst_of(rate) - 1))
        self.chat_interval_us = int(chat_interval_s * MICRO)
        self.reply_ahead_us = int(reply_ahead_of(chat_interval_s) * MICRO)
        self.prefix = f"{prefix}:{bot_id}"
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls, url: str, *, bot_id: int, rate_per_s: float, chat_interval_s: float
    ) -> RedisBudget:
        from redis.asyncio import Redis

        return cls(
            Redis.from_url(url),
            bot_id=bot_id,
            rate_per_s=rate_per_s,
            chat_interval_s=chat_interval_s,
            owns_client=True,
        )

    def _keys(self, chat_id: int) -> tuple[str, str, str]:
        return f"{self.prefix}:global", f"{self.prefix}:chat:{chat_id}", f"{self.prefix}:pause"

    async def acquire(self, chat_id: int, *, reply: bool = False) -> None:
        keys = self._keys(chat_id)
        args = [
            self.emission_us,
            self.tolerance_us,
            self.chat_interval_us,
            int(reply),
            self.reply_ahead_us,
        ]
        while True:
            wait_us = int(await self._acquire(keys=list(keys), args=args))
            if wait_us <= 0:
                return
            await asyncio.sleep(wait_us / MICRO)

    async def pause(self, chat_id: int, seconds: float) -> None:
        _, chat_key, pause_key = self._keys(chat_id)
        await self._pause(keys=[pause_key, chat_key], args=[int(seconds * MICRO)])

    async def close(self) -> None:
        if self._owns_client:
            await self.redis.aclose()
