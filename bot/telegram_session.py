"""The bot's HTTP session to the Bot API: aiogram's, with less work per call.

Response models kept alive: aiogram parses every answer through ``Response[method.__returning__]``,
a pydantic generic model. pydantic caches parametrized generics in a ``WeakValueDictionary``, and
nothing else holds them, so each garbage collection drops them and the next call builds the class
again: about 10 ms of schema work for ``Response[list[Update]]``, a few for ``Response[Message]``.
Under load that was the single largest cost of an update. One strong reference per return type (a
few dozen at most, the Bot API's methods) makes each class built once per process, and looking it
up in our own dict skips pydantic's ``__class_getitem__`` (its cache key) at every call.

One JSON body per call: aiogram sends every call as a form, each field prepared on its own and
each nested object (a keyboard, an entity list, a price list) serialized to JSON separately, then
the form url-encoded. Telegram takes the same parameters as one ``application/json`` body, built
here with aiogram's own preparation of each value (defaults, enums, dates, nested objects), so the
parameters are the same. A call that uploads a file still goes as aiogram's multipart form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods.base import Response
from aiohttp import ClientError

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import TelegramMethod
    from aiogram.methods.base import TelegramType

_RESPONSE_MODELS: dict[Any, Any] = {}
_JSON_HEADERS = {"Content-Type": "application/json"}


def response_model(returning: Any) -> Any:
    """``Response[returning]``, built once and kept, so pydantic's weak cache keeps it too."""
    model = _RESPONSE_MODELS.get(returning)
    if model is None:
        model = _RESPONSE_MODELS[returning] = Response[returning]  # type: ignore[valid-type]
    return model


def pin_response_model(returning: Any) -> None:
    response_model(returning)


class BotSession(AiohttpSession):
    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        if 200 <= status_code <= 226:  # aiogram's success range
            try:
                response = response_model(method.__returning__).model_validate(
                    self.json_loads(content), context={"bot": bot}
                )
            except Exception:  # aiogram's own path below raises its ClientDecodeError
                response = None
            if response is not None and response.ok:
                return cast("Response[TelegramType]", response)
        # Errors (and anything odd): aiogram's own checks, with its exceptions.
        pin_response_model(method.__returning__)
        return super().check_response(bot, method, status_code, content)

    def json_body(self, bot: Bot, method: TelegramMethod[TelegramType]) -> bytes | None:
        """The call's parameters as one JSON object, or None if it uploads a file.

        The same values aiogram's form would carry: each prepared by aiogram, and left out
        where the form leaves it out (None, or an empty string).
        """
        files: dict[str, Any] = {}
        body: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files, _dumps_json=False)
            if prepared is None or prepared == "":
                continue
            body[key] = prepared
        if files:
            return None
        return self.json_dumps(body).encode()

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        body = self.json_body(bot, method)
        if body is None:
            return await super().make_request(bot, method, timeout)
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(
                url,
                data=body,
                headers=_JSON_HEADERS,
                timeout=self.timeout if timeout is None else timeout,
            ) as resp:
                raw_result = await resp.text()
        except TimeoutError as e:
            raise TelegramNetworkError(method=method, message="Request timeout error") from e
        except ClientError as e:
            raise TelegramNetworkError(method=method, message=f"{type(e).__name__}: {e}") from e
        response = self.check_response(
            bot=bot, method=method, status_code=resp.status, content=raw_result
        )
        return cast("TelegramType", response.result)
