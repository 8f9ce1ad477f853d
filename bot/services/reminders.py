"""Reminder planning: reminders are outbox rows, one per ticket and offset, due before the start.

Nothing lives in memory per reminder: the dispatcher claims due rows in batches, so memory does
not grow with the number of planned reminders.
"""

from __future__ import annotations

from datetime import timedelta

from bot.services.base import Service
from bot.services.outbox import OutboxService
from storage.enums import OutboxKind
from storage.models import Ticket, Webinar

START_OFFSET = 0  # "starting now": planned for every ticket, whatever the offsets


def reminder_key(ticket_id: int, version: int, offset_minutes: int) -> str:
    return f"reminder:{ticket_id}:v{version}:{offset_minutes}"


class ReminderService(Service):
    async def plan_for_ticket(self, ticket: Ticket, webinar: Webinar) -> int:
        """Plan the ticket's reminders in the caller's transaction; returns how many.

        Offsets already past when the ticket is bought are skipped (no burst of stale reminders
        for late buyers); the start-time reminder is always planned.
        """
        now = self.clock.now()
        outbox = OutboxService(self.session, self.app)
        planned = 0
        offsets = sorted({*webinar.reminder_offsets, START_OFFSET}, reverse=True)
        for offset in offsets:
            due = webinar.starts_at - timedelta(minutes=offset)
            if due <= now and offset != START_OFFSET:
                continue
            planned += await outbox.enqueue(
                OutboxKind.REMINDER,
                dedupe_key=reminder_key(ticket.id, webinar.schedule_version, offset),
                chat_id=ticket.user_id,
                due_at=max(due, now),
                payload={"offset": offset, "version": webinar.schedule_version},
                org_id=webinar.org_id,
                webinar_id=webinar.id,
                ticket_id=ticket.id,
            )
        return planned
