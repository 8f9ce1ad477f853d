"""Jobs that plan what organizers and participants learn after the fact: feedback questions
after a webinar, organizers' daily summaries. Plain functions of the app context, like every job;
each plans outbox rows keyed so that any number of runs, replicas and restarts plan them once."""

from __future__ import annotations

from bot.context import AppContext
from bot.services import Services


async def plan_feedback(app: AppContext) -> int:
    """Plan the feedback questions that are due."""
    async with app.session_factory() as session:
        planned = await Services(session, app).feedback.plan_due()
    if planned:
        app.wake.outbox()
    return planned


async def plan_summaries(app: AppContext) -> int:
    """Plan the daily summaries whose morning has come."""
    async with app.session_factory() as session:
        planned = await Services(session, app).summaries.plan_due()
    if planned:
        app.wake.outbox()
    return planned
