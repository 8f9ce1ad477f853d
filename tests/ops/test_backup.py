"""backup: a consistent copy of the SQLite database, taken while the bot writes to it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.backup import BackupError, backup_sqlite
from storage.database import create_engine, create_session_factory
from storage.migrate import head_revision, upgrade
from storage.models import InboundUpdate
from tests.factories import inbound_update

ROOT = Path(__file__).resolve().parents[2]


async def test_a_backup_taken_during_writes_opens_and_has_the_rows(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    sessions = create_session_factory(engine)
    written = 0
    stop = asyncio.Event()
    warmed_up = asyncio.Event()  # the bot is busy before the backup starts

    async def write() -> None:
        nonlocal written
        while not stop.is_set():
            async with sessions() as session:
                session.add(inbound_update(bot_id=1, update_id=written))
                await session.commit()
            written += 1
            if written == 200:
                warmed_up.set()
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    await warmed_up.wait()
    before = written
    backup = tmp_path / "backup.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "backup",
        str(backup),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    during = written
    stop.set()
    await writer
    assert process.returncode == 0, err.decode()
    assert "Backup written" in out.decode()
    assert during > before  # the bot kept writing while the copy was taken

    copy = sqlite3.connect(backup)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT version_num FROM alembic_version").fetchone()[0] == (
            head_revision()
        )
        ids = [row[0] for row in copy.execute("SELECT update_id FROM inbound_updates")]
    finally:
        copy.close()
    # One moment's database: every write up to some point, none missing before it.
    assert before <= len(ids) <= written
    assert sorted(ids) == list(range(len(ids)))

    # And the bot itself can run on it.
    restored = create_engine(f"sqlite+aiosqlite:///{backup}")
    try:
        async with create_session_factory(restored)() as session:
            assert await session.scalar(select(func.count()).select_from(InboundUpdate)) == len(ids)
    finally:
        await restored.dispose()
        await engine.dispose()


async def test_backup_refuses_postgresql_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="pg_dump"):
        await backup_sqlite("postgresql+asyncpg://u@h/db", tmp_path / "x.db")
    with pytest.raises(BackupError, match="no SQLite database"):
        await backup_sqlite(f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", tmp_path / "x.db")
