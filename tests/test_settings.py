from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import DEFAULT_DATABASE_URL, MissingTokenError, Settings, require_token


def test_defaults_need_nothing_but_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "TELEGRAM_API_URL", "BOT_OWNER_IDS", "REDIS_URL", "WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOT_TOKEN", "1:abc")
    settings = Settings(_env_file=None)
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.uses_official_api
    assert not settings.webhook_mode
    assert require_token(settings) == "1:abc"


def test_owner_ids_accept_commas_and_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_OWNER_IDS", "1, 2;3")
    assert Settings(_env_file=None).bot_owner_ids == {1, 2, 3}


def test_bad_owner_ids_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_OWNER_IDS", "alice")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", "1:supersecret")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_secret")
    settings = Settings(_env_file=None)
    assert "supersecret" not in repr(settings)
    assert "sk_test_secret" not in repr(settings)


def test_missing_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOT_TOKEN", raising=False)
    with pytest.raises(MissingTokenError, match="BotFather"):
        require_token(Settings(_env_file=None))


def test_env_example_as_shipped_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied to .env and given only a token, the example file starts the bot: the variables it
    leaves empty are not set."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    example = Path(__file__).parent.parent / ".env.example"
    settings = Settings(_env_file=example, bot_token="1:token")
    assert settings.ops_port is None
    assert settings.webhook_url is None
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.reconcile_unknown_card_charges == "refund"
