"""Start-up time: from ``python -m bot`` to its first ``getUpdates``, next to aiogram's own
import time. Figures, not a timed test.

    python -m bench.startup [--runs 5]

The database is migrated once beforehand (``python -m bot migrate``), as a restarted deployment
finds it; the bot then starts against the sandbox Bot API server running in this process, which
notes the moment of the first ``getUpdates``. aiogram's import time is measured the same way: a
fresh interpreter, wall time from start to ``import aiogram`` done. Each figure is the median of
``--runs`` runs. The last line is for scripts:
``startup: first_get_updates_s=S aiogram_import_s=A over_aiogram_s=D``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot.sandbox import SandboxServer

TOKEN = "454545:STARTUP-token-for-the-sandbox"


async def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*argv, env=env)
    if await process.wait() != 0:
        msg = f"{argv} exited with {process.returncode}"
        raise RuntimeError(msg)
    return time.perf_counter() - started


async def first_get_updates(sandbox: SandboxServer, env: dict[str, str]) -> float:
    before = len(sandbox.calls_of("getUpdates", TOKEN))
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", env=env)
    try:
        while len(sandbox.calls_of("getUpdates", TOKEN)) == before:
            if process.returncode is not None:
                msg = f"the bot exited with {process.returncode} before polling"
                raise RuntimeError(msg)
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        process.terminate()  # SIGTERM: the bot's graceful stop
        await process.wait()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        async with SandboxServer() as sandbox:
            sandbox.add_bot(token=TOKEN, username="startup_bot", first_name="Startup")
            env = {
                **os.environ,
                "BOT_TOKEN": TOKEN,
                "TELEGRAM_API_URL": sandbox.url,
                "DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'startup.db'}",
                "LOG_LEVEL": "WARNING",
            }
            await _wall([sys.executable, "-m", "bot", "migrate"], env)
            aiogram = [
                await _wall([sys.executable, "-c", "import aiogram"], env) for _ in range(args.runs)
            ]
            start = [await first_get_updates(sandbox, env) for _ in range(args.runs)]
    bot_s, aiogram_s = statistics.median(start), statistics.median(aiogram)
    print(f"python -m bot to the first getUpdates: {bot_s:.2f} s (median of {args.runs})")
    print(f"python -c 'import aiogram': {aiogram_s:.2f} s")
    print(
        f"startup: first_get_updates_s={bot_s:.2f} aiogram_import_s={aiogram_s:.2f} "
        f"over_aiogram_s={bot_s - aiogram_s:.2f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
