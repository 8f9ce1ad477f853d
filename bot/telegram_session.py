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
parameters are the same. The body is walked as aiogram's ``prepare_value`` walks it, with less
work per value: ``model_dump`` leaves out the unset (None) fields that aiogram would drop after
preparing them (a ``sendMessage`` dumps about twenty, and each keyboard button ten), plain JSON
values (strings, numbers, booleans) are taken as they are, and what is left (a file, an enum, a
date) goes through ``prepare_value`` itself. The method itself is built as aiogram builds it,
validated: pydantic's ``model_construct`` (no validation) walks every field's default in Python,
about 50 µs for a ``sendMessage`` against 6 µs for validating it.

A call that uploads a file goes as the fields of aiogram's multipart form, in one body built
here. aiohttp writes aiogram's form with chunked encoding, a write (and a ``send`` system call)
for each boundary, header and chunk, about twenty for a calendar file and its caption, after
building a payload object and its headers for every field: an upload cost twice a text message.
When every file is already in memory (``BufferedInputFile``: the calendar, a chart) the same
fields (prepared as for the JSON body, then each a string as the form has it) and the files are
joined into one ``multipart/form-data`` body; a file on disk or at a URL is still streamed by
aiogram's own path.

JSON through orjson, as aiogram's ``json_loads``/``json_dumps`` hooks let it: every answer is
decoded and every body encoded, about ten times faster than with the standard library's ``json``.

Answers nobody reads: the paced sender's messages (the outbox's access texts, calendar files,
reminders, broadcasts) are sent and forgotten; nothing reads the ``Message`` Telegram returns.
Inside :func:`unread_answer` a successful answer is decoded only to check ``ok`` and no model of
it is built (a ``Message`` with its chat, sender, entities and keyboard is most of the client's
work on a call, after aiohttp's). Failures still go through aiogram's ``check_response``, so a
429, a blocked user or a bad request raise the same exceptions with the same fields.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiogram.__meta__ import __version__
from aiogram.client.default import Default
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods.base import Response
from aiogram.types import BufferedInputFile, InputFile, TelegramObject
from aiohttp import ClientError, ClientSession, ClientTimeout, DummyCookieJar
from aiohttp.hdrs import USER_AGENT
from aiohttp.http import SERVER_SOFTWARE
from yarl import URL

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import TelegramMethod
    from aiogram.methods.base import TelegramType

_RESPONSE_MODELS: dict[Any, Any] = {}
_JSON_HEADERS = {"Content-Type": "application/json"}

# Set while a call whose answer nobody reads is made (see the module doc).
_unread: ContextVar[bool] = ContextVar("unread_answer", default=False)
# What such a call returns: ``ok``, and no result.
_UNREAD_ANSWER: Response[Any] = Response[Any].model_construct(ok=True, result=None)
_PLAIN = (str, int, bool, float)  # JSON values as they are (exact types: not enums)


@contextmanager
def unread_answer() -> Iterator[None]:
    """Bot API calls made inside return None on success: their answer is not parsed.

    Errors raise as always. Request middlewares see the calls as always.
    """
    token = _unread.set(True)
    try:
        yield
    finally:
        _unread.reset(token)


def response_model(returning: Any) -> Any:
    """``Response[returning]``, built once and kept, so pydantic's weak cache keeps it too."""
    model = _RESPONSE_MODELS.get(returning)
    if model is None:
        model = _RESPONSE_MODELS[returning] = Response[returning]  # type: ignore[valid-type]
    return model


def pin_response_model(returning: Any) -> None:
    response_model(returning)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class BotSession(AiohttpSession):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("json_loads", orjson.loads)
        kwargs.setdefault("json_dumps", _json_text)
        super().__init__(*args, **kwargs)
        self._urls: dict[tuple[str, str], URL] = {}
        self._timeouts: dict[float, ClientTimeout] = {}

    async def create_session(self) -> ClientSession:
        """aiogram's session, without a cookie jar: the Bot API sets no cookies, and aiohttp
        filters the jar for every request."""
        if self._should_reset_connector:
            await self.close()
        if self._session is None or self._session.closed:
            self._session = ClientSession(
                connector=self._connector_type(**self._connector_init),
                headers={USER_AGENT: f"{SERVER_SOFTWARE} aiogram/{__version__}"},
                cookie_jar=DummyCookieJar(),
            )
            self._should_reset_connector = False
        return self._session

    def _url(self, token: str, method: str) -> URL:
        """The method's address, parsed once (aiohttp parses a string at every call)."""
        url = self._urls.get((token, method))
        if url is None:
            if len(self._urls) > 1024:  # bots come and go (tests, a token changed)
                self._urls.clear()
            url = self._urls[token, method] = URL(self.api.api_url(token=token, method=method))
        return url

    def _timeout(self, seconds: float) -> ClientTimeout:
        """aiohttp's timeout object for ``seconds``, built once (aiohttp builds one per call
        from a number)."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = ClientTimeout(total=seconds)
        return timeout

    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        if 200 <= status_code <= 226:  # aiogram's success range
            if _unread.get():
                try:
                    answer = self.json_loads(content)
                except Exception:  # aiogram's own path below raises its ClientDecodeError
                    answer = None
                if isinstance(answer, dict) and answer.get("ok") is True:
                    return cast("Response[TelegramType]", _UNREAD_ANSWER)
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
        body, files = self._prepared(bot, method)
        return None if files else orjson.dumps(body)

    def _prepared(
        self, bot: Bot, method: TelegramMethod[TelegramType]
    ) -> tuple[dict[str, Any], dict[str, InputFile]]:
        """The parameters aiogram's form would carry (values not yet JSON-encoded), and files."""
        files: dict[str, InputFile] = {}
        body: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False, exclude_none=True).items():
            prepared = self._prepare(value, bot, files)
            if prepared is None or prepared == "":
                continue
            body[key] = prepared
        return body, files

    def _body(
        self, bot: Bot, method: TelegramMethod[TelegramType]
    ) -> tuple[bytes, dict[str, str]] | None:
        """The request's body and headers, or None to leave the call to aiogram's own path."""
        body, files = self._prepared(bot, method)
        if not files:
            return orjson.dumps(body), _JSON_HEADERS
        return self._multipart(body, files)

    def _multipart(
        self, body: dict[str, Any], files: dict[str, InputFile]
    ) -> tuple[bytes, dict[str, str]] | None:
        """aiogram's form, as ``multipart/form-data`` in one piece: each field's value as the
        form has it (a string as it is, anything else JSON), then each file under its
        ``attach://`` name. None (aiogram streams the form) unless every file is in memory."""
        uploads: list[tuple[str, str, BufferedInputFile]] = []
        for key, file in files.items():
            filename = file.filename or key
            if not isinstance(file, BufferedInputFile) or "\r" in filename or "\n" in filename:
                return None  # on disk or at a URL; or a name aiohttp refuses, as it will
            # Quoted as aiohttp quotes it in aiogram's form (``quote_fields=False``).
            uploads.append((key, filename.replace("\\", "\\\\").replace('"', '\\"'), file))
        boundary = secrets.token_hex(16)
        dash = f"--{boundary}\r\n".encode()
        parts: list[bytes] = []
        for key, value in body.items():
            text = value if isinstance(value, str) else self.json_dumps(value)
            parts += (
                dash,
                f'Content-Disposition: form-data; name="{key}"\r\n\r\n'.encode(),
                text.encode(),
                b"\r\n",
            )
        for key, filename, file in uploads:
            parts += (
                dash,
                f'Content-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode(),
                file.data,
                b"\r\n",
            )
        parts.append(f"--{boundary}--\r\n".encode())
        content_type = f"multipart/form-data; boundary={boundary}"
        return b"".join(parts), {"Content-Type": content_type}

    def _prepare(self, value: Any, bot: Bot, files: dict[str, Any]) -> Any:
        """aiogram's ``prepare_value(..., _dumps_json=False)``, with plain JSON taken as it is."""
        kind = type(value)
        if kind in _PLAIN:
            return value
        if kind is dict:
            prepared_dict = {}
            for key, item in value.items():
                prepared = self._prepare(item, bot, files)
                if prepared is not None:
                    prepared_dict[key] = prepared
            return prepared_dict
        if kind is list:
            return [
                prepared
                for item in value
                if (prepared := self._prepare(item, bot, files)) is not None
            ]
        if isinstance(value, Default):
            return self._prepare(bot.default[value.name], bot, files)
        if isinstance(value, TelegramObject):
            return self._prepare(value.model_dump(warnings=False, exclude_none=True), bot, files)
        return self.prepare_value(value, bot=bot, files=files, _dumps_json=False)

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        prepared = self._body(bot, method)
        if prepared is None:
            return await super().make_request(bot, method, timeout)
        body, headers = prepared
        session = await self.create_session()
        url = self._url(bot.token, method.__api_method__)
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=self._timeout(self.timeout if timeout is None else timeout),
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
