"""Run Alembic migrations from code (``python -m bot migrate`` and start-up).

Alembic itself (with Mako and Pygments behind it) is imported only when a migration runs or the
revision graph is asked for: a bot that starts on an up-to-date database, which is every start but
the first after a release, checks its schema with one small query (:func:`upgrade_if_behind`).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# ``revision: str = "..."`` and ``down_revision: str | None = ...`` as script.py.mako writes them.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` over an engine's connection."""
    from alembic import command

    await _run(engine, lambda config: command.upgrade(config, revision))


async def upgrade_if_behind(engine: AsyncEngine) -> bool:
    """Upgrade to the head unless the database is at it already; whether Alembic ran.

    The database's ``alembic_version`` is compared with the head the revision files declare
    (:func:`declared_heads`, read as text). Anything else (no version table, another revision,
    several heads, a file this reading does not understand) goes through Alembic's upgrade
    exactly as before, so the bot never runs on an older schema.
    """
    heads = declared_heads()
    if heads is not None and len(heads) == 1 and await _stored_revisions(engine) == heads:
        return False
    await upgrade(engine)
    return True


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

    await _run(engine, lambda config: command.downgrade(config, revision))


async def _run(engine: AsyncEngine, action) -> None:
    async with engine.connect() as connection:

        def run(sync_connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = sync_connection
            action(config)

        await connection.run_sync(run)
        await connection.commit()


@cache
def declared_heads() -> frozenset[str] | None:
    """The revisions no other revision file builds on, read from the files' text without
    importing Alembic or them; None if a file does not declare its revisions plainly."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        declared: dict[str, object] = {}
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            try:
                declared.setdefault(name, ast.literal_eval(value))
            except (ValueError, SyntaxError):
                return None
        revision, down = declared.get("revision"), declared.get("down_revision", ...)
        if not isinstance(revision, str) or down is ...:
            return None
        downs = (down,) if isinstance(down, str) or down is None else down
        if not isinstance(downs, tuple | list) or not all(
            isinstance(item, str) or item is None for item in downs
        ):
            return None
        revisions.add(revision)
        parents.update(item for item in downs if item is not None)
    return frozenset(revisions - parents) if revisions else None


async def _stored_revisions(engine: AsyncEngine) -> frozenset[str] | None:
    """The revisions ``alembic_version`` holds; None if it cannot be read (never migrated)."""
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return frozenset(row[0] for row in rows)
    except DBAPIError:
        return None


@cache
def head_revision() -> str | None:
    """The newest revision this code ships (read once: the files do not change while it runs)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
