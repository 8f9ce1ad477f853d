"""The refund worker: the only place where the bot waits on a payment provider.

It claims due refunds under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas share
the queue without calling a provider twice for one refund), calls the provider for each and
records the answer through :class:`~bot.services.refunds.RefundService`. Refunds the provider
finishes later are asked about the same way. A commit that queues a refund wakes the worker of
its process (:attr:`AppContext.wake`); the scheduler's tick picks up the rest (retries that came
due, refunds queued by another replica, those a dead worker left behind after its lease).
"""

from __future__ import annotations

import asyncio
import logging

from bot.context import AppContext
from bot.services import Services
from bot.services.orders import REFUND_LEASE
from payments.base import PaymentMethod as ProviderMethod
from storage.repositories.sales import SalesRepository

log = logging.getLogger(__name__)

BATCH = 20


class RefundWorker:
    def __init__(self, app: AppContext, *, batch: int = BATCH) -> None:
        self.app = app
        self.batch = batch
        self._again = False
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Look for due refunds soon (after a commit that queued one)."""
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._again:
            self._again = False
            try:
                while await self.run_once() >= self.batch:
                    pass
            except Exception:
                log.exception("refund worker failed; the next tick retries")

    async def idle(self) -> None:
        """Wait until a kicked run has finished (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Process everything due now (tests, the CLI); returns how many claims were handled."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once()
            total += handled
            if not handled:
                break
        return total

    async def run_once(self) -> int:
        """One batch of queued refunds, then one of processing refunds due a question."""
        pending = await self._pending()
        claimed, _ended = await self._processing()
        return pending + claimed

    async def follow_up(self) -> int:
        """Ask the providers about processing refunds that are due; returns how many ended."""
        _claimed, ended = await self._processing()
        return ended

    async def _pending(self) -> int:
        now = self.app.clock.now()
        async with self.app.session_factory() as session:
            claims = await SalesRepository(session).claim_due_refunds(
                now=now, lease_until=now + REFUND_LEASE, limit=self.batch
            )
            await session.commit()
        for claim in claims:
            try:
                async with self.app.session_factory() as session:
                    await Services(session, self.app).refunds.process(claim)
            except Exception:
                # The lease lapses and the refund is claimed again: nothing is lost.
                log.exception("refund %s could not be processed", claim.refund_id)
        return len(claims)

    async def _processing(self) -> tuple[int, int]:
        now = self.app.clock.now()
        async with self.app.session_factory() as session:
            claims = await SalesRepository(session).claim_refunds_to_follow(
                now=now, lease_until=now + REFUND_LEASE, limit=self.batch
            )
            await session.commit()
        ended = 0
        for claim in claims:
            result = await self.app.refunders.refund_status(
                ProviderMethod(claim.method), claim.provider_refund_id
            )
            try:
                async with self.app.session_factory() as session:
                    refunds = Services(session, self.app).refunds
                    ended += await refunds.record_follow_up(claim, result)
            except Exception:
                log.exception("refund %s could not be followed up", claim.refund_id)
        return len(claims), ended


async def work_refunds(app: AppContext) -> None:
    """The scheduler's job: wake this process's refund worker."""
    app.wake.refunds()
