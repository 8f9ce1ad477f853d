"""Logging set-up: one line per event, plain text or JSON, with secrets redacted.

Every record passes through :class:`RedactingFilter` on the root handler, whatever logger wrote
it (aiogram, aiohttp, SQLAlchemy, ours): the message, the arguments and the formatted traceback
are redacted before any formatter sees them. The filter also stamps the id of the update being
handled (``update_id``) on every record written while it is handled, so one update's lines can be
found together.

At INFO the log is meant to read as the history of what happened to money, access and messages:
the chatty per-tick lines of APScheduler and per-update lines of aiogram are raised to WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from bot.redaction import redact, register_secrets

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Loggers that write a line per scheduler tick or per update at INFO: noise, not history.
QUIET_LOGGERS = (
    "apscheduler",
    "apscheduler.scheduler",
    "apscheduler.executors.default",
    "aiogram.event",
    "alembic",
)

current_update_id: ContextVar[int | None] = ContextVar("current_update_id", default=None)

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_exception_formatter = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Redact the rendered message and traceback; stamp the current update id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if not hasattr(record, "update_id"):
            update_id = current_update_id.get()
            if update_id is not None:
                record.update_id = update_id
        record._redacted = True
        return True


class TextFormatter(logging.Formatter):
    """The classic line, with the structured ids appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        suffix = " ".join(f"{key}={value}" for key, value in extras.items())
        return f"{head} [{suffix}]{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message, ids, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    *,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Install one root handler (replacing earlier ones) and return it."""
    register_secrets(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def settings_secrets(settings: Any) -> list[str | None]:
    """Every secret value the settings hold, for :func:`configure_logging`."""
    values: list[str | None] = []
    for name in (
        "bot_token",
        "webhook_secret",
        "stripe_provider_token",
        "yookassa_provider_token",
        "stripe_api_key",
        "yookassa_secret_key",
    ):
        value = getattr(settings, name, None)
        values.append(value.get_secret_value() if value is not None else None)
    for name in ("database_url", "redis_url"):
        url = getattr(settings, name, None)
        if url:
            from sqlalchemy.engine import make_url

            try:
                values.append(make_url(url).password)
            except Exception:  # not a URL SQLAlchemy parses: nothing to pick out
                continue
    return values
