"""The command line a newcomer meets first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"BOT_TOKEN"}}
    env["PYTHONPATH"] = str(ROOT)
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    return env


def test_without_a_token_the_bot_explains_what_to_do(tmp_path: Path) -> None:
    result = _run(env=_clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "BOT_TOKEN" in message
    assert "BotFather" in message
    assert "python -m bot demo" in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "cli.db").exists(), "nothing should start before the token check"


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    for _ in range(2):
        result = _run("migrate", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    assert (tmp_path / "cli.db").exists()


def test_webhook_mode_without_a_strong_secret_explains_what_to_set(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env.update(
        BOT_TOKEN="123456789:TEST-token", WEBHOOK_URL="https://bot.example.org", WEBHOOK_SECRET="x"
    )
    result = _run(env=env, cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "WEBHOOK_SECRET" in message
    assert "secrets.token_urlsafe(32)" in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "cli.db").exists(), "nothing should start before the secret check"
