"""Start-up time: from ``python -m bot`` to its first ``getUpdates``, next to aiogram's own
import time. Figures, not a timed test.

    python -m bench.startup [--runs 5] [--importtime FILE] [--profile FILE]

As a restarted deployment finds things: the database is migrated beforehand (``python -m bot
migrate``) and the code is byte-compiled (the image does it, deploy/Dockerfile). The bot then
starts against the sandbox Bot API server running in this process, which notes the moment the
first ``getUpdates`` *arrives* (it is a long poll: its answer comes seconds later). aiogram's
import time is measured the same way: a fresh interpreter, from start to ``import aiogram`` done.

Both are measured as wall time and as the child's CPU time (user + system, all threads). With
other work on the machine the wall times move a lot, so the runs alternate (aiogram, bot,
aiogram, bot, ...) to see the same load, and the CPU figures are the steadier ones. Each figure
is the median of ``--runs`` runs. ``--importtime`` writes ``python -X importtime`` of one more
start, ``--profile`` a cProfile (CPU time) of one more start. The last line is for scripts:
``startup: first_getupdates_s=S aiogram_import_s=A margin_s=S-A cpu_s=C aiogram_cpu_s=AC
cpu_margin_s=C-AC``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.sandbox import SandboxServer

TOKEN = "454545:STARTUP-token-for-the-sandbox"
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "payments", "storage")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# A child that reports its own CPU time once aiogram is imported.
_IMPORT_AIOGRAM = "import os, aiogram; t = os.times(); print(t.user + t.system)"
# The bot under cProfile, counting CPU time: wall time here is mostly other people's work.
_PROFILED_BOT = (
    "import cProfile, runpy, sys, time\n"
    "profiler = cProfile.Profile(time.process_time)\n"
    "sys.argv = ['bot']\n"
    "try:\n"
    "    profiler.runcall(runpy.run_module, 'bot', run_name='__main__', alter_sys=True)\n"
    "except SystemExit:\n"
    "    pass\n"
    "finally:\n"
    "    profiler.dump_stats({out!r})\n"
)


class Arrivals:
    """Notes when each ``getUpdates`` of our bot reaches the sandbox (before it is answered)."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.times: list[float] = []
        self.changed = asyncio.Event()
        original = sandbox._call

        async def noting(bot: Any, spec: Any, *args: Any, **kwargs: Any) -> Any:
            if spec.name == "getUpdates" and bot.token == TOKEN:
                self.times.append(time.perf_counter())
                self.changed.set()
            return await original(bot, spec, *args, **kwargs)

        sandbox._call = noting  # type: ignore[method-assign]


def _cpu_of(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*argv, env=env)
    if await process.wait() != 0:
        msg = f"{argv} exited with {process.returncode}"
        raise RuntimeError(msg)
    return time.perf_counter() - started


async def import_aiogram(env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh interpreter importing aiogram."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _IMPORT_AIOGRAM, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        msg = f"import aiogram exited with {process.returncode}"
        raise RuntimeError(msg)
    return wall, float(out)


async def first_get_updates(
    arrivals: Arrivals, env: dict[str, str], argv: list[str] | None = None, stderr: Any = None
) -> tuple[float, float | None]:
    """Start the bot; wall and CPU seconds until its first ``getUpdates`` arrives."""
    before = len(arrivals.times)
    arrivals.changed.clear()
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, *(argv or ["-m", "bot"]), env=env, stderr=stderr
    )
    try:
        while len(arrivals.times) == before:
            if process.returncode is not None:
                msg = f"the bot exited with {process.returncode} before polling"
                raise RuntimeError(msg)
            arrivals.changed.clear()
            waiter = asyncio.ensure_future(arrivals.changed.wait())
            exited = asyncio.ensure_future(process.wait())
            await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            exited.cancel()
        cpu = _cpu_of(process.pid)
        return arrivals.times[before] - started, cpu
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: the bot's graceful stop
        await process.wait()


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


async def main(args: argparse.Namespace, importtime: Any, profile: Path | None) -> None:
    for package in PACKAGES:  # what the image's build step does: no compiling at each start
        compileall.compile_dir(ROOT / package, quiet=1)
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        async with SandboxServer() as sandbox:
            sandbox.add_bot(token=TOKEN, username="startup_bot", first_name="Startup")
            arrivals = Arrivals(sandbox)
            env = {
                **os.environ,
                "BOT_TOKEN": TOKEN,
                "TELEGRAM_API_URL": sandbox.url,
                "DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'startup.db'}",
                "LOG_LEVEL": "WARNING",
            }
            await _wall([sys.executable, "-m", "bot", "migrate"], env)
            await import_aiogram(env)  # warm the file cache for both, uncounted
            await first_get_updates(arrivals, env)
            aiogram: list[tuple[float, float]] = []
            bot: list[tuple[float, float | None]] = []
            for _ in range(args.runs):  # alternating, so both see the same load
                aiogram.append(await import_aiogram(env))
                bot.append(await first_get_updates(arrivals, env))
            if importtime is not None:
                await first_get_updates(
                    arrivals, env, ["-X", "importtime", "-m", "bot"], importtime
                )
                print(f"import times written to {args.importtime}")
            if profile is not None:
                await first_get_updates(
                    arrivals, env, ["-c", _PROFILED_BOT.format(out=str(profile))]
                )
                print(f"profile (CPU time) written to {args.profile}")
    bot_s, aiogram_s = (
        statistics.median(w for w, _ in bot),
        statistics.median(w for w, _ in aiogram),
    )
    bot_cpu, aiogram_cpu = _median([c for _, c in bot]), _median([c for _, c in aiogram])
    cpu_margin = None if bot_cpu is None or aiogram_cpu is None else bot_cpu - aiogram_cpu
    print(
        f"python -m bot to the first getUpdates: {bot_s:.2f} s wall, {_fmt(bot_cpu)} s CPU "
        f"(median of {args.runs})"
    )
    print(f"python -c 'import aiogram': {aiogram_s:.2f} s wall, {_fmt(aiogram_cpu)} s CPU")
    print(
        f"startup: first_getupdates_s={bot_s:.2f} aiogram_import_s={aiogram_s:.2f} "
        f"margin_s={bot_s - aiogram_s:.2f} cpu_s={_fmt(bot_cpu)} "
        f"aiogram_cpu_s={_fmt(aiogram_cpu)} cpu_margin_s={_fmt(cpu_margin)}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--importtime", metavar="FILE", help="write -X importtime of one start")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of one start")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    profile = Path(args.profile).resolve() if args.profile else None
    if args.importtime:
        with Path(args.importtime).open("wb") as importtime:
            asyncio.run(main(args, importtime, profile))
    else:
        asyncio.run(main(args, None, profile))


if __name__ == "__main__":
    run(parse_args())
