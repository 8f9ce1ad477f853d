"""Online backups of the SQLite database (``python -m bot backup PATH``).

SQLite's backup API copies the database page by page from inside one read transaction. In WAL
mode a reader does not block the writer, so the bot keeps working while the copy is taken, and
the copy is the database as of one moment: every transaction committed before it, none after. It
is written next to ``PATH`` first and renamed into place once it checks out, so a backup that
fails half-way never replaces a good one.

PostgreSQL: ``pg_dump`` (see the README).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    pass


def _backup(source_path: str | None, destination: Path) -> int:
    if not source_path or source_path == ":memory:" or not Path(source_path).exists():
        raise BackupError(f"no SQLite database at {source_path!r}")
    if destination.resolve() == Path(source_path).resolve():
        raise BackupError("the backup path is the database itself")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    # Read only in effect; a read-write handle because a read-only one cannot always open a WAL
    # database whose shared-memory file the bot has not created yet.
    source = sqlite3.connect(source_path, timeout=30)
    try:
        target = sqlite3.connect(partial)
        try:
            # All pages in one step: one read transaction, so writes made meanwhile by the bot
            # cannot restart the copy (they would with a step size, each step a new snapshot).
            source.backup(target, pages=-1)
            pages = int(target.execute("PRAGMA page_count").fetchone()[0])
            check = target.execute("PRAGMA quick_check").fetchone()[0]
            # A self-contained file: no -wal beside it to carry along.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise BackupError(f"the copy failed its check: {check}")
    os.replace(partial, destination)
    return pages


async def backup_sqlite(database_url: str, path: str | Path) -> int:
    """Copy the SQLite database behind ``database_url`` to ``path``; returns its page count."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(
            "backup copies a SQLite database; for PostgreSQL use pg_dump (see the README)"
        )
    # A thread: the copy of a large file must not stall an event loop it shares.
    return await asyncio.to_thread(_backup, url.database, Path(path))
