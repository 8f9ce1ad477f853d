"""A ticket rush through the sandbox Bot API server: figures, not a timed test.

N simulated buyers (``--buyers``, default 1000; ``--concurrency`` at a time, default 100) each
open the webinar's deep link, press the Stars button, pay the invoice in the chat and wait for the
access message (the calendar file, the access as its caption). Then, in the same run and against
the same server, a bare aiogram echo bot answers as many messages (four per buyer: as many
updates as the rush had), and a floor bot serves the same buyers the same flow: plain aiogram
making the bot's five Bot API calls per purchase from constant texts, with no database behind it
(``_serve_floor``).

    python -m bench.rush --buyers 1000 --concurrency 100
    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/rush python -m bench.rush

As in a deployment, the bot runs alone in its own process (polling, with its scheduler), and so
does the echo bot; this process runs the sandbox server and the simulated buyers.

Prints purchase flows per second, pre-checkout answer latency (p50/p99, as the buyer's client sees
it), how long a buyer waited at each step (the card, the invoice, the checkout, the access message,
which confirms the payment: where a rush queues), the bot's messages per flow, the bot's CPU time
per update, the echo bot's and the floor bot's, each read from its own process's counters over its
own run, and the ratios to the echo bot's (a flow is four updates and five Bot API calls: three
messages and the answers to the button and the pre-checkout query; an echo one update and one call).
The floor bot's ratio is what aiogram itself sets for this flow; the bot's ratio above it is what
the database, the durable intake, the outbox and the rules add. The floor bot's pre-checkout p99 is
printed too: plain aiogram's, under the same rush. The last line is for scripts: ``rush:
flows_per_s=F cpu_per_update_ms=B echo_cpu_per_update_ms=E cpu_ratio=R precheckout_p99_ms=P
precheckout_bot_p99_ms=Q floor_cpu_per_update_ms=L floor_ratio=X``, where Q is P without the
simulated round trip (below): the part of the wait the bot itself adds.

The sandbox runs without flood limits and the bot's paced sender is opened up, so the figures
measure the bot's own work, not Telegram's 30 messages per second. ``--rtt-ms 80`` makes every
Bot API call wait that long before its answer, like a real network to Telegram.

``--replicas 1,3`` runs the rush against N replicas instead, for each N given: ``python -m bot``
processes in webhook mode behind nginx, on PostgreSQL (``DATABASE_URL``, or a scratch database
``webinarpass_rush``) and Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``), as
deployed (``bench/cluster.py``). There the sandbox enforces Telegram's limits (30 messages a
second, about one a second per chat) and the bot keeps its default pace through the send budget
it shares in Redis, so the figures include the bot's total send rate against that cap. Last
line per N: ``rush_replicas: n=N flows_per_s=F precheckout_p99_ms=P sends_per_s=S http_429=Q``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message
from sqlalchemy.engine import make_url

from bench.world import prepare_database
from bot.application import BotApplication
from bot.clock import SystemClock
from bot.priority import run
from bot.sandbox import SandboxServer
from bot.settings import Settings
from storage.database import is_sqlite

TOKEN = "424242:RUSH-token-for-the-sandbox"
ECHO_TOKEN = "434343:ECHO-token-for-the-sandbox"
FLOOR_TOKEN = "444444:FLOOR-token-for-the-sandbox"
OWNER_ID = 1000
FIRST_BUYER = 10_000_000
UPDATES_PER_FLOW = 4  # /start, the button, the pre-checkout query, the payment


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def create_webinar(url: str, seats: int) -> str:
    from datetime import timedelta

    from storage.database import create_engine, create_session_factory
    from storage.enums import AccessMode, Role, WebinarStatus
    from storage.models import Organization, OrgMember, User, Webinar

    now = SystemClock().now()
    engine = create_engine(url)
    async with create_session_factory(engine)() as session:
        session.add(User(id=OWNER_ID, first_name="Owner", created_at=now))
        org = Organization(
            name="Rush Webinars",
            contact_email="team@example.org",
            language="en",
            currency="USD",
            timezone="Europe/Rome",
            accept_stars=True,
            created_by=OWNER_ID,
            created_at=now,
        )
        session.add(org)
        await session.flush()
        session.add(OrgMember(org_id=org.id, user_id=OWNER_ID, role=Role.OWNER, created_at=now))
        webinar = Webinar(
            org_id=org.id,
            code="rush",
            title="The big rush",
            description="Everyone at once.",
            starts_at=now + timedelta(days=3),
            duration_minutes=60,
            currency="USD",
            price_stars=1,
            capacity=seats,
            access_mode=AccessMode.PASSWORD,
            room_url="https://meet.example.org/rush",
            room_password="rush",
            status=WebinarStatus.PUBLISHED,
            created_by=OWNER_ID,
            created_at=now,
        )
        session.add(webinar)
        await session.commit()
        code = webinar.code
    await engine.dispose()
    return code


STEPS = ("card", "invoice", "checkout", "access")


async def buyer_flow(
    sandbox: SandboxServer, user_id: int, code: str, bot: str = TOKEN
) -> tuple[float | None, list[float], int]:
    """One purchase, start to access; returns the pre-checkout latency in seconds, how long
    the buyer waited at each of :data:`STEPS` and how many messages the bot sent them."""
    user = sandbox.user(user_id, first_name=f"B{user_id}", language_code="en", bot=bot)
    marks = [time.perf_counter()]
    await user.command("/start", f"w_{code}")
    card = await user.next_message(timeout=60)
    marks.append(time.perf_counter())
    await user.press(card, callback_data=card.buttons[0]["callback_data"], timeout=0)
    invoice = await user.next_message(timeout=60)
    marks.append(time.perf_counter())
    result = await user.pay(invoice)
    marks.append(time.perf_counter())
    if not result.ok:
        raise RuntimeError(f"buyer {user_id}: checkout refused: {result.error_message}")
    # The access message, which confirms the payment: the calendar file with the access as its
    # caption (after the access text, when that is too long for a caption).
    received = [await user.next_message(timeout=60)]
    while not any(message.document for message in received):
        received.append(await user.next_message(timeout=60))
    marks.append(time.perf_counter())
    waits = [b - a for a, b in itertools.pairwise(marks)]
    return result.precheckout_latency_s, waits, 2 + len(received)  # the card, the invoice


def _bot_process(
    api_url: str,
    database_url: str,
    profile_to: str | None,
    trace_sql_to: str | None,
    ready: Any,
    stop: Any,
) -> None:
    """The bot under test, alone in its process as in a deployment."""
    if trace_sql_to:
        _trace_sql(trace_sql_to)
    if not profile_to:
        run(_serve_bot(api_url, database_url, ready, stop))
        return
    import cProfile

    with cProfile.Profile() as profiler:
        run(_serve_bot(api_url, database_url, ready, stop))
    profiler.dump_stats(profile_to)


def _trace_sql(path: str) -> None:
    """Count every statement and transaction the bot runs, written to ``path`` at exit."""
    import atexit
    import collections
    import re

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts: collections.Counter[str] = collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        counts[re.sub(r"\s+", " ", statement)[:160]] += 1
        if context is not None and context.compiled is not None and context.cache_hit.value:
            # A statement compiled again each time costs far more than the query itself.
            counts[f"({context.cache_hit.name}) {statement.split('(')[0][:60]}"] += 1

    @event.listens_for(Engine, "commit")
    def _commit(_conn: Any) -> None:
        counts["COMMIT"] += 1

    def _write() -> None:
        lines = [f"{n:7d}  {statement}" for statement, n in counts.most_common()]
        Path(path).write_text("\n".join(lines) + "\n")

    atexit.register(_write)


async def _serve_bot(api_url: str, database_url: str, ready: Any, stop: Any) -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        _env_file=None,
        bot_token=TOKEN,
        database_url=database_url,
        telegram_api_url=api_url,
        send_rate_per_s=100_000.0,
        send_rate_per_chat_s=1_000.0,
        outbox_batch_size=200,
        log_level="WARNING",
    )
    application = BotApplication(settings, migrate=False)
    await application.setup()
    # As ``python -m bot`` does after start-up (bot/__main__.py): what start-up built lives as
    # long as the process, out of the cyclic collector's sight.
    gc.freeze()
    await application.start_polling()
    ready.set()
    await asyncio.to_thread(stop.wait)
    await application.stop()


def _echo_process(api_url: str, ready: Any, stop: Any) -> None:
    """A bare aiogram echo bot, alone in its process like the bot under test."""
    asyncio.run(_serve_echo(api_url, ready, stop))


async def _serve_echo(api_url: str, ready: Any, stop: Any) -> None:
    bot = Bot(ECHO_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(api_url)))
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "")

    await _poll_until_stopped(bot, dispatcher, ready, stop)


async def _poll_until_stopped(bot: Bot, dispatcher: Dispatcher, ready: Any, stop: Any) -> None:
    """Run aiogram's own polling (the echo and floor bots) until the parent says stop."""
    dispatcher.startup.register(ready.set)  # updates sent meanwhile wait in the server
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    await asyncio.to_thread(stop.wait)
    await dispatcher.stop_polling()
    await polling
    await bot.session.close()


def _floor_process(api_url: str, ready: Any, stop: Any) -> None:
    """The floor bot (:func:`_serve_floor`), alone in its process like the bot under test."""
    asyncio.run(_serve_floor(api_url, ready, stop))


# What the floor bot sends: about the size of the bot's own messages (the card, the invoice, the
# calendar file with the payment's confirmation and the access as its caption).
_FLOOR_CARD = (
    "<b>The big rush</b>\n\nEveryone at once.\n\n🗓 Monday, 30 November 2026, 17:00 "
    "(Europe/Rome)\n⏱ 60 min\n💰 1 ⭐\n🎟 1000 seats left\n\nOrganizer: Rush Webinars"
)
_FLOOR_ICS = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//webinarpass//floor//EN\r\nBEGIN:VEVENT\r\n"
    b"UID:floor@webinarpass\r\nDTSTAMP:20261127T160000Z\r\nDTSTART:20261130T160000Z\r\n"
    b"DTEND:20261130T170000Z\r\nSUMMARY:The big rush\r\nURL:https://meet.example.org/rush\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)


async def _serve_floor(api_url: str, ready: Any, stop: Any) -> None:
    """The same flow as the bot's, in plain aiogram with nothing behind it: the floor.

    Its four handlers make the bot's five Bot API calls per purchase (the card with its button; the
    button's answer and the invoice; the pre-checkout answer; the calendar file with the
    confirmation and the access as its caption) from constant texts: no database, no intake, no
    outbox, no scheduler, no locale. Its CPU per update against the echo bot's is what aiogram alone
    sets for this flow, the floor under the bot's own ratio; the difference is what the bot adds to
    keep the money and the access safe.
    """
    from aiogram import F
    from aiogram.filters import CommandStart
    from aiogram.types import (
        BufferedInputFile,
        CallbackQuery,
        InlineKeyboardButton,
        InlineKeyboardMarkup,
        LabeledPrice,
        PreCheckoutQuery,
    )

    bot = Bot(FLOOR_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(api_url)))
    dispatcher = Dispatcher()
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Pay 1 ⭐", callback_data="buy:1:stars")]]
    )

    @dispatcher.message(CommandStart(deep_link=True))
    async def card(message: Message) -> None:
        await message.answer(_FLOOR_CARD, parse_mode="HTML", reply_markup=keyboard)

    @dispatcher.callback_query(F.data.startswith("buy:"))
    async def invoice(query: CallbackQuery) -> None:
        await query.answer()
        await bot.send_invoice(
            query.from_user.id,
            title="The big rush",
            description="Everyone at once.",
            payload=f"o:{query.from_user.id}:floor",
            currency="XTR",
            prices=[LabeledPrice(label="Ticket", amount=1)],
        )

    @dispatcher.pre_checkout_query()
    async def checkout(query: PreCheckoutQuery) -> None:
        await query.answer(ok=True)

    @dispatcher.message(F.successful_payment)
    async def paid(message: Message) -> None:
        await message.answer_document(
            BufferedInputFile(_FLOOR_ICS, filename="webinar.ics"),
            caption="<b>Payment received.</b> Your access: https://meet.example.org/rush\n"
            "Password: <code>rush</code>",
            parse_mode="HTML",
        )

    await _poll_until_stopped(bot, dispatcher, ready, stop)


class Process:
    """A child process started with ``spawn`` that says when it is ready and stops on request."""

    def __init__(self, target: Any, *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready = context.Event()
        self.stop_event = context.Event()
        self.process = context.Process(
            target=target, args=(*args, self.ready, self.stop_event), daemon=True
        )

    async def __aenter__(self) -> Process:
        self.process.start()
        while not self.ready.is_set():
            if not self.process.is_alive():
                msg = f"{self.process.name} exited with {self.process.exitcode}"
                raise RuntimeError(msg)
            await asyncio.sleep(0.05)
        return self

    def cpu_s(self) -> float:
        """CPU seconds the child has used so far (Linux; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def __aexit__(self, *_exc: object) -> None:
        self.stop_event.set()
        await asyncio.to_thread(self.process.join, 60)
        if self.process.is_alive():
            self.process.kill()


async def run_rush(args: argparse.Namespace, sandbox: SandboxServer, url: str) -> dict[str, Any]:
    code = await create_webinar(url, args.buyers)
    if args.slots is not None:
        os.environ["UPDATE_SLOTS"] = str(args.slots)  # the spawned bot reads its settings anew
    async with Process(_bot_process, sandbox.url, url, args.profile, args.trace_sql) as bot:
        limit = asyncio.Semaphore(args.concurrency)
        latencies: list[float] = []
        steps: list[list[float]] = []
        messages: list[int] = []

        async def one(i: int) -> None:
            async with limit:
                latency, waits, received = await buyer_flow(sandbox, FIRST_BUYER + i, code)
                steps.append(waits)
                messages.append(received)
                if latency is not None:
                    latencies.append(latency)

        started, bot_cpu, own_cpu = time.perf_counter(), bot.cpu_s(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(args.buyers)))
        elapsed = time.perf_counter() - started
        bot_cpu, own_cpu = bot.cpu_s() - bot_cpu, time.process_time() - own_cpu
    return {
        "elapsed": elapsed,
        "latencies": latencies,
        "steps": steps,
        "messages": messages,
        "bot_cpu": bot_cpu,
        "own_cpu": own_cpu,
    }


async def run_echo(
    args: argparse.Namespace, sandbox: SandboxServer, messages: int
) -> tuple[float, float]:
    """The echo bot's updates per second and CPU seconds per update, for as many updates as the
    rush had."""
    sandbox.add_bot(token=ECHO_TOKEN, username="echo_bot", first_name="Echo")
    async with Process(_echo_process, sandbox.url) as echo:
        limit = asyncio.Semaphore(args.concurrency)
        per_user = max(1, messages // args.buyers)

        async def one(i: int) -> None:
            async with limit:
                user = sandbox.user(FIRST_BUYER + i, first_name=f"E{i}", bot=ECHO_TOKEN)
                for n in range(per_user):
                    await user.send(f"hello {n}")
                    await user.next_message(timeout=60)

        started, echo_cpu = time.perf_counter(), echo.cpu_s()
        await asyncio.gather(*(one(i) for i in range(args.buyers)))
        elapsed = time.perf_counter() - started
        echo_cpu = echo.cpu_s() - echo_cpu
    handled = per_user * args.buyers
    return handled / elapsed, echo_cpu / handled


async def run_floor(args: argparse.Namespace, sandbox: SandboxServer) -> tuple[float, float]:
    """The floor bot's CPU seconds per update and its pre-checkout p99 in seconds, for the same
    buyers' flow as the rush."""
    sandbox.add_bot(token=FLOOR_TOKEN, username="floor_bot", first_name="Floor")
    latencies: list[float] = []
    async with Process(_floor_process, sandbox.url) as floor:
        limit = asyncio.Semaphore(args.concurrency)

        async def one(i: int) -> None:
            async with limit:
                latency, _waits, _received = await buyer_flow(
                    sandbox, FIRST_BUYER + i, "rush", bot=FLOOR_TOKEN
                )
                if latency is not None:
                    latencies.append(latency)

        floor_cpu = floor.cpu_s()
        await asyncio.gather(*(one(i) for i in range(args.buyers)))
        floor_cpu = floor.cpu_s() - floor_cpu
    return floor_cpu / (UPDATES_PER_FLOW * args.buyers), percentile(latencies, 0.99)


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SEND_METHODS = {"sendMessage", "sendDocument", "sendPhoto", "sendInvoice", "editMessageText"}


async def run_replicas(args: argparse.Namespace, count: int) -> None:
    """The rush against ``count`` webhook replicas behind nginx (see the module doc)."""
    import secrets

    from bench.chaos import POSTGRES_URL, REDIS_URL, ensure_postgres_database
    from bench.cluster import Cluster
    from bench.world import buy, create_sale
    from bot.sandbox import RateLimit

    url = os.environ.get("DATABASE_URL") or POSTGRES_URL.replace("chaos", "rush")
    if is_sqlite(url):
        raise SystemExit("--replicas needs PostgreSQL: set DATABASE_URL=postgresql+asyncpg://...")
    await ensure_postgres_database(url)
    await prepare_database(url)
    sale = await create_sale(url, seats=args.buyers)
    token = f"{secrets.randbelow(10**9) + 10**9}:RUSH-{secrets.token_hex(6)}"
    sent: list[float] = []
    async with SandboxServer(rate_limit=RateLimit(), rtt_ms=args.rtt_ms) as sandbox:
        sandbox.add_bot(token=token, username="webinarpass_bot", first_name="WebinarPass")
        with tempfile.TemporaryDirectory(prefix="rush-replicas-") as scratch:
            env = {"LOG_LEVEL": "WARNING"}
            if args.slots is not None:
                env["UPDATE_SLOTS"] = str(args.slots)
            cluster = Cluster(
                Path(scratch),
                replicas=count,
                token=token,
                api_url=sandbox.url,
                database_url=url,
                redis_url=os.environ.get("REDIS_URL", REDIS_URL),
                env=env,
            )
            await cluster.start()
            try:
                await sandbox.wait_until(lambda: sandbox.bot().webhook_url == cluster.url, 30)
                pids = [r.process.pid for r in cluster.replicas if r.process is not None]
                limit = asyncio.Semaphore(args.concurrency)
                latencies: list[float] = []

                async def one(i: int) -> None:
                    async with limit:
                        latency = await buy(sandbox, FIRST_BUYER + i, sale.stars_code)
                        if latency is not None:
                            latencies.append(latency)

                cpu_before = [_cpu_s(pid) for pid in pids]
                started = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(args.buyers)))

                def delivered() -> bool:
                    return all(
                        any(m.document for m in sandbox.messages(FIRST_BUYER + i))
                        for i in range(args.buyers)
                    )

                await sandbox.wait_until(delivered, timeout=600, message="every access")
                elapsed = time.perf_counter() - started
                cpu = [_cpu_s(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
            finally:
                await cluster.stop()
        sent = [call.timestamp for call in sandbox.calls if call.ok and call.method in SEND_METHODS]
        http_429 = sandbox.stats.rate_limited
    flows_per_s = args.buyers / elapsed
    latencies_ms = [value * 1000 for value in latencies]
    p99 = percentile(latencies_ms, 0.99)
    sends_per_s = len(sent) / (max(sent) - min(sent)) if len(sent) > 1 else float("nan")
    print(
        f"replicas: {count} behind nginx; PostgreSQL and Redis; buyers: {args.buyers}; "
        f"concurrency: {args.concurrency}; sandbox enforcing 30 messages/s, 1/s per chat"
    )
    print(
        f"  purchase flows (to the calendar file): {flows_per_s:.1f}/s; pre-checkout p50 "
        f"{statistics.median(latencies_ms):.0f} ms, p99 {p99:.0f} ms"
    )
    print(
        f"  bot sends: {len(sent)} at {sends_per_s:.1f}/s against a cap of 30/s; 429s: {http_429}"
    )
    print(
        "  CPU per flow: "
        + ", ".join(f"replica {n + 1} {1000 * c / args.buyers:.1f} ms" for n, c in enumerate(cpu))
        + f"; all replicas {1000 * sum(cpu) / args.buyers:.1f} ms"
    )
    print(
        f"rush_replicas: n={count} flows_per_s={flows_per_s:.1f} precheckout_p99_ms={p99:.0f} "
        f"sends_per_s={sends_per_s:.1f} http_429={http_429}"
    )


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    if args.replicas:
        for count in args.replicas:
            await run_replicas(args, count)
        return
    url = os.environ.get("DATABASE_URL")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if not url:
        tmp = tempfile.TemporaryDirectory(prefix="rush-")
        url = f"sqlite+aiosqlite:///{Path(tmp.name) / 'rush.db'}"
    await prepare_database(url)
    backend = make_url(url).get_backend_name()
    async with SandboxServer(rate_limit=None, record_calls=False, rtt_ms=args.rtt_ms) as sandbox:
        sandbox.add_bot(token=TOKEN, username="webinarpass_bot", first_name="WebinarPass")
        rush = await run_rush(args, sandbox, url)
        echo_per_s, echo_cpu = await run_echo(args, sandbox, UPDATES_PER_FLOW * args.buyers)
        floor_cpu, floor_p99 = await run_floor(args, sandbox)
    if tmp is not None:
        tmp.cleanup()

    flows_per_s = args.buyers / rush["elapsed"]
    latencies_ms = [value * 1000 for value in rush["latencies"]]
    p50 = statistics.median(latencies_ms) if latencies_ms else float("nan")
    p99 = percentile(latencies_ms, 0.99)
    # What the bot itself adds: the simulated round trip is waited once per answer, before it
    # reaches the server, as Telegram's own network would add it.
    bot_p99 = percentile([value - args.rtt_ms for value in latencies_ms], 0.99)
    bot_cpu_ms = 1000 * rush["bot_cpu"] / (UPDATES_PER_FLOW * args.buyers)
    echo_cpu_ms = 1000 * echo_cpu
    ratio = bot_cpu_ms / echo_cpu_ms
    floor_cpu_ms = 1000 * floor_cpu
    floor_ratio = floor_cpu_ms / echo_cpu_ms
    slots = Settings(_env_file=None).update_slots
    print(
        f"database: {backend}; buyers: {args.buyers}; concurrency: {args.concurrency}; "
        f"update slots: {slots}; round trip: {args.rtt_ms:g} ms"
    )
    print(f"purchase flows: {flows_per_s:.1f}/s ({4 * flows_per_s:.1f} updates/s)")
    print(
        f"pre-checkout answer: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"(the bot's own share, without the round trip: p99 {bot_p99:.1f} ms)"
    )
    waits = [
        f"{name} {statistics.median(column):.0f}/{percentile(column, 0.9):.0f}"
        for name, column in zip(
            STEPS, ([1000 * w[i] for w in rush["steps"]] for i in range(len(STEPS))), strict=True
        )
    ]
    print("buyer's wait per step, p50/p90 ms: " + ", ".join(waits))
    print(f"bot's messages per flow: {statistics.mean(rush['messages']):.2f}")
    print(
        f"CPU per flow: bot {1000 * rush['bot_cpu'] / args.buyers:.1f} ms, "
        f"sandbox and buyers {1000 * rush['own_cpu'] / args.buyers:.1f} ms"
    )
    print(
        f"CPU per update: bot {bot_cpu_ms:.2f} ms, echo bot {echo_cpu_ms:.2f} ms, "
        f"floor bot {floor_cpu_ms:.2f} ms"
    )
    print(
        f"CPU ratio to the echo bot: bot {ratio:.2f}, floor bot {floor_ratio:.2f}; the bot adds "
        f"{bot_cpu_ms - floor_cpu_ms:.2f} ms per update to the floor ({ratio - floor_ratio:.2f} "
        "echo updates)"
    )
    print(f"echo bot: {echo_per_s:.1f} updates/s")
    print(f"floor bot: pre-checkout answer p99 {1000 * floor_p99:.1f} ms")
    print(
        f"rush: flows_per_s={flows_per_s:.1f} cpu_per_update_ms={bot_cpu_ms:.2f} "
        f"echo_cpu_per_update_ms={echo_cpu_ms:.2f} cpu_ratio={ratio:.2f} "
        f"precheckout_p99_ms={p99:.1f} precheckout_bot_p99_ms={bot_p99:.1f} "
        f"floor_cpu_per_update_ms={floor_cpu_ms:.2f} floor_ratio={floor_ratio:.2f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buyers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--slots",
        type=int,
        help="the bot's UPDATE_SLOTS (default: the setting's own default, or the environment)",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="write the bot process's cProfile stats to FILE"
    )
    parser.add_argument(
        "--trace-sql",
        metavar="FILE",
        help="write to FILE how many times the bot ran each SQL statement, and its commits",
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="simulated network round trip of every Bot API call, e.g. 80 (default: 0)",
    )
    parser.add_argument(
        "--replicas",
        type=lambda value: [int(part) for part in value.split(",") if part],
        help="run against N webhook replicas behind nginx, for each N of a list such as 1,3",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
