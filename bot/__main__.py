"""``python -m bot [run|migrate|copy-db|backup|demo|locales]``: the bot's command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from contextlib import suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.settings import Settings


async def _run(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully: take nothing new, finish the
    updates in hand (20 s at most), release the rest, close everything, exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):  # Windows has no signal handlers in asyncio
            loop.add_signal_handler(signum, stop.set)
    try:
        from bot.application import BotApplication

        application = BotApplication(settings)
        await application.setup()
    finally:
        _end_startup_gc_pause()
    try:
        if settings.webhook_mode:
            await application.start_webhook()
        else:
            await application.start_polling()
        await stop.wait()
        logging.getLogger(__name__).info("stopping: finishing the updates in hand")
    finally:
        await application.stop()


async def _migrate(settings: Settings) -> None:
    from storage.database import create_engine
    from storage.migrate import upgrade

    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    print(f"Database is up to date: {settings.database_url.split('@')[-1]}")


async def _copy_db(settings: Settings, to_url: str) -> int:
    from storage.copy import CopyError, copy_database, describe
    from storage.database import create_engine, is_sqlite

    if not is_sqlite(settings.database_url):
        print("copy-db copies from the configured SQLite database (DATABASE_URL)", file=sys.stderr)
        return 2
    source, target = create_engine(settings.database_url), create_engine(to_url)
    print(f"Copying {describe(settings.database_url)} to {describe(to_url)}")
    try:
        counts = await copy_database(
            source, target, progress=lambda table, rows: print(f"  {table}: {rows} rows")
        )
    except CopyError as error:
        print(f"Nothing copied: {error}", file=sys.stderr)
        return 1
    finally:
        await source.dispose()
        await target.dispose()
    print(f"Done: {sum(counts.values())} rows in {len(counts)} tables, counts verified.")
    return 0


async def _backup(settings: Settings, path: str) -> int:
    from storage.backup import BackupError, backup_sqlite

    try:
        pages = await backup_sqlite(settings.database_url, path)
    except BackupError as error:
        print(f"No backup: {error}", file=sys.stderr)
        return 1
    print(f"Backup written to {path} ({pages} pages)")
    return 0


def _end_startup_gc_pause() -> None:
    """Collect garbage again, leaving out for good what start-up built.

    Start-up (aiogram's types, the ORM, the routers) allocates some 400,000 objects that live as
    long as the process, and the cyclic collector would walk them all again and again: a sixth
    of the start-up's CPU, and every full collection under load afterwards. :func:`main` pauses
    the collector while they are built; they are then moved out of its sight (``gc.freeze``,
    what the docs advise before forking workers), and it runs as usual on what comes after.
    """
    gc.freeze()
    gc.enable()


def main(argv: list[str] | None = None) -> int:
    gc.disable()  # until start-up is over: see _end_startup_gc_pause
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: list[str] | None) -> int:
    from bot.logs import configure_logging, settings_secrets
    from bot.settings import (
        MissingTokenError,
        Settings,
        WebhookSecretError,
        require_token,
        require_webhook_secret,
    )

    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser(
        "run", help="start the bot (default): polling, or a webhook if WEBHOOK_URL is set"
    )
    sub.add_parser("migrate", help="apply database migrations and exit")
    copy_db = sub.add_parser(
        "copy-db", help="copy the SQLite database into an empty, migrated PostgreSQL one"
    )
    copy_db.add_argument("--to", required=True, metavar="URL", help="postgresql+asyncpg://...")
    backup = sub.add_parser(
        "backup", help="a consistent copy of the SQLite database, safe while the bot runs"
    )
    backup.add_argument("path", help="file to write (replaced if it exists)")
    demo = sub.add_parser("demo", help="run the whole product locally, no Telegram and no token")
    demo.add_argument("--quiet", action="store_true", help="print only the transcript")
    locales = sub.add_parser("locales", help="translation catalogs: extract or check")
    locales.add_argument("action", choices=["extract", "check"])
    args = parser.parse_args(argv)
    if args.command not in (None, "run"):
        gc.enable()  # a command that is not the bot: no start-up to speed up

    settings = Settings()
    configure_logging(
        "WARNING" if args.command == "demo" else settings.log_level,
        settings.log_format,
        secrets=settings_secrets(settings),
    )
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "copy-db":
            return asyncio.run(_copy_db(settings, args.to))
        elif args.command == "backup":
            return asyncio.run(_backup(settings, args.path))
        elif args.command == "demo":
            from bot.demo import run_demo
            from bot.priority import run

            return run(run_demo(quiet=args.quiet))
        elif args.command == "locales":
            from bot.locales_tool import main as locales_main

            return locales_main(args.action)
        else:
            require_token(settings)  # before anything else starts: one clear sentence, exit 2
            if settings.webhook_mode:
                require_webhook_secret(settings)
            from bot.priority import run

            run(_run(settings))
    except (MissingTokenError, WebhookSecretError) as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
