"""Leases of fleet-wide singleton jobs: one row per job, taken with one conditional write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.models import JobLease
from storage.repositories.base import Repository


class LeaseRepository(Repository):
    async def acquire(self, name: str, *, holder: str, now: datetime, until: datetime) -> bool:
        """Take the lease ``name`` until ``until`` if nobody holds it now.

        One statement: the insert takes a lease nobody ever held; on conflict the update takes
        it over only when it lapsed. On PostgreSQL a concurrent taker waits for the first
        one's commit, then sees a live lease and gets no row back.
        """
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        statement = insert(JobLease).values(name=name, holder=holder, lease_until=until)
        statement = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": holder, "lease_until": until},
            where=JobLease.lease_until <= now,
        ).returning(JobLease.holder)
        return (await self.session.execute(statement)).scalar_one_or_none() == holder

    async def release(self, name: str, *, holder: str, now: datetime) -> None:
        """Give the lease back early, if this holder still has it."""
        await self.session.execute(
            update(JobLease)
            .where(JobLease.name == name, JobLease.holder == holder)
            .values(lease_until=now)
        )
