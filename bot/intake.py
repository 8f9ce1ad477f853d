"""Durable intake: an update is stored before Telegram hears that it arrived, then handled from
the store until it succeeds or is parked.

Telegram forgets an update once it is acknowledged (a webhook's 2xx, or the next ``getUpdates``
offset). So both receivers here (:meth:`Intake.poll` and the webhook handler in
``bot/application.py``) store the update, commit, and only then acknowledge it.

The receiving process holds each new row under a lease from the insert on (its first attempt), so
the common path costs one insert (a whole polled batch at once) and one update that marks it done,
batched with the other updates finished meanwhile and written in the intake's next transaction (the
next batch's store or the sweep's claim), or at once when nothing else is in hand: a busy
process spends no transaction of its own on most done marks. The row's
unique (bot, update id) makes a redelivered update a no-op. A handler that raises leaves the row
for another attempt after a back-off; after ``INTAKE_MAX_ATTEMPTS`` it is parked and the bot's
owners are told its kind and id (nothing personal) through the outbox. A process that dies leaves
its leases to expire; any replica's sweep claims the rows then (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL). A polling process takes over its own bot's leased rows at start: Telegram lets only
one process poll a bot, so whoever held them before is gone.

Handling is bounded and urgent first (:class:`bot.priority.PrioritySlots`): a pre-checkout query
(Telegram's 10-second deadline) starts at once, payments before the rest, and how many updates run
at once follows the event loop's load.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.methods import TelegramMethod
from aiogram.types import TelegramObject, Update
from yarl import URL

from bot.context import AppContext
from bot.faults import ARMED, crash_point
from bot.i18n import _
from bot.priority import Priority, PrioritySlots, priority_of_raw
from bot.services.outbox import OutboxService
from storage.pool import connection_priority
from storage.repositories.intake import Held, InboundUpdateRepository, Incoming

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# Seconds before attempt n + 1 after attempt n failed; the last value repeats.
BACKOFF_S = (1, 5, 15, 60, 300, 900, 1800)
SWEEP_S = 1.0  # how often a process looks for due rows (retries, leases of dead processes)
CHECKOUT_DEADLINE = timedelta(seconds=10)


class Attempt:
    """What one feed of a stored update learns: aiogram's error handler answers the user and
    swallows the exception, so :class:`IntakeErrorMiddleware` notes it here first."""

    __slots__ = ("error", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.error: BaseException | None = None


def _urgent_as(priority: Priority) -> contextvars.Context:
    """A context for a task whose database waits, and whose turns of the event loop from its
    first on, go by ``priority`` (``storage.pool``, :class:`bot.priority.UrgentFirstLoop`)."""
    context = contextvars.copy_context()
    context.run(connection_priority.set, priority)
    return context


class IntakeErrorMiddleware(BaseMiddleware):
    """The first outer middleware after aiogram's own error middleware: see :class:`Attempt`."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        try:
            return await handler(event, data)
        except Exception as error:
            attempt = data.get("intake_attempt")
            if isinstance(attempt, Attempt):
                attempt.error = error
            raise


def describe(raw: dict[str, Any]) -> Incoming:
    """The update's id, kind and priority, read from the raw JSON without building models."""
    update_id = raw["update_id"]
    if not isinstance(update_id, int):
        msg = "update_id must be an integer"
        raise TypeError(msg)
    kind = next((key for key in raw if key != "update_id"), "unknown")[:32]
    return Incoming(update_id, kind, int(priority_of_raw(raw)), raw)


def _detail(items: list[Incoming] | list[Held]) -> str | None:
    return "payment" if any(item.priority == Priority.PAYMENT for item in items) else None


def error_label(error: BaseException) -> str:
    """The exception's type only: its message may quote a user's name or text."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"[:255]


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1])


class Intake:
    """Stores, holds and handles one bot's updates in this process."""

    def __init__(
        self,
        app: AppContext,
        dispatcher: Dispatcher,
        bot: Bot,
        *,
        slots: int,
        lease_s: float,
        max_attempts: int,
        batch_wait_s: float = 0.0,
    ) -> None:
        self.app = app
        self.batch_wait_s = batch_wait_s
        self.dispatcher = dispatcher
        self.bot = bot
        self.slots = PrioritySlots(slots, adaptive=True)
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts
        # More rows than this in memory wait in the table, claimed by the sweep as room frees up.
        self.max_in_hand = max(16 * slots, 128)
        self.stopping = False  # takes nothing new
        self._closing = False  # the sweep ends (after the last handler: it renews their leases)
        self._in_hand: dict[int, Held] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._started: set[int] = set()
        self._done: list[Held] = []
        self._flush_wanted = asyncio.Event()
        self._sweep_wanted = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._polling: asyncio.Task[None] | None = None
        self._in_request = False

    @property
    def in_hand(self) -> int:
        return len(self._in_hand)

    def _now(self) -> datetime:
        return self.app.clock.now()

    # -- receiving ----------------------------------------------------------------------------

    async def start(self, *, take_over: bool = False) -> None:
        """Start the sweep and the done-marker; ``take_over``: hold this bot's leased rows now."""
        if take_over:
            await self._claim(ignore_leases=True)
        self.slots.start()
        self._background = [
            asyncio.create_task(self._sweep(), name="intake-sweep"),
            asyncio.create_task(self._flush_loop(), name="intake-flush"),
        ]

    async def accept(self, raws: list[dict[str, Any]]) -> int:
        """Store the updates and commit; only after this returns may they be acknowledged.
        Then the new ones are handled in the background. Returns how many were new."""
        items = [describe(raw) for raw in raws]
        now = self._now()
        room = self.max_in_hand - len(self._in_hand)
        held_now: list[Incoming] = []
        later: list[Incoming] = []
        for item in items:
            hold = len(held_now) < room or item.priority == Priority.CHECKOUT
            (held_now if hold else later).append(item)
        kinds = {item.priority for item in items}
        # A batch with a checkout is stored alone, one statement sooner; the marks wait for the
        # next write. Not past a payment: the mark of the checkout it follows goes first (see
        # _handle).
        urgent = Priority.CHECKOUT in kinds and Priority.PAYMENT not in kinds
        done = [] if urgent else self._take_done()
        # The batch waits for a database connection, and for its turns of the event loop, as
        # its most urgent update would.
        urgency = connection_priority.set(min(kinds, default=Priority.OTHER))
        try:
            # The marks first: writing one twice changes nothing, so with one store after them
            # each statement may commit on its own (on PostgreSQL: a batch without marks costs
            # one round trip, not three). A failed store then leaves nothing of the batch, which
            # Telegram sends again. Two stores (a backlog) are one transaction: the first must not
            # stay, leased to this process, without the second.
            async with self.app.transaction(autocommit=not later) as transaction:
                repo = InboundUpdateRepository(transaction)
                await repo.finish(done, now=now)  # rides along: no transaction of its own
                held = await repo.store(
                    self.bot.id, held_now, now=now, lease_until=now + self.lease
                )
                if later:
                    await repo.store(self.bot.id, later, now=now, lease_until=None)
        except BaseException:
            self._give_back(done)
            raise
        finally:
            connection_priority.reset(urgency)
        if ARMED:
            crash_point("intake.stored", _detail(items))
        for item in held:
            self._hand(item)
        return len(held)

    async def poll(self, *, timeout_s: int = 10, allowed_updates: list[str] | None = None) -> None:
        """Long-poll ``getUpdates`` until :meth:`stop`: store each batch, commit, and only then
        move the offset past it (Telegram confirms updates below the next call's offset).

        While updates keep coming it asks at most once per ``batch_wait_s``: after a batch that
        came back sooner, it waits out the rest before asking again, so that under a rush the
        next updates arrive together. A store is one transaction whatever the batch's size, and
        on SQLite its commit (the WAL written) is the dearest part of taking an update in. In a
        1,000-buyer rush on SQLite, 3 ms took the stores from 2.7 to 1.1 per purchase and the
        CPU per update down by about a tenth on one machine, but only to 2.0 on another, slower
        one, where 8 ms took them to 1.0 and the CPU per update down 5% more, for pre-checkout
        p99 13 -> 20 ms (README, benchmarks). On PostgreSQL, whose store is one statement
        without a transaction, 3 ms saved nothing and cost p99, so it is off there
        (``bot.application``). A ``getUpdates`` that takes longer than that (Telegram's real
        round trip) is never followed by a wait."""
        session = self.bot.session
        url = URL(session.api.api_url(token=self.bot.token, method="getUpdates"))  # parsed once
        http = await session.create_session()  # type: ignore[attr-defined]
        timeout = aiohttp.ClientTimeout(total=timeout_s + 15)
        offset: int | None = None
        delay = 1.0
        clock = asyncio.get_running_loop().time
        while not self.stopping:
            asked = clock()
            body: dict[str, Any] = {"timeout": timeout_s}
            if allowed_updates is not None:
                body["allowed_updates"] = allowed_updates
            if offset is not None:
                body["offset"] = offset
            try:
                self._in_request = True
                try:
                    async with http.post(url, json=body, timeout=timeout) as response:
                        answer = orjson.loads(await response.read())
                finally:
                    self._in_request = False
                if not answer.get("ok"):
                    raise RuntimeError(answer.get("description", "getUpdates failed"))
                updates: list[dict[str, Any]] = answer["result"]
                if updates and not self.stopping:
                    await self.accept(updates)
                    offset = updates[-1]["update_id"] + 1
                    rest = self.batch_wait_s - (clock() - asked)
                    if rest > 0:  # let the next updates gather into one batch (see above)
                        await asyncio.sleep(rest)
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The offset stays: Telegram sends the same updates again, nothing is lost.
                log.warning("getUpdates failed (%s); again in %.0f s", error_label(error), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def start_polling(self, **kwargs: Any) -> asyncio.Task[None]:
        """:meth:`poll` in a task that the event loop wakes as it wakes a checkout's
        (:class:`bot.priority.UrgentFirstLoop`): a pre-checkout query comes in through it, and
        read late it would have waited behind the turns of every update in hand before its own
        handling even began. The polling task is one request at a time, and its store is
        written at its batch's own urgency (:meth:`accept`)."""
        self._polling = asyncio.create_task(
            self.poll(**kwargs), name="intake-poll", context=_urgent_as(Priority.CHECKOUT)
        )
        return self._polling

    # -- handling -----------------------------------------------------------------------------

    def _hand(self, item: Held) -> None:
        self._in_hand[item.id] = item
        self._tasks[item.id] = asyncio.create_task(
            self._handle(item), context=_urgent_as(item.priority)
        )

    async def _handle(self, item: Held) -> None:
        try:
            try:
                await self.slots.acquire(item.priority)
            except asyncio.CancelledError:
                return  # stopping: the row is released for someone else
            try:
                if self.stopping:
                    return
                self._started.add(item.id)
                error = await self._feed(item)
                if error is None:
                    if ARMED:
                        crash_point("intake.handled", _detail([item]))
                    self._in_hand.pop(item.id, None)
                    self._done.append(item)
                    if not self._in_hand:
                        # Nothing else in hand, so no store may come soon: write the marks now.
                        # Otherwise they ride on the next store or sweep (see _take_done). A
                        # pre-checkout query's mark too: the successful payment Telegram sends
                        # once it is answered arrives in a later batch, whose store writes the
                        # mark before the payment is handled, so a crash while the payment is
                        # handled never answers (and re-checks the seat of) a settled checkout.
                        self._flush_wanted.set()
                else:
                    await self._failed(item, error)
            finally:
                self.slots.release()
        finally:
            self._tasks.pop(item.id, None)
            self._started.discard(item.id)

    async def _feed(self, item: Held) -> BaseException | None:
        if item.kind == "pre_checkout_query" and self._now() - item.received_at > CHECKOUT_DEADLINE:
            # Claimed late (after a crash, say): Telegram has failed that checkout 10 s after
            # asking, and answering now would only hold a seat nobody pays for.
            return None
        attempt = Attempt(item.attempts)
        try:
            update = Update.model_validate(item.payload, context={"bot": self.bot})
            response = await self.dispatcher.feed_update(self.bot, update, intake_attempt=attempt)
            if isinstance(response, TelegramMethod):
                await self.dispatcher.silent_call_request(self.bot, response)
        except Exception as error:
            log.exception("update %s (%s) failed", item.update_id, item.kind)
            return error
        return attempt.error

    async def _failed(self, item: Held, error: BaseException) -> None:
        self._in_hand.pop(item.id, None)
        label = error_label(error)
        now = self._now()
        try:
            async with self.app.session_factory() as session:
                repo = InboundUpdateRepository(session)
                parked = False
                if item.kind == "pre_checkout_query":
                    # Past Telegram's 10 seconds a retry cannot answer it any more.
                    await repo.finish([item], now=now, error=label)
                elif item.attempts >= self.max_attempts:
                    parked = await repo.park(item, now=now, error=label)
                    if parked:
                        await self._alert_owners(session, item)
                else:
                    await repo.retry_later(item, at=now + backoff(item.attempts), error=label)
                await session.commit()
        except Exception:
            # Nothing written: the lease runs out and the update is claimed again.
            log.exception("could not record the failure of update %s", item.update_id)
            return
        if parked:
            log.error(
                "update %s (%s) parked after %s attempts: %s",
                item.update_id,
                item.kind,
                item.attempts,
                label,
            )
            self.app.wake.outbox()
        else:
            log.warning(
                "update %s (%s) failed on attempt %s: %s",
                item.update_id,
                item.kind,
                item.attempts,
                label,
            )

    async def _alert_owners(self, session: Any, item: Held) -> None:
        with self.app.translator.context():
            await OutboxService(session, self.app).notice_each(
                sorted(self.app.settings.bot_owner_ids),
                dedupe_key=f"inbound-parked:{self.bot.id}:{item.update_id}",
                render=lambda locale: _(
                    "⚠️ An update could not be handled after {attempts} attempts and was set "
                    "aside: {kind}, update id {update_id}. The log says why; the update is "
                    "kept in the inbound_updates table.",
                    locale=locale,
                    attempts=item.attempts,
                    kind=item.kind,
                    update_id=item.update_id,
                ),
            )

    # -- background: sweep, done marks ---------------------------------------------------------

    async def _claim(self, *, ignore_leases: bool = False) -> None:
        """Hold due rows (as many as there is room for), writing the pending done marks in the
        same transaction."""
        room = self.max_in_hand - len(self._in_hand)
        claim = room > 0 and not self.stopping
        done = self._take_done()
        if not claim and not done:
            return
        now = self._now()
        held: list[Held] = []
        try:
            async with self.app.session_factory() as session:
                repo = InboundUpdateRepository(session)
                await repo.finish(done, now=now)
                if claim:
                    held = await repo.claim_due(
                        self.bot.id,
                        now=now,
                        lease_until=now + self.lease,
                        limit=room,
                        ignore_leases=ignore_leases,
                    )
                await session.commit()
        except BaseException:
            self._give_back(done)
            raise
        for item in held:
            if item.id not in self._in_hand:
                self._hand(item)

    async def _renew(self) -> None:
        held = list(self._in_hand.values())
        if not held:
            return
        now = self._now()
        async with self.app.transaction(autocommit=True) as transaction:
            await InboundUpdateRepository(transaction).renew(held, lease_until=now + self.lease)

    def wake(self) -> None:
        """Sweep now (tests that moved the clock; nothing else needs it)."""
        self._sweep_wanted.set()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not self._closing:
            try:
                await self._claim()
                if loop.time() - renewed >= self.lease.total_seconds() / 3:
                    renewed = loop.time()
                    await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the intake's sweep failed; it runs again in a second")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wanted.wait(), SWEEP_S)
            self._sweep_wanted.clear()

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            await self._flush_done()

    def _take_done(self) -> list[Held]:
        """The updates handled since the last done marks were written, to be written now.

        Done marks need no transaction of their own: they are written in whatever transaction
        the intake commits next, the next batch's store (polling or webhook) or the sweep's
        claim (every ``SWEEP_S``), or right away when nothing else is in hand. Until then a crash
        only means those updates are handled again, as when a crash comes right before a mark
        (README, "What may repeat after a crash"): their handlers are replay-safe.
        """
        batch, self._done = self._done, []
        return batch

    def _give_back(self, batch: list[Held]) -> None:
        """Marks a failed or cancelled write had taken: the next write has them (a repeat is
        harmless: a mark only applies to a row still pending under the same attempt)."""
        self._done[:0] = batch

    async def _flush_done(self) -> None:
        """Mark everything handled since the last write done, in one statement and commit."""
        batch = self._take_done()
        if not batch:
            return
        try:
            async with self.app.transaction(autocommit=True) as transaction:
                await InboundUpdateRepository(transaction).finish(batch, now=self._now())
        except asyncio.CancelledError:
            self._give_back(batch)  # stopping: the last flush writes them
            raise
        except Exception:
            log.exception("could not mark %s handled updates done; trying again", len(batch))
            self._give_back(batch)

    # -- shutdown -----------------------------------------------------------------------------

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Take nothing new, give back at once what has not started, let what is being handled
        finish within ``timeout_s`` under leases still renewed, mark it, and release the rest.

        The sweep goes on renewing until the last handler ends: a lease left to lapse while a
        handler still runs would let another replica handle the same update again (a second
        card, a second invoice), and fence this one's done mark.
        """
        self.stopping = True
        if self._polling is not None:
            if self._in_request:
                self._polling.cancel()
            with suppress(asyncio.CancelledError):
                await self._polling
            self._polling = None
        waiting = [task for item_id, task in self._tasks.items() if item_id not in self._started]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        # Another replica (or the next start) takes them now, not after this one's shutdown.
        await self._release(
            [item for item in self._in_hand.values() if item.id not in self._started]
        )
        running = list(self._tasks.values())
        if running:
            _done, late = await asyncio.wait(running, timeout=timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if late:
                log.warning("%s updates were still being handled at shutdown", len(late))
        self._closing = True
        if self._background:
            # Let the sweep end its round: cancelled mid-claim, it would leave rows leased to us.
            self._sweep_wanted.set()
            await self._background[0]
        await self.slots.close()
        for task in self._background[1:]:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        self._background = []
        await self._flush_done()
        await self._release(list(self._in_hand.values()))

    async def _release(self, items: list[Held]) -> None:
        for item in items:
            self._in_hand.pop(item.id, None)
        if not items:
            return
        try:
            async with self.app.session_factory() as session:
                await InboundUpdateRepository(session).release(items, now=self._now())
                await session.commit()
        except Exception:
            log.exception("could not release %s updates; their leases will expire", len(items))
