"""A call's parameters, whatever encoding they came in: query string, JSON, form or multipart."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.sandbox.core.errors import bad

__all__ = ["STRING_FIELDS", "Params", "Upload", "coerce", "dumps", "read_params"]


# Form fields that are plain strings in the Bot API. Every other form field is a
# JSON-serialized value (numbers, booleans, objects) and is decoded as such, so a
# text like "123" is not mistaken for a number.
STRING_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "title",
        "description",
        "short_description",
        "payload",
        "provider_token",
        "currency",
        "start_parameter",
        "provider_data",
        "photo_url",
        "name",
        "url",
        "secret_token",
        "ip_address",
        "error_message",
        "callback_query_id",
        "pre_checkout_query_id",
        "shipping_query_id",
        "telegram_payment_charge_id",
        "file_id",
        "language_code",
        "action",
        "invite_link",
        "document",
        "photo",
        "thumbnail",
        "inline_message_id",
        "business_connection_id",
        "message_effect_id",
        "emoji",
        "method",
    }
)


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart request."""

    filename: str | None
    data: bytes
    content_type: str | None

    def describe(self) -> dict[str, Any]:
        """What :attr:`CallRecord.params` shows instead of the bytes."""
        return {"filename": self.filename, "size": len(self.data), "mime_type": self.content_type}


def coerce(name: str, value: str) -> Any:
    if name in STRING_FIELDS or not value or value[0] not in '-0123456789[{tfn"':
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class Params:
    """Typed access to a call's parameters, whatever encoding they came in."""

    __slots__ = ("files", "raw")

    def __init__(self, raw: dict[str, Any], files: dict[str, Upload] | None = None) -> None:
        self.raw = raw
        self.files = files or {}

    def has(self, name: str) -> bool:
        """Whether the parameter was passed (and is not null)."""
        return self.raw.get(name) is not None

    def string(self, name: str, *, required: bool = False) -> str | None:
        """A string parameter; numbers are accepted and stringified."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise bad(f"{name} is empty")
            return None if value is None else ""
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad(f'field "{name}" must be of type String')

    def integer(self, name: str, *, required: bool = False) -> int | None:
        """An integer parameter."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise bad(f"{name} is empty")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value)
        raise bad(f'field "{name}" must be of type Integer')

    def flag(self, name: str, *, required: bool = False) -> bool:
        """A boolean parameter (absent → ``False``)."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise bad(f"{name} is empty")
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise bad(f'field "{name}" must be of type Boolean')

    def structured(self, name: str, *, required: bool = False) -> Any:
        """A JSON-serialized object or array parameter."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise bad(f"{name} is empty")
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad(f"can't parse {name} JSON object") from None
        return value

    def chat_id(self, name: str = "chat_id") -> int | str:
        """A chat identifier: an integer id or an ``@username``."""
        value = self.raw.get(name)
        if value is None or value == "":
            raise bad(f"{name} is empty")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.startswith("@"):
                return value
            with contextlib.suppress(ValueError):
                return int(value)
        raise bad("chat not found")


async def read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    raw: dict[str, Any] = {key: coerce(key, value) for key, value in request.query.items()}
    files: dict[str, Upload] = {}
    if not request.body_exists:
        return raw, files
    content_type = request.content_type
    if content_type == "application/json":
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise bad("can't parse JSON encoded request parameters") from None
        if not isinstance(body, dict):
            raise bad("can't parse JSON encoded request parameters")
        raw.update(body)
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = Upload(value.filename, value.file.read(), value.content_type)
            elif isinstance(value, str):
                raw[key] = coerce(key, value)
    return raw, files


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
