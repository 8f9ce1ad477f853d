from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.models import AccessLink
from storage.repositories.base import Repository

# Rows per INSERT: well under SQLite's bound-parameter limit with three columns each.
BATCH = 500


class LinkRepository(Repository):
    async def urls(self, webinar_id: int) -> set[str]:
        rows = await self.session.scalars(
            select(AccessLink.url).where(AccessLink.webinar_id == webinar_id)
        )
        return set(rows)

    async def add_many(
        self, webinar_id: int, links: Iterable[tuple[str, str | None]], now: datetime
    ) -> None:
        """Insert links; one already in the pool (a concurrent import) is skipped, not an error."""
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        rows = [
            {"webinar_id": webinar_id, "url": url, "label": label, "created_at": now}
            for url, label in links
        ]
        for start in range(0, len(rows), BATCH):
            await self.session.execute(
                insert(AccessLink)
                .values(rows[start : start + BATCH])
                .on_conflict_do_nothing(index_elements=["webinar_id", "url"])
            )

    async def stats(self, webinar_ids: Iterable[int]) -> dict[int, tuple[int, int, int]]:
        """Per webinar: (free, assigned, revoked) link counts."""
        ids = list(webinar_ids)
        if not ids:
            return {}
        revoked = AccessLink.revoked_at.is_not(None)
        assigned = AccessLink.ticket_id.is_not(None)
        rows = await self.session.execute(
            select(
                AccessLink.webinar_id,
                func.sum(case((revoked, 0), (assigned, 0), else_=1)),
                func.sum(case((revoked, 0), (assigned, 1), else_=0)),
                func.sum(case((revoked, 1), else_=0)),
            )
            .where(AccessLink.webinar_id.in_(ids))
            .group_by(AccessLink.webinar_id)
        )
        return {
            webinar_id: (int(free or 0), int(taken or 0), int(gone or 0))
            for webinar_id, free, taken, gone in rows
        }
