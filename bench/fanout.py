"""A reminder fan-out under Telegram's rate limits: figures, not a timed test.

N participants (``--participants``, default 3000) hold a ticket whose reminder is due at the same
moment. The sandbox Bot API server enforces 30 messages per second overall and one per second per
chat, answering ``429 retry_after`` beyond that, like Telegram. The real bot (the outbox
dispatcher and the paced sender, as ``python -m bot`` builds them) delivers them.

    python -m bench.fanout --participants 3000
    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/fanout python -m bench.fanout

Prints delivered messages per second divided by the cap, messages lost (a participant without
the reminder) and duplicated (a participant with more than one), and the 429s the bot received.
Then a separate bot process starts against a database holding 100,000 planned reminders (25,000
tickets, four reminders each), ticks its dispatcher and delivers one batch; its peak RSS shows
that memory does not grow with what is planned. The last line, for scripts:
``fanout: rate_vs_cap=R lost=L duplicated=D http_429=N rss_mb_100k=M``.

The PostgreSQL database in ``DATABASE_URL`` is migrated and emptied first (as ``bench/rush.py``
does): point it at a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select, text

from bot.application import BotApplication
from bot.clock import FakeClock
from bot.context import AppContext
from bot.i18n import Translator
from bot.sandbox import RateLimit, SandboxServer
from bot.services.reminders import ReminderService
from bot.settings import Settings
from storage.database import create_engine, create_session_factory, is_sqlite
from storage.enums import AccessMode, Role, TicketStatus, WebinarStatus
from storage.models import Base, Organization, OrgMember, Ticket, User, Webinar
from storage.repositories.outbox import OutboxRepository

TOKEN = "525252:FANOUT-token-for-the-sandbox"
OWNER_ID = 1000
FIRST_PARTICIPANT = 20_000_000
CAP_PER_S = 30.0
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
RSS_TICKETS = 25_000  # four reminders each: 100,000 planned
USER_CHUNK = 5_000


async def prepare_database(url: str) -> None:
    """A clean schema: a fresh SQLite file, or PostgreSQL tables emptied after migrating."""
    from storage.migrate import upgrade

    engine = create_engine(url)
    await upgrade(engine)
    if not is_sqlite(url):
        names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


async def plant(
    app: AppContext, first_user: int, count: int, starts_at: datetime, offsets: list[int]
) -> None:
    """An organization, a webinar, ``count`` participants with tickets and planned reminders."""
    async with app.session_factory() as session:
        org = await session.get(Organization, 1)
        if org is None:
            session.add(User(id=OWNER_ID, first_name="Owner", created_at=NOW))
            await session.flush()
            org = Organization(
                name="Bench",
                contact_email="bench@example.org",
                language="en",
                currency="USD",
                timezone="Europe/Rome",
                created_by=OWNER_ID,
                created_at=NOW,
            )
            session.add(org)
            await session.flush()
            session.add(OrgMember(org_id=org.id, user_id=OWNER_ID, role=Role.OWNER, created_at=NOW))
        webinar = Webinar(
            org_id=org.id,
            code=f"bench{first_user}",
            title="Fan-out",
            starts_at=starts_at,
            currency="USD",
            price_stars=1,
            access_mode=AccessMode.PASSWORD,
            room_url="https://meet.example.org/bench",
            room_password="bench",
            reminder_offsets=offsets,
            status=WebinarStatus.PUBLISHED,
            created_by=OWNER_ID,
            created_at=NOW,
        )
        session.add(webinar)
        await session.flush()
        reminders = ReminderService(session, app)
        for start in range(0, count, USER_CHUNK):
            ids = range(first_user + start, first_user + min(count, start + USER_CHUNK))
            await session.execute(
                insert(User),
                [{"id": user_id, "first_name": "P", "created_at": NOW} for user_id in ids],
            )
            await session.execute(
                insert(Ticket),
                [
                    {
                        "webinar_id": webinar.id,
                        "user_id": user_id,
                        "status": TicketStatus.ACTIVE,
                        "created_at": NOW,
                    }
                    for user_id in ids
                ],
            )
            tickets = await session.execute(
                select(Ticket.id, Ticket.user_id).where(
                    Ticket.webinar_id == webinar.id, Ticket.user_id.between(ids[0], ids[-1])
                )
            )
            rows: list[dict[str, Any]] = []
            for ticket_id, user_id in tickets.all():
                rows.extend(reminders._rows_for(ticket_id, user_id, webinar))
            await OutboxRepository(session).enqueue_many(rows, now=app.clock.now())
        await session.commit()


def settings_for(url: str, api_url: str, rate: float, batch: int) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=TOKEN,
        database_url=url,
        telegram_api_url=api_url,
        send_rate_per_s=rate,
        send_rate_per_chat_s=1.0,
        outbox_batch_size=batch,
    )


async def fan_out(args: argparse.Namespace, url: str, server: SandboxServer) -> dict[str, float]:
    clock = FakeClock(NOW)
    starts_at = NOW + timedelta(days=1)
    users = [server.user(FIRST_PARTICIPANT + index, "P") for index in range(args.participants)]
    for user in users:
        user.started = True
    application = BotApplication(
        settings_for(url, server.url, args.rate, args.batch_size),
        clock=clock,
        translator=Translator(),
        run_scheduler=False,
        migrate=False,
    )
    await application.setup()
    try:
        await plant(application.app, FIRST_PARTICIPANT, args.participants, starts_at, [60])
        clock.set(starts_at - timedelta(hours=1))
        dispatcher = application.outbox
        assert dispatcher is not None
        sent_before = server.stats.requests
        started = time.monotonic()
        stats = await dispatcher.run_until_idle()
        elapsed = time.monotonic() - started
        retry_after = dispatcher.sender.stats.retry_after
    finally:
        await application.stop()
    counts = [len(server.messages(user.id)) for user in users]
    delivered = sum(1 for count in counts if count)
    return {
        "delivered": delivered,
        "elapsed": elapsed,
        "rate_vs_cap": delivered / elapsed / CAP_PER_S,
        "lost": sum(1 for count in counts if count == 0),
        "duplicated": sum(count - 1 for count in counts if count > 1),
        "http_429": retry_after,
        "server_429": server.stats.rate_limited,
        "requests": server.stats.requests - sent_before,
        "stale": stats.stale,
    }


async def rss_child(url: str, api_url: str, batch: int) -> None:
    """The bot process whose memory is measured: 100,000 reminders planned, ticks, one batch."""
    import psutil

    process = psutil.Process()
    peak = process.memory_info().rss
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.005)

    # Sampled, not getrusage's ru_maxrss: Linux carries that across fork and exec, so it would
    # report the parent's (the sandbox's) high-water mark.
    sampler = asyncio.create_task(sample())
    clock = FakeClock(NOW)
    application = BotApplication(
        settings_for(url, api_url, 1000.0, batch),
        clock=clock,
        translator=Translator(),
        run_scheduler=False,
        migrate=False,
    )
    await application.setup()
    try:
        dispatcher = application.outbox
        assert dispatcher is not None
        for _ in range(20):  # scheduler ticks with nothing due yet
            await dispatcher.run_once()
        clock.set(NOW + timedelta(days=1))  # the 24-hour reminders are due: one batch goes out
        stats = await dispatcher.run_once()
    finally:
        await application.stop()
        sampling = False
        await sampler
    peak = max(peak, process.memory_info().rss)
    print(json.dumps({"rss_mb": peak / 2**20, "claimed": stats.claimed}))


async def measure_rss(
    args: argparse.Namespace, url: str, server: SandboxServer, tickets: int, first: int
) -> dict[str, Any]:
    """Plant ``tickets`` more tickets (four reminders each), then measure a fresh bot process."""
    engine = create_engine(url)
    app = AppContext(
        settings=settings_for(url, server.url, 30, args.batch_size),
        clock=FakeClock(NOW),
        translator=Translator(),
        session_factory=create_session_factory(engine),
    )
    try:
        await plant(app, first, tickets, NOW + timedelta(days=2), [1440, 60, 10])
    finally:
        await engine.dispose()
    for index in range(tickets):
        server.user(first + index, "R").started = True
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--rss-child",
        url,
        server.url,
        str(args.batch_size),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


async def main(args: argparse.Namespace) -> None:
    if args.rss_child:
        url, api_url, batch = args.rss_child
        await rss_child(url, api_url, int(batch))
        return
    with tempfile.TemporaryDirectory() as scratch:
        url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///{scratch}/fanout.db"
        await prepare_database(url)
        limit = RateLimit(
            global_per_s=CAP_PER_S, global_burst=30, per_chat_per_s=1.0, per_chat_burst=1
        )
        async with SandboxServer(rate_limit=limit, record_calls=False) as server:
            server.add_bot(token=TOKEN, username="fanout_bot", first_name="Fanout")
            figures = await fan_out(args, url, server)
            print(
                f"fan-out: {figures['delivered']:.0f} of {args.participants} reminders in "
                f"{figures['elapsed']:.1f} s = {figures['delivered'] / figures['elapsed']:.2f}/s "
                f"(cap {CAP_PER_S:.0f}/s, sender rate {args.rate}/s, batch {args.batch_size}); "
                f"429s received {figures['http_429']:.0f} (server counted "
                f"{figures['server_429']:.0f}); database {url.split(':', 1)[0]}"
            )
            rss = {"rss_mb": float("nan"), "claimed": 0}
            if not args.skip_rss:
                # The same process, first with 100 reminders planned, then with 100,000: the
                # difference is what planned reminders cost the bot's memory.
                first = FIRST_PARTICIPANT + args.participants + 1000
                base = await measure_rss(args, url, server, RSS_TICKETS // 1000, first)
                first += RSS_TICKETS // 1000
                rss = await measure_rss(args, url, server, RSS_TICKETS - RSS_TICKETS // 1000, first)
                print(
                    f"memory: peak RSS of a bot process {base['rss_mb']:.1f} MB with 100 "
                    f"reminders planned, {rss['rss_mb']:.1f} MB with 100,000 (each delivered "
                    f"one batch of {rss['claimed']})"
                )
    print(
        f"fanout: rate_vs_cap={figures['rate_vs_cap']:.3f} lost={figures['lost']:.0f} "
        f"duplicated={figures['duplicated']:.0f} http_429={figures['http_429']:.0f} "
        f"rss_mb_100k={rss['rss_mb']:.1f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=3000)
    parser.add_argument(
        "--rate",
        type=float,
        default=29.5,
        help="the paced sender's global rate (SEND_RATE_PER_S); the server's cap is 30/s",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--skip-rss", action="store_true", help="skip the 100,000-row memory run")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parse_args()))
