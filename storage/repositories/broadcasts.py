from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from storage.enums import BroadcastStatus
from storage.models import Broadcast, Webinar
from storage.repositories.base import Repository


class BroadcastRepository(Repository):
    async def add(self, broadcast: Broadcast) -> Broadcast:
        self.session.add(broadcast)
        await self.session.flush()
        return broadcast

    async def get(self, broadcast_id: int) -> Broadcast | None:
        return await self.session.get(Broadcast, broadcast_id)

    async def with_webinar(
        self, broadcast_id: int, *, org_id: int | None = None
    ) -> tuple[Broadcast, Webinar] | None:
        """The broadcast and its webinar; only within ``org_id`` when it is given."""
        statement = (
            select(Broadcast, Webinar)
            .join(Webinar, Webinar.id == Broadcast.webinar_id)
            .where(Broadcast.id == broadcast_id)
        )
        if org_id is not None:
            statement = statement.where(Broadcast.org_id == org_id)
        row = (await self.session.execute(statement)).first()
        return (row[0], row[1]) if row else None

    async def move(
        self,
        broadcast_id: int,
        *,
        from_status: BroadcastStatus,
        org_id: int | None = None,
        **values: Any,
    ) -> bool:
        """Write ``values`` only if the broadcast is still in ``from_status`` (and, when given,
        belongs to ``org_id``): a conditional write, so of two racing moves exactly one wins."""
        statement = update(Broadcast).where(
            Broadcast.id == broadcast_id, Broadcast.status == from_status
        )
        if org_id is not None:
            statement = statement.where(Broadcast.org_id == org_id)
        result = await self.session.execute(
            statement.values(**values).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    async def ids_with_status(self, status: BroadcastStatus) -> list[int]:
        return list(
            await self.session.scalars(select(Broadcast.id).where(Broadcast.status == status))
        )
