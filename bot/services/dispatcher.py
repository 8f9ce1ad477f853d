"""The outbox dispatcher: claims due rows, renders, sends through the paced sender, marks.

A claim moves rows to ``sending`` with a lease in one statement (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas never claim the same row; SQLite has one writer). A worker that dies
leaves its lease to expire and the row is claimed again: nothing is lost, and the only possible
duplicate is the one message in flight at the crash. Multi-part rows (an access message too long
for a caption: its text, then its calendar file) record each part as sent, so a retry resumes
after the last part that went out.

What a row costs the database: the claim takes and loads a whole batch in one statement
(``UPDATE ... RETURNING`` every column); a row is rendered in one read transaction and marked in
one more (its result, and for an access message the ticket's ``access_delivered_at``, together),
plus one progress mark between the parts of a multi-part row. A message that carries what a
ticket gives must not leave once the ticket is refunded, and it may wait minutes for its turn
(the chat's pace, a 429 pause): the ticket is read again after that wait, right before the first
part leaves. For an access message that read is its render, which runs then rather than before
the wait (``PacedSender.send_rendered``); other kinds are rendered first, so that rows dropped in
bulk (stale reminders) cost no share of Telegram's budget, and their ticket is checked once more.
Later parts of a row are not checked again: the first one already carried the link or password.

An access message is usually one message, the calendar file with the access as its caption:
two transactions of its own, the render's read and the result, each on a side of the network call
and guarding something. The render's read cannot join the claim, which comes before the pace wait
(the access message waits for the chat's pace and for Telegram's 30 messages a second, which a
rush of buyers fills), so it would no longer be the send-time check. An access too long for a
caption goes as two parts and takes a third transaction: the progress mark (``parts_sent`` in
the payload) must be committed after the text leaves and before the calendar file does: folded into
the result, a crash while the file is in flight would send the text again too, a second
duplicate where the outbox promises at most the one message in flight. What can be cut is each
transaction's cost: the render is one prebuilt statement
(``storage.repositories.access``), the writes are prebuilt, and on PostgreSQL the result and the
ticket's ``access_delivered_at`` are one statement. There the claim, the access message's render
and its result each commit on their own, one round trip apiece, without ``BEGIN`` and
``COMMIT`` around them.

Leases and long 429s: a batch can take longer than any fixed lease (Telegram may answer
``retry_after`` of minutes, and the sender waits it out rather than drop the message). Instead of
sizing leases for the worst case, which would also delay recovery after a real crash by as much,
the worker renews the lease of the rows it still holds every ``lease / 4`` while the batch runs:
a live worker never loses a row, a dead one stops renewing and its rows come back after one short
lease. Every write to a claimed row is fenced by the claim's ``attempts`` value, and a row whose
renewal failed (the worker stalled past its lease and another one took the row) is abandoned
before its next send, so a stalled worker cannot send again or overwrite the new owner's result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TypeVar

from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import AppContext
from bot.logs import current_update_id
from bot.metrics import REMINDER_LATENESS
from bot.priority import Priority
from bot.redaction import redact, redact_error
from bot.services import Services
from bot.services.access import render_access
from bot.services.broadcasts import BroadcastProgress, render_broadcast
from bot.services.feedback import render_feedback
from bot.services.outbox import Drop, Outgoing, Renderer, render_notice
from bot.services.recordings import render_recording
from bot.services.reminders import render_reminder
from bot.services.sender import PacedSender
from bot.services.summaries import render_summary
from storage.enums import OutboxKind, OutboxStatus
from storage.models import OutboxMessage
from storage.repositories.outbox import Claim, OutboxRepository
from storage.repositories.sales import SalesRepository

log = logging.getLogger(__name__)
T = TypeVar("T")

# Waits before retrying a failed send (network, 5xx, unexpected errors), then it is recorded as
# failed. 400 Bad Request is not retried: the same request gets the same answer.
BACKOFF_SECONDS = (5, 30, 120, 600, 1800)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
# A row claimed this many times never got an answer recorded: its worker keeps dying on it.
MAX_CLAIMS = MAX_ATTEMPTS + 4
FINAL_CHECK_EVERY_S = 1.0  # how often a kicked drain looks for broadcasts to finish
# On SQLite, while kicks keep coming (a rush's payments), a kicked drain claims at most once per
# this many seconds, so that the rows of several payments come in one claim: there a claim is a
# write transaction of its own whatever its size (0.68 -> 0.38 claims per purchase in a rush).
# Its wait (20 ms at most) is small beside Telegram's own round trip that the access message
# then takes, and the 30 messages a second that a rush shares. On PostgreSQL a claim is one
# statement without a transaction, and the bursts of deliveries cost pre-checkout p99 (median
# 45 -> 54 ms over six pairs) for no CPU saved: none there (``bot.application``).
SQLITE_CLAIM_INTERVAL_S = 0.02
DEFAULT_LEASE = timedelta(minutes=2)


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    dropped: int = 0
    stale: int = 0  # dropped because their moment had passed (reminders after downtime)
    retried: int = 0
    lost: int = 0  # leases lost to another worker: nothing written, nothing sent after
    by_kind: Counter[str] = field(default_factory=Counter)
    drop_reasons: Counter[str] = field(default_factory=Counter)
    broadcasts: set[int] = field(default_factory=set)

    def add(self, other: DispatchStats) -> None:
        for name in ("claimed", "sent", "blocked", "failed", "dropped", "stale", "retried", "lost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_kind.update(other.by_kind)
        self.drop_reasons.update(other.drop_reasons)
        self.broadcasts |= other.broadcasts


class _Held:
    """The rows of the running batch this worker still holds, for the lease keeper.

    ``until`` is when the last lease this worker took or renewed runs out, on this process's
    monotonic clock (stamped before the statement, so never late): past it another worker may
    have claimed the rows, and a worker frozen that long (a paused VM, a stalled loop) must not
    send before its keeper has had a chance to find out."""

    def __init__(self, claims: list[Claim], until: float) -> None:
        self.claims = {claim.id: claim for claim in claims}
        self.lost: set[int] = set()
        self.until = until

    def done(self, claim: Claim) -> None:
        self.claims.pop(claim.id, None)

    def check(self, claim: Claim) -> None:
        """Raise :class:`_Lost` unless the row may still be sent by this worker."""
        if claim.id in self.lost or time.monotonic() >= self.until:
            raise _Lost


class OutboxDispatcher:
    def __init__(
        self,
        app: AppContext,
        sender: PacedSender,
        *,
        batch_size: int = 100,
        lease: timedelta = DEFAULT_LEASE,
        renew_every_s: float | None = None,
        claim_interval_s: float = 0.0,
    ) -> None:
        self.app = app
        self.claim_interval_s = claim_interval_s
        self._claimed_at = -claim_interval_s  # when the last kicked claim began (monotonic)
        self.sender = sender
        self.batch_size = batch_size
        self.lease = lease
        # Real seconds; the lease is in the app clock's time, which is real time in production.
        self.renew_every_s = renew_every_s or max(1.0, lease.total_seconds() / 4)
        self.totals = DispatchStats()
        self._renderers = renderers()
        self.progress = BroadcastProgress(app)
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self._last_final_check = -FINAL_CHECK_EVERY_S

    def kick(self) -> None:
        """Dispatch soon, without waiting for the next scheduler tick (after a payment, say)."""
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        # Started from a handler's kick, this task inherits the update's id; its lines are not
        # that update's.
        current_update_id.set(None)
        while self._again:
            rest = self._claimed_at + self.claim_interval_s - time.monotonic()
            if rest > 0:  # the rows of kicks meanwhile join this claim (SQLITE_CLAIM_INTERVAL_S)
                await asyncio.sleep(rest)
            self._again = False
            self._claimed_at = time.monotonic()
            try:
                # A batch that was not full left nothing due: rows written since kick again,
                # rows due later wait for the scheduler's tick.
                while (await self.run_once()).claimed >= self.batch_size:
                    pass
                # Broadcasts whose last rows another replica sent: once per tick is enough,
                # not once per payment in a rush.
                if time.monotonic() - self._last_final_check >= FINAL_CHECK_EVERY_S:
                    self._last_final_check = time.monotonic()
                    await self._finish_broadcasts(set(), final_only=True)
            except Exception:
                log.exception("outbox dispatch failed; the next tick retries")

    async def idle(self) -> None:
        """Wait until a kicked dispatch has finished (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def run_until_idle(self, max_batches: int = 1_000_000) -> DispatchStats:
        """Deliver everything due now, batch after batch (tests, benchmarks, the CLI)."""
        total = DispatchStats()
        for _ in range(max_batches):
            stats = await self.run_once()
            total.add(stats)
            if not stats.claimed:
                break
        return total

    async def claim(self) -> list[Claim]:
        now = self.app.clock.now()
        async with self.app.transaction(autocommit=True) as transaction:  # one statement
            return await OutboxRepository(transaction).claim_due(
                now=now, lease_until=now + self.lease, limit=self.batch_size
            )

    async def run_once(self) -> DispatchStats:
        """Claim one batch and deliver it; chats in parallel, each chat's rows in order."""
        claimed_at = time.monotonic()
        claims = await self.claim()
        stats = DispatchStats(claimed=len(claims))
        if not claims:
            return stats
        held = _Held(claims, until=claimed_at + self.lease.total_seconds())
        keeper = asyncio.create_task(self._keep_leases(held))
        try:
            by_chat: dict[int, list[Claim]] = defaultdict(list)
            for claim in claims:
                by_chat[claim.chat_id].append(claim)
            results = await asyncio.gather(
                *(self._deliver_chat(chat_claims, held) for chat_claims in by_chat.values())
            )
        finally:
            keeper.cancel()
        for result in results:
            stats.add(result)
        self.totals.add(stats)
        if stats.stale:
            log.warning("dropped %d reminder(s) whose moment passed while undelivered", stats.stale)
        if stats.broadcasts:
            await self._finish_broadcasts(stats.broadcasts)
        return stats

    async def _keep_leases(self, held: _Held) -> None:
        while held.claims:
            await asyncio.sleep(self.renew_every_s)
            claims = list(held.claims.values())
            if not claims:
                return
            try:
                renewed_at = time.monotonic()
                now = self.app.clock.now()
                async with self.app.session_factory() as session:
                    kept = await OutboxRepository(session).renew(
                        claims, lease_until=now + self.lease
                    )
                    await session.commit()
            except Exception:
                log.exception("could not renew outbox leases; trying again")
                continue
            held.until = renewed_at + self.lease.total_seconds()
            for claim in claims:
                if claim.id not in kept and claim.id in held.claims:
                    held.lost.add(claim.id)

    async def _deliver_chat(self, claims: list[Claim], held: _Held) -> DispatchStats:
        stats = DispatchStats()
        for claim in claims:
            try:
                await self._deliver(claim, held, stats)
            except Exception:
                log.exception("outbox row %s could not be processed", claim.id)
            finally:
                held.done(claim)
        return stats

    async def _deliver(self, claim: Claim, held: _Held, stats: DispatchStats) -> None:
        row = claim.message  # as the claim loaded it: nobody else writes a row we hold
        ticket_id = row.ticket_id
        if claim.broadcast_id is not None:
            stats.broadcasts.add(claim.broadcast_id)
        async with self.app.session_factory() as session:
            repo = OutboxRepository(session)
            if claim.attempts > MAX_CLAIMS:
                await self._settle(repo, claim, stats, OutboxStatus.FAILED, "claimed too often")
                await session.commit()
                return
            payload = dict(row.payload or {})
            start = int(payload.get("parts_sent", 0))
            # An access message's buyer waits for it (see ``PacedSender._in_slot``).
            priority = Priority.PAYMENT if row.kind == OutboxKind.ACCESS else Priority.OTHER
            render = partial(_held_then, held, claim, partial(self._render, session, row))
            try:
                held.check(claim)
                parts = None
                if row.kind not in RENDERED_WHEN_SENT or start:
                    parts = await render()
                guard = self._guard(session, row)
                index = start
                while parts is None or index < len(parts):
                    if parts is None:
                        rendered: list[Outgoing] = []
                        await self.sender.send_rendered(
                            claim.chat_id,
                            partial(_first_part, render, rendered),
                            priority=priority,
                        )
                        parts = rendered
                    else:
                        # The first part sent carries what the ticket gives (the access text
                        # has the link or password; its calendar file repeats them): once it
                        # is out, holding back the rest protects nothing.
                        await self.sender.send(
                            claim.chat_id,
                            parts[index],
                            still_wanted=partial(
                                _held_then,
                                held,
                                claim,
                                (guard or _wanted) if index == start else _wanted,
                            ),
                            priority=priority,
                        )
                    index += 1
                    if index < len(parts):
                        # Progress, so that a retry after a crash resumes after this part.
                        payload["parts_sent"] = index
                        kept = await repo.settle(claim, payload=payload)
                        await session.commit()
                        if not kept:
                            raise _Lost
            except _Lost:
                # Another worker holds the row now (or may): nothing more is sent or written.
                stats.lost += 1
                log.warning("outbox row %s was taken over; not sending it", claim.id)
                return
            except Drop as drop:
                await self._settle(repo, claim, stats, OutboxStatus.DROPPED, drop.reason, ticket_id)
                stats.drop_reasons[drop.reason] += 1
                stats.stale += drop.stale
            except _RenderFailed as failed:
                log.error("outbox row %s could not be rendered", claim.id, exc_info=failed.error)
                await self._retry_later(repo, claim, redact_error(failed.error), stats, ticket_id)
            except TelegramForbiddenError as error:
                await self._settle(
                    repo, claim, stats, OutboxStatus.BLOCKED, error.message, ticket_id
                )
                await Services(session, self.app).users.repo.mark_blocked(
                    claim.chat_id, self.app.clock.now()
                )
            except TelegramBadRequest as error:
                await self._settle(
                    repo, claim, stats, OutboxStatus.FAILED, error.message, ticket_id
                )
            except TelegramRetryAfter as error:
                # The sender's 429 budget ran out: due again once Telegram's pause is over.
                await self._retry_later(
                    repo,
                    claim,
                    redact_error(error),
                    stats,
                    ticket_id,
                    min_delay=float(error.retry_after),
                )
            except Exception as error:
                # Network errors, 5xx, a 429 the sender stopped waiting for, anything unexpected:
                # try again later, a bounded number of times.
                await self._retry_later(repo, claim, redact_error(error), stats, ticket_id)
            else:
                now = self.app.clock.now()
                if claim.kind == OutboxKind.REMINDER:
                    REMINDER_LATENESS.observe(max(0.0, (now - claim.due_at).total_seconds()))
                # Organizers see in /participants whether access reached each buyer.
                access_of = ticket_id if row.kind == OutboxKind.ACCESS else None
                if session.in_transaction():  # free SQLite's one connection (the render and
                    await session.commit()  # the guard committed theirs: normally nothing is open)
                # The mark, without a session (storage.direct). On PostgreSQL it is one
                # statement whatever the row (``mark_sent``), so it commits on its own: one
                # round trip instead of three with BEGIN and COMMIT.
                async with self.app.transaction(autocommit=True) as transaction:
                    settled = await OutboxRepository(transaction).mark_sent(
                        claim, now=now, access_of=access_of
                    )
                self._count(claim, ticket_id, stats, OutboxStatus.SENT, None, settled=settled)
                stats.by_kind[str(row.kind)] += 1
                return
            await session.commit()

    async def _render(self, session: AsyncSession, row: OutboxMessage) -> list[Outgoing]:
        """Render a row in a read transaction of its own, ended before anything is sent.

        Raises :class:`Drop` when the row is no longer relevant, :class:`_RenderFailed` when
        rendering broke (the row is tried again later)."""
        try:
            # An ACCESS row's render is one read, run without the session (see
            # ``AccessService.ticket_access``): in group mode only, its invite link is written
            # in the session's transaction.
            with self.app.translator.context():
                renderer = self._renderers.get(row.kind)
                parts = await renderer(Services(session, self.app), row) if renderer else None
            if not parts:
                raise Drop("nothing to send")
        except Drop:
            await session.rollback()
            raise
        except Exception as error:
            await session.rollback()
            raise _RenderFailed(error) from error
        if session.in_transaction():
            await session.commit()  # never hold the database across the network call that follows
        return parts

    def _guard(
        self, session: AsyncSession, row: OutboxMessage
    ) -> Callable[[], Awaitable[bool]] | None:
        """What must still hold when a row's message leaves: a ticket's access and reminders
        (which carry the link or password) go only while the ticket is active.

        Asked after the pace wait, right before the first part of the row leaves (a rendered
        message can wait minutes for its turn). Rows of :data:`RENDERED_WHEN_SENT` need no
        guard on their first part: their render runs at that moment and reads the ticket."""
        if row.ticket_id is None or row.kind not in TICKET_KINDS:
            return None
        ticket_id = row.ticket_id

        async def ticket_active() -> bool:
            active = await SalesRepository(session).ticket_is_active(ticket_id)
            await session.commit()
            return active

        return ticket_active

    async def _settle(
        self,
        repo: OutboxRepository,
        claim: Claim,
        stats: DispatchStats,
        status: OutboxStatus,
        error: str | None,
        ticket_id: int | None = None,
        **extra: object,
    ) -> None:
        error = redact(error) if error else error
        settled = await repo.settle(
            claim, status=status, lease_until=None, last_error=error, **extra
        )
        self._count(claim, ticket_id, stats, status, error, settled=settled)

    @staticmethod
    def _count(
        claim: Claim,
        ticket_id: int | None,
        stats: DispatchStats,
        status: OutboxStatus,
        error: str | None,
        *,
        settled: bool,
    ) -> None:
        if not settled:
            stats.lost += 1
            log.warning("outbox row %s was taken over before it was marked %s", claim.id, status)
            return
        _log_row(claim, ticket_id, status, error)
        counter = {
            OutboxStatus.SENT: "sent",
            OutboxStatus.BLOCKED: "blocked",
            OutboxStatus.FAILED: "failed",
            OutboxStatus.DROPPED: "dropped",
        }[status]
        setattr(stats, counter, getattr(stats, counter) + 1)

    async def _retry_later(
        self,
        repo: OutboxRepository,
        claim: Claim,
        error: str,
        stats: DispatchStats,
        ticket_id: int | None = None,
        *,
        min_delay: float = 0.0,
    ) -> None:
        error = redact(error)
        if claim.attempts >= MAX_ATTEMPTS:
            await self._settle(repo, claim, stats, OutboxStatus.FAILED, error, ticket_id)
            return
        delay = max(BACKOFF_SECONDS[min(claim.attempts, len(BACKOFF_SECONDS)) - 1], min_delay)
        if await repo.settle(
            claim,
            status=OutboxStatus.PENDING,
            lease_until=None,
            last_error=error,
            due_at=self.app.clock.now() + timedelta(seconds=delay),
        ):
            stats.retried += 1
            log.warning(
                "outbox row %s (%s) to chat %s: attempt %s failed, retry in %s s: %s",
                claim.id,
                claim.kind,
                claim.chat_id,
                claim.attempts,
                delay,
                error,
                extra={"outbox_id": claim.id, "ticket_id": ticket_id},
            )
        else:
            stats.lost += 1

    async def _finish_broadcasts(self, touched: set[int], *, final_only: bool = False) -> None:
        try:
            finished = await self.progress.update(self.sender, touched, final_only=final_only)
            if finished:
                self._again = True  # their reports are new outbox rows: deliver them now
        except Exception:
            log.exception("broadcast progress could not be shown; the next batch tries again")


# Kinds that carry what a ticket gives (access, reminders with it, the recording): sent only
# while the ticket is active.
TICKET_KINDS = (OutboxKind.ACCESS, OutboxKind.REMINDER, OutboxKind.RECORDING)

# Kinds rendered once their first part's turn has come, not before the wait: the render reads
# the ticket, so it is the send-time check itself. Worth it for rows that are almost always
# sent (the access message of a ticket just bought); kinds that are dropped in bulk (reminders
# after downtime, a replaced recording) are rendered before the wait, so a drop costs no share
# of Telegram's budget, and their ticket is checked once more after it.
RENDERED_WHEN_SENT = (OutboxKind.ACCESS,)


class _Lost(Exception):
    """The worker no longer holds the row (its lease was lost, or may have run out)."""


async def _wanted() -> bool:
    return True


async def _held_then(held: _Held, claim: Claim, then: Callable[[], Awaitable[T]]) -> T:
    """Check that the row is still held (after the pace wait, right before the send), then go on
    with ``then``: the ticket check or the render."""
    held.check(claim)
    return await then()


class _RenderFailed(Exception):
    """A renderer raised: the row is tried again later, like a failed send."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def _first_part(
    render: Callable[[], Awaitable[list[Outgoing]]], into: list[Outgoing]
) -> Outgoing:
    """Render a row for :meth:`PacedSender.send_rendered`: keep every part, give the first."""
    into[:] = await render()
    return into[0]


def _log_row(claim: Claim, ticket_id: int | None, status: OutboxStatus, error: str | None) -> None:
    """One line per message that reached its end: sent, blocked, failed or dropped."""
    level = logging.WARNING if status == OutboxStatus.FAILED else logging.INFO
    log.log(
        level,
        "outbox row %s (%s%s) to chat %s: %s%s",
        claim.id,
        claim.kind,
        f", ticket {ticket_id}" if ticket_id is not None else "",
        claim.chat_id,
        status,
        f" ({error})" if error else "",
        extra={"outbox_id": claim.id, "ticket_id": ticket_id},
    )


def renderers() -> dict[OutboxKind, Renderer]:
    """The renderer of each outbox kind. Features register theirs here, explicitly."""
    return {
        OutboxKind.NOTICE: render_notice,
        OutboxKind.ACCESS: render_access,
        OutboxKind.REMINDER: render_reminder,
        OutboxKind.BROADCAST: render_broadcast,
        OutboxKind.FEEDBACK: render_feedback,
        OutboxKind.SUMMARY: render_summary,
        OutboxKind.RECORDING: render_recording,
    }


async def dispatch_outbox(app: AppContext) -> None:
    """The scheduler's job: wake the dispatcher of this process."""
    app.wake.outbox()
