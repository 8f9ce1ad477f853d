"""``python -m bot [run|migrate|demo|locales]``: the bot's command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.logs import configure_logging, settings_secrets
from bot.settings import MissingTokenError, Settings, require_token


async def _run(settings: Settings) -> None:
    from bot.application import BotApplication

    application = BotApplication(settings)
    await application.setup()
    try:
        if settings.webhook_mode:
            await application.start_webhook()
            await asyncio.Event().wait()
        else:
            await application.run_polling()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser(
        "run", help="start the bot (default): polling, or a webhook if WEBHOOK_URL is set"
    )
    sub.add_parser("migrate", help="apply database migrations and exit")
    demo = sub.add_parser("demo", help="run the whole product locally, no Telegram and no token")
    demo.add_argument("--quiet", action="store_true", help="print only the transcript")
    locales = sub.add_parser("locales", help="translation catalogs: extract or check")
    locales.add_argument("action", choices=["extract", "check"])
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(
        "WARNING" if args.command == "demo" else settings.log_level,
        settings.log_format,
        secrets=settings_secrets(settings),
    )
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "demo":
            from bot.demo import run_demo

            return asyncio.run(run_demo(quiet=args.quiet))
        elif args.command == "locales":
            from bot.locales_tool import main as locales_main

            return locales_main(args.action)
        else:
            require_token(settings)  # before anything else starts: one clear sentence, exit 2
            asyncio.run(_run(settings))
    except MissingTokenError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
