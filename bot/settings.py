"""Typed configuration read from the environment (and an optional ``.env`` file).

Variable names are part of the public interface: scripts and deployments depend on them, so they
are spelled out with ``validation_alias`` instead of being derived from field names.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./webinarpass.db"
OFFICIAL_API_URL = "https://api.telegram.org"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Everything the bot reads from its environment."""

    # A variable left empty (as .env.example leaves most) means "not set": its default applies.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    bot_token: SecretStr | None = Field(default=None, validation_alias=_env("BOT_TOKEN"))
    telegram_api_url: str = Field(
        default=OFFICIAL_API_URL, validation_alias=_env("TELEGRAM_API_URL")
    )
    database_url: str = Field(default=DEFAULT_DATABASE_URL, validation_alias=_env("DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    bot_owner_ids: Annotated[frozenset[int], NoDecode] = Field(
        default=frozenset(), validation_alias=_env("BOT_OWNER_IDS")
    )
    open_registration: bool = Field(default=False, validation_alias=_env("OPEN_REGISTRATION"))
    default_locale: str = Field(default="en", validation_alias=_env("DEFAULT_LOCALE"))

    stripe_provider_token: SecretStr | None = Field(
        default=None, validation_alias=_env("STRIPE_PROVIDER_TOKEN")
    )
    yookassa_provider_token: SecretStr | None = Field(
        default=None, validation_alias=_env("YOOKASSA_PROVIDER_TOKEN")
    )
    stripe_api_key: SecretStr | None = Field(default=None, validation_alias=_env("STRIPE_API_KEY"))
    stripe_api_base: str | None = Field(default=None, validation_alias=_env("STRIPE_API_BASE"))
    yookassa_shop_id: str | None = Field(default=None, validation_alias=_env("YOOKASSA_SHOP_ID"))
    yookassa_secret_key: SecretStr | None = Field(
        default=None, validation_alias=_env("YOOKASSA_SECRET_KEY")
    )
    yookassa_api_url: str | None = Field(default=None, validation_alias=_env("YOOKASSA_API_URL"))

    webhook_url: str | None = Field(default=None, validation_alias=_env("WEBHOOK_URL"))
    webhook_secret: SecretStr | None = Field(default=None, validation_alias=_env("WEBHOOK_SECRET"))
    webhook_host: str = Field(default="0.0.0.0", validation_alias=_env("WEBHOOK_HOST"))
    webhook_port: int = Field(default=8080, validation_alias=_env("WEBHOOK_PORT"))
    webhook_path: str = Field(default="/telegram/webhook", validation_alias=_env("WEBHOOK_PATH"))
    # Polling mode has no web server of its own: /healthz, /readyz and /metrics are served on
    # OPS_HOST:OPS_PORT when a port is given (webhook mode serves them beside the webhook).
    ops_host: str = Field(default="127.0.0.1", validation_alias=_env("OPS_HOST"))
    ops_port: int | None = Field(default=None, validation_alias=_env("OPS_PORT"))

    reconcile_unknown_card_charges: Literal["refund", "report"] = Field(
        default="refund", validation_alias=_env("RECONCILE_UNKNOWN_CARD_CHARGES")
    )
    seat_hold_minutes: int = Field(default=15, ge=1, validation_alias=_env("SEAT_HOLD_MINUTES"))
    outbox_batch_size: int = Field(default=100, ge=1, validation_alias=_env("OUTBOX_BATCH_SIZE"))
    outbox_lease_s: float = Field(default=120.0, ge=5, validation_alias=_env("OUTBOX_LEASE_S"))
    update_slots: int = Field(default=64, ge=1, validation_alias=_env("UPDATE_SLOTS"))
    intake_lease_s: float = Field(default=60.0, gt=0, validation_alias=_env("INTAKE_LEASE_S"))
    intake_max_attempts: int = Field(default=8, ge=1, validation_alias=_env("INTAKE_MAX_ATTEMPTS"))
    # Polling's shortest interval while updates keep coming. Unset: 8 ms on SQLite, none on
    # PostgreSQL (``Intake.poll``).
    intake_batch_wait_ms: float | None = Field(
        default=None, ge=0, le=1000, validation_alias=_env("INTAKE_BATCH_WAIT_MS")
    )
    send_rate_per_s: float = Field(default=28.0, gt=0, validation_alias=_env("SEND_RATE_PER_S"))
    send_rate_per_chat_s: float = Field(
        default=1.0, gt=0, validation_alias=_env("SEND_RATE_PER_CHAT_S")
    )

    log_level: str = Field(default="INFO", validation_alias=_env("LOG_LEVEL"))
    log_format: Literal["text", "json"] = Field(default="text", validation_alias=_env("LOG_FORMAT"))

    @field_validator("bot_owner_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part for part in value.replace(";", ",").replace(" ", ",").split(",") if part]
            try:
                return frozenset(int(part) for part in parts)
            except ValueError as exc:
                msg = "BOT_OWNER_IDS must be Telegram user ids separated by commas"
                raise ValueError(msg) from exc
        if isinstance(value, int):
            return frozenset({value})
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def webhook_mode(self) -> bool:
        return bool(self.webhook_url)

    @property
    def uses_official_api(self) -> bool:
        return self.telegram_api_url == OFFICIAL_API_URL


class MissingTokenError(RuntimeError):
    """Raised when the bot is started without ``BOT_TOKEN``."""

    MESSAGE = (
        "BOT_TOKEN is not set: create a bot with @BotFather in Telegram "
        "(https://t.me/BotFather), then put BOT_TOKEN=<token> in .env or the environment; "
        "to try webinarpass without Telegram or a token, run `python -m bot demo`."
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


def require_token(settings: Settings) -> str:
    """Return the bot token or raise :class:`MissingTokenError`."""
    if settings.bot_token is None or not settings.bot_token.get_secret_value().strip():
        raise MissingTokenError
    return settings.bot_token.get_secret_value().strip()


# Telegram's own rule for secret_token (1-256 characters of A-Z, a-z, 0-9, _ and -), with a floor
# of 32 characters: about 190 bits from that alphabet, out of reach of guessing.
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,256}")


class WebhookSecretError(RuntimeError):
    """Raised when webhook mode is started without a strong ``WEBHOOK_SECRET``."""

    MESSAGE = (
        "WEBHOOK_SECRET must be set in webhook mode to 32-256 characters of A-Z, a-z, 0-9, "
        "_ and - (so only Telegram can push updates to the bot); generate one with "
        '`python -c "import secrets; print(secrets.token_urlsafe(32))"`.'
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


def require_webhook_secret(settings: Settings) -> str:
    """Return the webhook secret or raise :class:`WebhookSecretError`."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not _SECRET.fullmatch(secret):
        raise WebhookSecretError
    return secret
