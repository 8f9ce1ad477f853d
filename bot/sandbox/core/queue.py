"""One bot's queue of unconfirmed updates, with Telegram's ``getUpdates`` semantics."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.sandbox.core.errors import ApiError

__all__ = ["ALL_UPDATE_TYPES", "DEFAULT_UPDATE_TYPES", "Signal", "UpdateQueue"]

ALL_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
# What Telegram delivers when allowed_updates is empty or was never set.
DEFAULT_UPDATE_TYPES = ALL_UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}

# Currencies accepted by Telegram Payments (core.telegram.org/bots/payments#supported-currencies).


class Signal:
    """Wakes every current waiter; cheap when nobody waits."""

    __slots__ = ("_event", "_waiters")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._waiters = 0

    def fire(self) -> None:
        if self._waiters:
            event, self._event = self._event, asyncio.Event()
            event.set()

    async def wait(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait for the next :meth:`fire`; ``False`` on timeout."""
        event = self._event
        self._waiters += 1
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        return True


@dataclass(slots=True, eq=False)
class _QueuedUpdate:
    update: dict[str, Any]
    delivered: bool = False


class UpdateQueue:
    """One bot's unconfirmed updates, with Telegram's ``getUpdates`` semantics."""

    def __init__(self) -> None:
        self._pending: deque[_QueuedUpdate] = deque()
        # Telegram's update ids are large and never start at 0; neither do ours.
        self._next_id = 700_000_001
        self.allowed: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.allowed_list: list[str] | None = None
        self.signal = Signal()
        self._last_batch: list[_QueuedUpdate] = []
        self._generation = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def set_allowed(self, types: list[str]) -> None:
        """Apply ``allowed_updates``; an empty list restores the default set."""
        self.allowed_list = list(types)
        self.allowed = frozenset(types) if types else DEFAULT_UPDATE_TYPES

    def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Create an update, or drop it (``None``) if its type is not allowed."""
        if kind not in self.allowed:
            return None
        update = {"update_id": self._next_id, kind: payload}
        self._next_id += 1
        self._pending.append(_QueuedUpdate(update))
        self.signal.fire()
        return update

    def push_raw(self, update: dict[str, Any]) -> None:
        """Queue an existing update again (same ``update_id``)."""
        self._pending.append(_QueuedUpdate(update))
        self.signal.fire()

    def first(self) -> _QueuedUpdate | None:
        """The oldest unconfirmed update."""
        return self._pending[0] if self._pending else None

    def remove(self, entry: _QueuedUpdate) -> None:
        """Confirm one update (webhook delivery succeeded)."""
        if self._pending and self._pending[0] is entry:
            self._pending.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._pending.remove(entry)

    def clear(self) -> None:
        """Drop every pending update (``drop_pending_updates``)."""
        self._pending.clear()
        self._last_batch = []

    def close(self) -> None:
        """Release long pollers (server shutdown)."""
        self.closed = True
        self.signal.fire()

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            while len(self._pending) > -offset:
                self._pending.popleft()
            return
        if offset == 0:
            return
        # Delivered updates always form a prefix of the queue. Besides the usual
        # "id < offset" rule, a batch is confirmed by offset == its last id + 1:
        # that keeps a replayed (older id) update at the end of a batch from
        # making the newer updates before it look unconfirmed.
        batch = self._last_batch
        whole_batch = bool(batch) and offset == batch[-1].update["update_id"] + 1
        in_batch = {id(entry) for entry in batch} if whole_batch else set()
        pending = self._pending
        while pending and pending[0].delivered:
            head = pending[0]
            if head.update["update_id"] < offset or id(head) in in_batch:
                pending.popleft()
            else:
                break

    async def poll(
        self,
        offset: int,
        limit: int,
        timeout: float,  # noqa: ASYNC109 - getUpdates' own parameter
        webhook_active: Callable[[], bool],
    ) -> list[dict[str, Any]]:
        """Serve one ``getUpdates`` call."""
        self._generation += 1
        generation = self._generation
        self.signal.fire()  # an older poller, if any, must now fail with 409
        self._confirm(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if webhook_active():
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            if self._pending or self.closed:
                batch = list(itertools.islice(self._pending, limit))
                for entry in batch:
                    entry.delivered = True
                self._last_batch = batch
                return [entry.update for entry in batch]
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._last_batch = []
                return []
            await self.signal.wait(remaining)
