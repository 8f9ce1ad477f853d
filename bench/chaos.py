"""The crash bench: buyers keep paying (Stars, and cards through the fake YooKassa) and a reminder
fan-out falls due while the bot is killed with SIGKILL at random moments and started again; then
the sandbox's own record of charges and messages is checked against the database.

    python -m bench.chaos                      # both runs below, then the PostgreSQL restart
    python -m bench.chaos --backend sqlite     # one process, polling, SQLite
    python -m bench.chaos --backend postgres   # 3 webhook replicas behind nginx, PostgreSQL, Redis

On SQLite the one bot process is killed and restarted; on PostgreSQL the replicas are killed one
at a time (the others keep serving). ``--pg-restart`` (on by default with the PostgreSQL run)
adds a second part: PostgreSQL itself is restarted in the middle of a rush
(``pg_ctlcluster ... main restart``: the bench's own machine only, never the test suite).

Checked at the end: every charge has exactly one Payment row; every paid order has an active
ticket, or a refund the provider also recorded; no webinar oversold, no link given twice; every
active ticket got its access message (at most the one message in flight per kill twice); every
due reminder sent once. The last line, for scripts:
``chaos: kills=K charges=C lost=L double_tickets=T oversold=O dup_messages=D missing_access=M``.
All traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.cluster import ROOT, Cluster, Replica, nginx_binary
from bench.world import Audit, audit, buy, create_sale, prepare_database, reminders_of
from bot.sandbox import SandboxServer
from bot.sandbox.yookassa import FakeYooKassa

FIRST_BUYER = 41_000_000
FIRST_REMINDED = 42_000_000
YOOKASSA_TOKEN = "381764678:TEST:chaos"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "CHAOS_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/webinarpass_chaos"
)

log = logging.getLogger("chaos")


async def ensure_postgres_database(url: str) -> None:
    import asyncpg

    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database="postgres",
    )
    try:
        exists = await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", parsed.database
        )
        if not exists:
            await connection.execute(f'CREATE DATABASE "{parsed.database}"')
    finally:
        await connection.close()


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
    )


class Run:
    """One run: a sandbox, the fake YooKassa, the bot (one process or replicas), the rush."""

    def __init__(self, args: argparse.Namespace, backend: str, workdir: Path) -> None:
        self.args = args
        self.backend = backend
        self.workdir = workdir
        self.kills = 0
        self.pg_restarts = 0
        self.bought = 0
        self.failed_checkouts = 0
        self.abandoned = 0
        self.latencies: list[float] = []
        self.token = f"{secrets.randbelow(10**9) + 10**9}:CHAOS-{secrets.token_hex(6)}"

    async def execute(self) -> tuple[Audit, dict[str, float]]:
        args = self.args
        if self.backend == "sqlite":
            url = f"sqlite+aiosqlite:///{self.workdir / 'chaos.db'}"
        else:
            url = POSTGRES_URL
            await ensure_postgres_database(url)
        await prepare_database(url)
        reminded = list(range(FIRST_REMINDED, FIRST_REMINDED + args.reminded))
        started = time.monotonic()
        yookassa = FakeYooKassa()
        await yookassa.start()
        async with SandboxServer(record_calls=False) as sandbox:
            sandbox.add_bot(self.token, username="webinarpass_bot", first_name="WebinarPass")
            sandbox.connect_provider(YOOKASSA_TOKEN, yookassa)
            for chat in reminded:
                sandbox.user(chat, first_name="P").started = True
            sale = await create_sale(
                url,
                seats=args.seats,
                card_seats=args.seats,
                reminder_chats=reminded,
                reminders_due_in_s=args.reminders_in,
            )
            env = {
                "LOG_LEVEL": "WARNING",
                "INTAKE_LEASE_S": "5",
                "OUTBOX_LEASE_S": "10",
                "YOOKASSA_PROVIDER_TOKEN": YOOKASSA_TOKEN,
                "YOOKASSA_SHOP_ID": yookassa.shop_id,
                "YOOKASSA_SECRET_KEY": yookassa.secret_key,
                "YOOKASSA_API_URL": yookassa.url,
            }
            if self.backend == "sqlite":
                # INFO: its "up" line tells when it serves (polling opens no port).
                replicas = [self._polling_replica(sandbox.url, url, {**env, "LOG_LEVEL": "INFO"})]
                cluster = None
                await replicas[0].start()
                await replicas[0].wait_ready()
            else:
                cluster = Cluster(
                    self.workdir,
                    replicas=args.replicas,
                    token=self.token,
                    api_url=sandbox.url,
                    database_url=url,
                    redis_url=REDIS_URL,
                    nginx=nginx_binary() is not None,
                    env=env,
                )
                await cluster.start()
                if cluster.nginx is None:  # no load balancer here: the sandbox spreads the pushes
                    sandbox.spread_webhook(cluster.replica_urls)
                replicas = cluster.replicas
            stop_buying = asyncio.Event()
            buyers = asyncio.create_task(self._buyers(sandbox, sale, stop_buying))
            try:
                await self._kill_loop(replicas, sandbox, url, env)
                if self.backend == "postgres" and args.pg_restart:
                    await asyncio.sleep(2)
                    log.warning("restarting PostgreSQL mid-rush")
                    await asyncio.to_thread(restart_postgres)
                    self.pg_restarts += 1
                    await asyncio.sleep(args.after_pg_s)
                stop_buying.set()
                await buyers
                await self._settle(sandbox, url, sale, reminded, yookassa)
                report = await audit(url, sandbox, sale, yookassa=yookassa)
            finally:
                if cluster is not None:
                    await cluster.stop()
                else:
                    for replica in replicas:
                        await replica.terminate()
                await yookassa.stop()
        elapsed = time.monotonic() - started
        figures = {
            "elapsed": elapsed,
            "bought": self.bought,
            "failed_checkouts": self.failed_checkouts,
            "abandoned": self.abandoned,
        }
        return report, figures

    def _polling_replica(self, api_url: str, database_url: str, env: dict[str, str]) -> Replica:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WEBHOOK_") and k not in {"DATABASE_URL", "REDIS_URL"}
        }

        return Replica(
            "polling",
            self.workdir,
            {
                **base,
                "PYTHONPATH": str(ROOT),
                "BOT_TOKEN": self.token,
                "TELEGRAM_API_URL": api_url,
                "DATABASE_URL": database_url,
                "WEBHOOK_PORT": "0",  # no webhook: polling
                **env,
            },
        )

    async def _buyers(self, sandbox: SandboxServer, sale: object, stop: asyncio.Event) -> None:
        """Buyers keep arriving, ``--concurrency`` at a time, until told to stop."""
        args = self.args
        limit = asyncio.Semaphore(args.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        number = 0

        async def one(n: int) -> None:
            card = n % 3 == 2  # a third pay by card
            code = sale.card_code if card else sale.stars_code  # type: ignore[attr-defined]
            try:
                latency = await buy(sandbox, FIRST_BUYER + n, code, card=card, timeout=30)
            except RuntimeError:
                self.failed_checkouts += 1  # refused or timed out at pre-checkout: no charge
            except (AssertionError, TimeoutError):
                self.abandoned += 1  # the bot was down too long for this buyer's patience
            else:
                self.bought += 1
                if latency is not None:
                    self.latencies.append(latency)
            finally:
                limit.release()

        while not stop.is_set() and number < args.seats:
            await limit.acquire()
            task = asyncio.create_task(one(number))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            number += 1
            await asyncio.sleep(args.arrival_s)
        if tasks:
            await asyncio.gather(*tasks)

    async def _kill_loop(
        self, replicas: list[Replica], sandbox: SandboxServer, url: str, env: dict[str, str]
    ) -> None:
        args = self.args
        rng = random.Random(args.seed)
        for _ in range(args.kills):
            await asyncio.sleep(rng.uniform(args.min_gap, args.max_gap))
            victim = rng.choice(replicas)
            await victim.kill()
            self.kills += 1
            log.warning("kill %d: %s", self.kills, victim.name)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            await victim.start()
            await victim.wait_ready()

    async def _settle(
        self,
        sandbox: SandboxServer,
        url: str,
        sale: object,
        reminded: list[int],
        yookassa: FakeYooKassa,
    ) -> None:
        """Wait until the audit is clean (access and reminders out), or the deadline."""
        deadline = time.monotonic() + self.args.settle_s
        while time.monotonic() < deadline:
            report = await audit(url, sandbox, sale, yookassa=yookassa)  # type: ignore[arg-type]
            if report.clean and all(reminders_of(sandbox, chat) for chat in reminded):
                await asyncio.sleep(2)  # a late duplicate would show now
                return
            await asyncio.sleep(1)


def summary(backend: str, run: Run, report: Audit, figures: dict[str, float]) -> str:
    return (
        f"{backend}: {run.kills} kills, {run.pg_restarts} PostgreSQL restarts, "
        f"{figures['bought']:.0f} purchases ({report.charges} charges, "
        f"{figures['failed_checkouts']:.0f} checkouts failed at pre-checkout, "
        f"{figures['abandoned']:.0f} buyers gave up waiting), {report.refunds} refunds, "
        f"reminders {report.reminders_due - report.reminders_missing}/{report.reminders_due} "
        f"(twice: {report.reminders_twice}), links twice {report.links_twice}, "
        f"{figures['elapsed']:.0f} s"
    )


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    totals = Audit()
    kills = 0
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        for backend in backends:
            workdir = Path(scratch) / backend
            workdir.mkdir()
            run = Run(args, backend, workdir)
            report, figures = await run.execute()
            print(summary(backend, run, report, figures))
            for detail in report.details[:10]:
                print(f"  {detail}")
            kills += run.kills
            print(
                f"chaos[{backend}]: kills={run.kills} charges={report.charges} "
                f"lost={report.lost} double_tickets={report.double_tickets} "
                f"oversold={report.oversold} dup_messages={report.dup_messages} "
                f"missing_access={report.missing_access}"
            )
            for name in (
                "charges",
                "lost",
                "double_tickets",
                "oversold",
                "dup_messages",
                "missing_access",
                "reminders_missing",
                "reminders_twice",
                "links_twice",
            ):
                setattr(totals, name, getattr(totals, name) + getattr(report, name))
    print(
        f"chaos: kills={kills} charges={totals.charges} lost={totals.lost} "
        f"double_tickets={totals.double_tickets} oversold={totals.oversold} "
        f"dup_messages={totals.dup_messages} missing_access={totals.missing_access}"
    )
    return 0 if totals.clean and totals.dup_messages <= kills else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--replicas", type=int, default=3, help="webhook replicas on PostgreSQL")
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs per run (at least 10)")
    parser.add_argument("--min-gap", type=float, default=2.0, help="seconds between kills, min")
    parser.add_argument("--max-gap", type=float, default=6.0, help="seconds between kills, max")
    parser.add_argument(
        "--seats", type=int, default=1500, help="seats per webinar (buyers stop there)"
    )
    parser.add_argument("--concurrency", type=int, default=12, help="buyers in flight at once")
    parser.add_argument("--arrival-s", type=float, default=0.1, help="seconds between arrivals")
    parser.add_argument("--reminded", type=int, default=150, help="participants reminded at once")
    parser.add_argument("--reminders-in", type=float, default=20.0, help="seconds to the reminder")
    parser.add_argument(
        "--pg-restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart PostgreSQL mid-rush in the PostgreSQL run",
    )
    parser.add_argument("--after-pg-s", type=float, default=10.0, help="rush after the restart")
    parser.add_argument("--settle-s", type=float, default=120.0, help="wait for deliveries, max")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
