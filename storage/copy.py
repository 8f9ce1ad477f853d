"""Copy a whole database to another, empty one: outgrowing SQLite for PostgreSQL.

``python -m bot copy-db --to postgresql+asyncpg://...`` copies every table of the configured
database into the target in one transaction on the target: tables in foreign-key order, rows in
primary-key pages read through the models' column types (so time zones, JSON and enums arrive as
the target stores them), then the row counts of both sides are compared and the target's
sequences set past the copied ids, before anything is committed. A failure anywhere leaves the
target as it was. The source is read in one transaction too (on SQLite that takes its write
lock: a bot still running waits, and the copy is of one moment); stop the bot anyway, or its
writes after the copy are not in it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table, func, insert, select, text, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.migrate import current_revision, head_revision
from storage.models import Base

PAGE = 1000


class CopyError(RuntimeError):
    """The copy was refused or did not verify; the target was left unchanged."""


def describe(url: str) -> str:
    """A URL fit to print: no password."""
    return make_url(url).render_as_string(hide_password=True)


async def _count(connection: AsyncConnection, table: Table) -> int:
    return int(await connection.scalar(select(func.count()).select_from(table)) or 0)


async def _copy_table(source: AsyncConnection, target: AsyncConnection, table: Table) -> int:
    key = list(table.primary_key.columns)
    copied = 0
    last: tuple | None = None
    while True:
        statement = select(table).order_by(*key).limit(PAGE)
        if last is not None:
            statement = statement.where(tuple_(*key) > tuple_(*last))
        rows = (await source.execute(statement)).all()
        if not rows:
            return copied
        await target.execute(insert(table), [dict(row._mapping) for row in rows])
        copied += len(rows)
        last = tuple(getattr(rows[-1], column.name) for column in key)


async def _reset_sequences(target: AsyncConnection, table: Table) -> None:
    """Make the next generated id follow the copied ones (PostgreSQL; SQLite needs nothing)."""
    key = list(table.primary_key.columns)
    if len(key) != 1 or not key[0].autoincrement:
        return
    column = key[0].name
    sequence = await target.scalar(
        text("SELECT pg_get_serial_sequence(:table, :column)"),
        {"table": table.name, "column": column},
    )
    if sequence is None:
        return
    await target.execute(
        text(
            f'SELECT setval(:sequence, COALESCE((SELECT MAX("{column}") FROM "{table.name}"), 1), '
            f'(SELECT MAX("{column}") IS NOT NULL FROM "{table.name}"))'
        ),
        {"sequence": sequence},
    )


async def copy_database(
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every table from ``source`` to the empty ``target``; returns rows per table."""
    head = head_revision()
    for name, engine in (("source", source), ("target", target)):
        revision = await current_revision(engine)
        if revision != head:
            raise CopyError(
                f"the {name} database is at revision {revision or 'none'}, not {head}: "
                f"run `python -m bot migrate` on it first"
            )
    tables = Base.metadata.sorted_tables
    counts: dict[str, int] = {}
    async with target.connect() as write, source.connect() as read:
        await write.begin()
        non_empty = [table.name for table in tables if await _count(write, table)]
        if non_empty:
            await write.rollback()
            raise CopyError(f"the target database is not empty: {', '.join(non_empty)}")
        for table in tables:
            counts[table.name] = await _copy_table(read, write, table)
            if progress is not None:
                progress(table.name, counts[table.name])
        mismatched = []
        for table in tables:
            expected, found = await _count(read, table), await _count(write, table)
            if not expected == found == counts[table.name]:
                mismatched.append(f"{table.name}: {expected} in the source, {found} copied")
        if mismatched:
            await write.rollback()
            raise CopyError("row counts differ, nothing was committed: " + "; ".join(mismatched))
        if write.dialect.name == "postgresql":
            for table in tables:
                await _reset_sequences(write, table)
        await write.commit()
        await read.rollback()
    return counts
