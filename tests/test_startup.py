"""Start-up stays light: heavy libraries load when first used, the schema check is one query.

The figures are ``python -m bench.startup``'s; these tests pin the shape that makes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.database import create_engine
from storage.migrate import declared_heads, downgrade, head_revision, upgrade_if_behind
from tests.conftest import BACKEND, create_postgres_database, drop_postgres_database

ROOT = Path(__file__).resolve().parent.parent

# Needed only by a refund, a reconciliation, a chart, a calendar file, a migration: never by
# the bot's start or by an update of the purchase flow.
LAZY = ("stripe", "yookassa", "requests", "icalendar", "matplotlib", "timezonefinder", "alembic")

# Build the running bot as ``python -m bot`` does (application and every router, a real
# Dispatcher), then say which of LAZY got imported.
_PROBE = """
import json, sys
from bot.settings import Settings
from bot.application import BotApplication
from bot.context import AppContext
from bot.clock import SystemClock
from bot.factory import create_dispatcher
from bot.i18n import Translator
from payments.registry import RefunderRegistry
import payments, handlers.admin, handlers.participant  # what the routers import
BotApplication(Settings())
app = AppContext(
    settings=Settings(), clock=SystemClock(), translator=Translator(), session_factory=None,
    refunders=RefunderRegistry(),
)
create_dispatcher(app)
print(json.dumps(sorted(name for name in LAZY if name in sys.modules)))
"""


def test_building_the_bot_imports_no_heavy_library() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BOT_TOKEN": "42:startup-probe",
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
    }
    result = subprocess.run(
        [sys.executable, "-c", f"LAZY = {LAZY!r}\n{_PROBE}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_lazy_refunders_still_import_on_first_use() -> None:
    import payments

    assert payments.StripeRefunder.__name__ == "StripeRefunder"
    assert payments.YooKassaRefunder.__name__ == "YooKassaRefunder"


def test_declared_head_is_alembics() -> None:
    assert declared_heads() == {head_revision()}


@pytest.fixture
async def empty_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if BACKEND == "postgres":
        name = f"webinarpass_startup_{uuid.uuid4().hex[:8]}"
        engine = create_engine(await create_postgres_database(name))
        yield engine
        await engine.dispose()
        await drop_postgres_database(name)
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'startup.db'}")
        yield engine
        await engine.dispose()


async def test_schema_check_migrates_when_behind_and_reads_one_row_when_current(
    empty_engine: AsyncEngine,
) -> None:
    assert await upgrade_if_behind(empty_engine) is True  # never migrated: Alembic runs

    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(empty_engine.sync_engine, "before_cursor_execute", note)
    try:
        assert await upgrade_if_behind(empty_engine) is False
    finally:
        event.remove(empty_engine.sync_engine, "before_cursor_execute", note)
    queries = [statement for statement in statements if not statement.startswith("BEGIN")]
    assert queries == ["SELECT version_num FROM alembic_version"]

    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_revision(head_revision())
    assert isinstance(head.down_revision, str)
    await downgrade(empty_engine, head.down_revision)
    assert await upgrade_if_behind(empty_engine) is True  # one revision behind: upgraded
    assert await upgrade_if_behind(empty_engine) is False
