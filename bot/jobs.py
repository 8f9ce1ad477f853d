"""Periodic jobs. APScheduler (3.x) is only the in-process clock that wakes them: it plans nothing
itself and keeps no state, so any number of replicas can run the same jobs against one database.

Each job is a plain async function of the :class:`AppContext` with a deterministic id, so
re-registering on restart never doubles it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.context import AppContext
from bot.services import Services
from bot.services.dispatcher import dispatch_outbox
from bot.services.insight_jobs import plan_feedback, plan_summaries
from bot.services.reconcile import RUN_EVERY, ReconcileReport
from bot.services.refund_worker import work_refunds
from bot.services.sales import sales_maintenance
from storage.repositories.intake import InboundUpdateRepository

log = logging.getLogger(__name__)

Job = Callable[[AppContext], Awaitable[object]]


@dataclass(frozen=True)
class JobSpec:
    id: str
    func: Job
    seconds: float


async def prune_inbound_updates(app: AppContext) -> int:
    """Forget handled updates older than Telegram's redelivery window (a day is plenty)."""
    async with app.session_factory() as session:
        removed = await InboundUpdateRepository(session).prune(app.clock.now() - timedelta(days=1))
        await session.commit()
    return removed


async def reconcile_payments(app: AppContext) -> ReconcileReport:
    """Compare the providers' last days with our payments and fix what is missing (hourly)."""
    async with app.session_factory() as session:
        return await Services(session, app).reconcile.run()


def job_specs() -> list[JobSpec]:
    return [
        JobSpec("outbox-dispatch", dispatch_outbox, 1.0),
        JobSpec("sales-maintenance", sales_maintenance, 60),
        JobSpec("refund-worker", work_refunds, 5),
        JobSpec("prune-inbound-updates", prune_inbound_updates, 3600),
        JobSpec("reconcile-payments", reconcile_payments, RUN_EVERY.total_seconds()),
        JobSpec("feedback-planner", plan_feedback, 60),
        JobSpec("daily-summaries", plan_summaries, 300),
    ]


async def _run_safely(job: Job, app: AppContext, job_id: str) -> None:
    try:
        await job(app)
    except Exception:
        # A failing job must not stop the scheduler; the next wake-up tries again.
        log.exception("job %s failed", job_id)


def create_scheduler(app: AppContext) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for spec in job_specs():
        scheduler.add_job(
            _run_safely,
            "interval",
            seconds=spec.seconds,
            args=(spec.func, app, spec.id),
            id=spec.id,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
    return scheduler
