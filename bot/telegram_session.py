"""The bot's HTTP session to the Bot API: aiogram's, with its response models kept alive.

aiogram parses every answer through ``Response[method.__returning__]``, a pydantic generic model.
pydantic caches parametrized generics in a ``WeakValueDictionary``, and nothing else holds them,
so each garbage collection drops them and the next call builds the class again: about 10 ms of
schema work for ``Response[list[Update]]`` (every ``getUpdates``), a few for ``Response[Message]``.
Under load that was the single largest cost of an update. Holding one strong reference per return
type (a few dozen at most, the Bot API's methods) makes each class built once per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.methods.base import Response

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import TelegramMethod
    from aiogram.methods.base import TelegramType

_RESPONSE_MODELS: dict[Any, Any] = {}


def pin_response_model(returning: Any) -> None:
    """Build ``Response[returning]`` once and keep it, so pydantic's weak cache keeps it too."""
    if returning not in _RESPONSE_MODELS:
        _RESPONSE_MODELS[returning] = Response[returning]  # type: ignore[valid-type]


class BotSession(AiohttpSession):
    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        pin_response_model(method.__returning__)
        return super().check_response(bot, method, status_code, content)
