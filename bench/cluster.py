"""Real bot replicas for tests and benchmarks: N ``python -m bot`` processes in webhook mode on one
database and one Redis, behind nginx, as deployed (``deploy/``), all on loopback.

    cluster = Cluster(workdir, replicas=3, token=TOKEN, api_url=sandbox.url,
                      database_url=url, redis_url="redis://127.0.0.1:6379/0")
    await cluster.start()          # replicas up and ready (/readyz), nginx in front
    await cluster.replicas[1].kill()       # SIGKILL
    await cluster.replicas[1].start()      # and back
    await cluster.replicas[2].terminate()  # SIGTERM: graceful, exit code 0
    await cluster.stop()

Every replica registers nginx's URL as its webhook, so Telegram (the sandbox) pushes there and
nginx spreads the pushes over the replicas that answer. For a crash bench without nginx, the
sandbox can push round-robin to :attr:`Cluster.replica_urls` itself
(``SandboxServer.spread_webhook``).

Lives under ``bench/`` so that the tests and the benches share it while the bot's runtime never
imports it (``tests/test_layers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import IO

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "/telegram/webhook"
UP_LINE = "webinarpass is up as"  # bot/application.py, at INFO, once the process serves
# Inherited variables that would change what a replica is: they are set here or not at all.
_OWN_VARIABLES = {
    "BOT_TOKEN",
    "DATABASE_URL",
    "REDIS_URL",
    "TELEGRAM_API_URL",
    "WEBINARPASS_CRASH_AT",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_binary() -> str | None:
    """nginx on PATH or in /usr/sbin (not on a non-root user's PATH on Debian)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


async def http_status(url: str, timeout: float = 2.0) -> int | None:  # noqa: ASYNC109
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


class Replica:
    """One ``python -m bot`` process serving the webhook on its own loopback port."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = int(env["WEBHOOK_PORT"])
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Where this replica takes webhook pushes."""
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> Replica:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} ---\n".encode())
        self._log.flush()
        # cwd is the work directory: no .env of the checkout is read.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=self._log,
        )
        self.starts += 1
        return self

    async def wait_ready(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        """Until ``/readyz`` answers 200 (database, migrations and Redis checked); a polling
        process (no ``WEBHOOK_URL``) serves no HTTP: until it logs that it is up (INFO)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        webhook = bool(self.env.get("WEBHOOK_URL"))
        while loop.time() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            if webhook:
                if await http_status(f"http://127.0.0.1:{self.port}/readyz") == 200:
                    return
            elif self.output(tail=10**9).count(UP_LINE) >= self.starts:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready within {timeout:g} s:\n{self.output()}")

    async def kill(self) -> None:
        """SIGKILL: no shutdown at all, as when a machine dies."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
        await self._reap()

    async def terminate(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        """SIGTERM: the graceful stop (finish what is in hand, release the rest); exit code."""
        if not self.running:
            await self._reap()
            return self.process.returncode if self.process is not None else 0  # type: ignore[return-value]
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise
        await self._reap()
        assert self.process.returncode is not None
        return self.process.returncode

    async def _reap(self) -> None:
        if self.process is not None:
            await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


class Nginx:
    """nginx in the foreground with a generated config: one upstream of the replicas."""

    def __init__(self, workdir: Path, ports: list[int], listen_port: int | None = None) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self.binary = binary
        self.prefix = workdir / "nginx"
        self.ports = ports
        self.port = listen_port or free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in self.ports
        )
        prefix = self.prefix
        return f"""# Generated by bench/cluster.py: the replicas behind one address.
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream webinarpass {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location = {WEBHOOK_PATH} {{
            proxy_pass http://webinarpass;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A replica that is down, dying or stopping (503): the push goes to the next one.
            # Updates are de-duplicated by id in the database, so a POST may be passed on.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }}
        location = /readyz {{
            proxy_pass http://webinarpass;
            proxy_next_upstream error timeout http_502 http_503;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

    async def start(self) -> Nginx:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config())
        log = (self.prefix / "stderr.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "-p",
            str(self.prefix),
            "-c",
            str(conf),
            "-e",
            str(self.prefix / "error.log"),
            stdout=log,
            stderr=log,
        )
        log.close()
        for _ in range(100):
            if self.process.returncode is not None:
                raise RuntimeError(f"nginx exited:\n{self.errors()}")
            if await http_status(f"{self.url}/nothing") == 404:
                return self
            await asyncio.sleep(0.05)
        raise TimeoutError(f"nginx did not start:\n{self.errors()}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def errors(self) -> str:
        texts = []
        for name in ("error.log", "stderr.log"):
            with contextlib.suppress(OSError):
                texts.append((self.prefix / name).read_text(errors="replace")[-3000:])
        return "\n".join(texts)


class Cluster:
    """N replicas of the bot on one database and one Redis, behind nginx (or not: ``nginx=False``,
    for a caller that spreads the pushes itself)."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int,
        token: str,
        api_url: str,
        database_url: str,
        redis_url: str | None,
        nginx: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.secret = secrets.token_urlsafe(32)
        self.ports = [free_port() for _ in range(replicas)]
        self.nginx = Nginx(workdir, self.ports) if nginx else None
        base = {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}
        base = {k: v for k, v in base.items() if not k.startswith("WEBHOOK_")}
        common = {
            **base,
            "PYTHONPATH": str(ROOT),
            "BOT_TOKEN": token,
            "TELEGRAM_API_URL": api_url,
            "DATABASE_URL": database_url,
            "WEBHOOK_SECRET": self.secret,
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PATH": WEBHOOK_PATH,
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        if redis_url:
            common["REDIS_URL"] = redis_url
        self.replicas = []
        for index, port in enumerate(self.ports):
            own = {**common, "WEBHOOK_PORT": str(port)}
            # Behind nginx every replica registers nginx's address; alone, its own.
            own["WEBHOOK_URL"] = (
                f"{self.nginx.url}{WEBHOOK_PATH}"
                if self.nginx is not None
                else f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
            )
            self.replicas.append(Replica(f"replica{index + 1}", workdir, own))

    @property
    def url(self) -> str:
        """The address Telegram pushes to: nginx's."""
        if self.nginx is None:
            raise RuntimeError("this cluster has no nginx in front")
        return f"{self.nginx.url}{WEBHOOK_PATH}"

    @property
    def replica_urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    async def start(self, timeout: float = 120.0) -> Cluster:  # noqa: ASYNC109
        if self.nginx is not None:
            await self.nginx.start()
        for replica in self.replicas:
            await replica.start()
        await asyncio.gather(*(replica.wait_ready(timeout) for replica in self.replicas))
        return self

    async def restart(self, replica: Replica, timeout: float = 120.0) -> None:  # noqa: ASYNC109
        await replica.start()
        await replica.wait_ready(timeout)

    async def stop(self) -> list[int]:
        """SIGTERM every replica (their exit codes), then nginx."""
        codes = list(await asyncio.gather(*(replica.terminate() for replica in self.replicas)))
        if self.nginx is not None:
            await self.nginx.stop()
        return codes

    async def kill_all(self) -> None:
        for replica in self.replicas:
            await replica.kill()
        if self.nginx is not None:
            await self.nginx.stop()

    def output(self) -> str:
        parts = [f"== {r.name} ==\n{r.output(3000)}" for r in self.replicas]
        if self.nginx is not None:
            parts.append(f"== nginx ==\n{self.nginx.errors()}")
        return "\n".join(parts)
