"""A sandbox Telegram Bot API server: a real HTTP server speaking Telegram's protocol.

Bots connect to it exactly as to ``api.telegram.org``::

    server = SandboxServer()
    await server.start()
    server.add_bot("123456:TEST", username="webinarpass_bot")
    bot = Bot("123456:TEST", session=AiohttpSession(api=TelegramAPIServer.from_base(server.url)))

Simulated users (:class:`~bot.sandbox.users.SimUser`) live in the same event loop
and produce updates, delivered by long polling (``getUpdates``) or by webhook.
Every API call is recorded in :attr:`SandboxServer.calls`, and everything that
happens is rendered in :meth:`SandboxServer.transcript`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Self

import aiohttp
from aiohttp import web

from bot.sandbox.api import callbacks, chats, files, limits, messages, payments, profile, updates
from bot.sandbox.core.errors import ApiError
from bot.sandbox.core.faults import REDIRECT_MARK, Faults, TransportFault, TransportFaultKind
from bot.sandbox.core.host import CardProcessor
from bot.sandbox.core.params import Params, Upload, dumps, read_params
from bot.sandbox.core.routing import MethodSpec, find_method
from bot.sandbox.core.state import (
    BotMessage,
    CallRecord,
    Charge,
    InvoiceInfo,
    PendingQuery,
    RefundEvent,
    SandboxState,
    ServerStats,
    SimBot,
    SimChat,
    StoredFile,
    UserProfile,
)
from bot.sandbox.ratelimit import RateLimit, RateLimiter
from bot.sandbox.users import SimUser

__all__ = ["SandboxServer"]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
_TOKEN_RE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")


class SandboxServer:
    """An in-process Telegram Bot API server for tests, demos and benchmarks.

    :param host: interface to bind.
    :param port: TCP port, ``0`` for a free one (see :attr:`url` after :meth:`start`).
    :param rate_limit: Telegram-like flood limits, ``None`` to disable.
    :param precheckout_timeout: seconds a bot has to answer a ``pre_checkout_query``.
    :param webhook_retry_delay: first delay before re-posting a failed webhook update;
        it doubles up to ``webhook_max_retry_delay``.
    :param webhook_timeout: seconds to wait for a webhook response.
    :param record_calls: keep every call in :attr:`calls` (counters are kept regardless).
    :param rtt_ms: simulated network round trip, waited before answering every Bot API call
        (Telegram's is 50-150 ms from most hosts; the default, 0, answers at once).
    :param clock: the time charges and Stars transactions are dated with (``time.time``).
    :param star_transactions_newest_first: list ``getStarTransactions`` newest first instead
        of the documented chronological order, to check a client copes with either.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_limit: RateLimit | None = None,
        precheckout_timeout: float = 10.0,
        webhook_retry_delay: float = 0.05,
        webhook_max_retry_delay: float = 2.0,
        webhook_timeout: float = 10.0,
        record_calls: bool = True,
        rtt_ms: float = 0.0,
        clock: Callable[[], float] = time.time,
        star_transactions_newest_first: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.precheckout_timeout = precheckout_timeout
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_max_retry_delay = webhook_max_retry_delay
        self.webhook_timeout = webhook_timeout
        self.record_calls = record_calls
        self.rtt_ms = rtt_ms
        self.clock = clock
        self.star_transactions_newest_first = star_transactions_newest_first

        self.calls: list[CallRecord] = []
        self.stats = ServerStats()
        self.refund_events: list[RefundEvent] = []
        self.internal_errors: list[BaseException] = []

        self._calls_by_method: dict[str, list[CallRecord]] = {}
        self.state = SandboxState()
        self.faults = Faults()
        self._transport_faults: list[TransportFault] = []
        self.card_processors: dict[str, CardProcessor] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (use with ``TelegramAPIServer.from_base``)."""
        if self._url is None:
            raise RuntimeError("SandboxServer is not started")
        return self._url

    async def start(self) -> None:
        """Bind and start serving (again, after :meth:`stop`, on the same port if one was bound)."""
        for bot in self.state.bots.values():
            bot.updates.closed = False
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation: a client that gives up on a long poll frees it at once.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = port
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop webhook delivery and the HTTP server; pending long polls return ``[]``."""
        for bot in self.state.bots.values():
            bot.updates.close()
        for worker in list(self.state.webhooks.values()):
            await worker.stop()
        self.state.webhooks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def http_client(self) -> aiohttp.ClientSession:
        """The server's own HTTP client (webhook posts, file URLs), opened on first use."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- world setup ------------------------------------------------------------------------

    def add_bot(self, token: str, username: str, first_name: str = "Bot") -> SimBot:
        """Register a bot; ``token`` must look like ``<digits>:<secret>``."""
        if not _TOKEN_RE.match(token):
            raise ValueError(f"malformed bot token {token!r}; expected '<digits>:<secret>'")
        if token in self.state.bots:
            raise ValueError(f"bot {token!r} already exists")
        limiter = RateLimiter(self.rate_limit) if self.rate_limit is not None else None
        bot = SimBot(token=token, username=username, first_name=first_name, limiter=limiter)
        self.state.bots[token] = bot
        return bot

    def bot(self, token: str | None = None) -> SimBot:
        """A registered bot; without ``token``, the only one."""
        if token is not None:
            try:
                return self.state.bots[token]
            except KeyError:
                raise KeyError(f"no bot with token {token!r}") from None
        if len(self.state.bots) != 1:
            raise ValueError(f"{len(self.state.bots)} bots registered; pass the bot token")
        return next(iter(self.state.bots.values()))

    def user(
        self,
        user_id: int,
        first_name: str | None = None,
        *,
        username: str | None = None,
        language_code: str | None = None,
        last_name: str | None = None,
        is_premium: bool | None = None,
        bot: SimBot | str | None = None,
    ) -> SimUser:
        """Get or create the simulated user ``user_id`` chatting with ``bot``.

        Profile fields passed for an existing user update the profile.
        """
        sim_bot = bot if isinstance(bot, SimBot) else self.bot(bot)
        profile = self.state.profiles.get(user_id)
        if profile is None:
            profile = UserProfile(user_id, first_name or f"User{user_id}")
            self.state.profiles[user_id] = profile
        elif first_name:
            profile.first_name = first_name
        if username is not None:
            profile.username = username
        if language_code is not None:
            profile.language_code = language_code
        if last_name is not None:
            profile.last_name = last_name
        if is_premium is not None:
            profile.is_premium = is_premium
        key = (sim_bot.token, user_id)
        sim_user = self.state.users.get(key)
        if sim_user is None:
            sim_user = SimUser(self, sim_bot, profile)
            self.state.users[key] = sim_user
        assert isinstance(sim_user, SimUser)
        return sim_user

    def add_chat(
        self,
        chat_id: int,
        title: str,
        type: Literal["group", "supergroup", "channel"] = "supergroup",
        *,
        bot_is_admin: bool = True,
        bot_is_member: bool = True,
        username: str | None = None,
        admins: Iterable[int] = (),
        bot_rights: dict[str, bool] | None = None,
    ) -> SimChat:
        """Create a group, supergroup or channel (ids are negative, like Telegram's).

        ``admins`` are users who administer it (they count as members too). ``bot_rights``
        overrides the bot's admin rights (all the usual ones by default), e.g.
        ``{"can_restrict_members": False}``: methods that need a right it lacks fail.
        """
        if chat_id >= 0:
            raise ValueError("group and channel ids are negative")
        chat = SimChat(
            chat_id,
            title,
            type,
            username=username,
            bot_is_admin=bot_is_admin,
            bot_is_member=bot_is_member or bot_is_admin,
            admins=set(admins),
            bot_rights=dict(bot_rights or {}),
        )
        chat.members |= chat.admins
        self.state.chats[chat_id] = chat
        return chat

    def connect_provider(self, provider_token: str, processor: CardProcessor) -> None:
        """Record card payments of invoices sent with ``provider_token`` at ``processor``
        (a provider fake such as :class:`bot.sandbox.yookassa.FakeYooKassa`): its payment id
        becomes the ``provider_payment_charge_id``, as Telegram reports it."""
        self.card_processors[provider_token] = processor

    def spread_webhook(self, urls: Iterable[str], bot: SimBot | str | None = None) -> None:
        """Post the bot's webhook updates round-robin to ``urls`` (replicas without a load
        balancer in front), whatever URL the bot registered; a replica that fails is skipped for
        the next. An empty list restores the registered URL."""
        sim_bot = bot if isinstance(bot, SimBot) else self.bot(bot)
        sim_bot.webhook_spread = list(urls)

    def chat(self, chat_id: int) -> SimChat:
        """A chat created with :meth:`add_chat`."""
        return self.state.chats[chat_id]

    def is_member(self, chat_id: int, user_id: int) -> bool:
        """Whether the user is currently a member of the group/channel."""
        chat = self.state.chats.get(chat_id)
        return chat is not None and user_id in chat.members

    # -- inspection -------------------------------------------------------------------------

    def calls_of(self, method: str, token: str | None = None) -> list[CallRecord]:
        """Recorded calls of one method (case-insensitive), optionally of one bot."""
        records = self._calls_by_method.get(method.lower(), [])
        if token is None:
            return list(records)
        return [record for record in records if record.token == token]

    def transcript(self, chat_id: int | None = None, last: int | None = None) -> str:
        """The readable conversation log (all chats, or one)."""
        return self.state.transcript.render(chat_id=chat_id, last=last)

    def messages(self, chat_id: int, bot: SimBot | str | None = None) -> list[BotMessage]:
        """Current bot messages of any chat (private or group), deleted ones left out."""
        sim_bot = bot if isinstance(bot, SimBot) else self.bot(bot)
        return messages.chat_history(self, sim_bot, chat_id)

    def file(self, file_id: str) -> StoredFile:
        """A stored file (uploaded by a bot or a user)."""
        return self.state.files[file_id]

    def commands(
        self,
        scope: dict[str, Any] | None = None,
        language_code: str = "",
        bot: SimBot | str | None = None,
    ) -> list[dict[str, str]]:
        """Commands set with ``setMyCommands`` for a scope and language."""
        sim_bot = bot if isinstance(bot, SimBot) else self.bot(bot)
        return list(sim_bot.commands.get((profile.scope_key(scope), language_code), []))

    @property
    def charges(self) -> list[Charge]:
        """Every payment made, in order."""
        return list(self.state.charges.values())

    async def wait_until(
        self,
        predicate: Callable[[], Any],
        timeout: float = 5.0,  # noqa: ASYNC109 - part of the test-facing API
        message: str = "",
    ) -> Any:
        """Wait until ``predicate()`` is truthy and return its value.

        Re-checks after every API call or update (and every 50 ms for state
        that changes elsewhere). Raises ``AssertionError`` on timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = f": {message}" if message else ""
                raise AssertionError(
                    f"condition not met within {timeout:g} s{detail}\n"
                    f"Last events:\n{self.transcript(last=15) or '(none)'}"
                )
            await self.state.changes.wait(min(remaining, 0.05))

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[CallRecord], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - part of the test-facing API
    ) -> CallRecord:
        """Wait for a call of ``method`` matching ``predicate`` and return it."""

        def find() -> CallRecord | None:
            for record in self._calls_by_method.get(method.lower(), ()):
                if predicate is None or predicate(record):
                    return record
            return None

        record: CallRecord = await self.wait_until(find, timeout, f"a {method} call")
        return record

    # -- HTTP -------------------------------------------------------------------------------

    def inject_fault(
        self,
        kind: TransportFaultKind = "redirect_loop",
        *,
        methods: Iterable[str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer calls with a transport failure instead of the Bot API's answer.

        ``redirect_loop``: a 302 to the same URL, forever (a misconfigured proxy in front of the
        Bot API); aiohttp's error then carries the request URL, token included.
        ``disconnect``: the connection is closed without an answer. ``bad_gateway``: a 502 with
        an HTML body. ``methods`` limits the fault to those methods (case-insensitive), ``times``
        to that many calls (``None``: until :meth:`clear_faults`).
        """
        names = frozenset(name.lower() for name in methods) if methods else None
        self._transport_faults.append(TransportFault(kind, names, times))

    def clear_faults(self) -> None:
        self._transport_faults.clear()

    def _take_transport_fault(self, method: str) -> TransportFault | None:
        for fault in self._transport_faults:
            if fault.methods is not None and method.lower() not in fault.methods:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._transport_faults.remove(fault)
            return fault
        return None

    async def _faulty_answer(
        self, request: web.Request, fault: TransportFault
    ) -> web.StreamResponse:
        self.stats.faults += 1
        if fault.kind == "redirect_loop":
            raise web.HTTPFound(str(request.url.with_query({REDIRECT_MARK: "1"})))
        if fault.kind == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client
        return web.Response(
            status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
        )

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        token = request.match_info["token"]
        method = request.match_info["method"]
        if REDIRECT_MARK in request.query:  # the rest of an injected redirect loop
            raise web.HTTPFound(str(request.url))
        if self._transport_faults:
            transport_fault = self._take_transport_fault(method)
            if transport_fault is not None:
                return await self._faulty_answer(request, transport_fault)
        bot = self.state.bots.get(token)
        spec = find_method(method)
        try:
            if bot is None:
                raise ApiError(401, "Unauthorized")
            if spec is None:
                raise ApiError(404, "Not Found")
            try:
                raw, uploads = await read_params(request)
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(413, "Request Entity Too Large") from None
        except ApiError as error:
            self.stats.errors += 1
            self._record(spec.name if spec else method, token, {}, {}, None, error)
            return respond(error.payload(), error.code)
        status, body = await self._call(bot, spec, raw, uploads, over_network=True)
        return respond(body, status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.state.bots:
            return respond(ApiError(401, "Unauthorized").payload(), 401)
        stored = self.state.files_by_path.get(request.match_info["path"])
        if stored is None:
            return respond(ApiError(404, "Not Found").payload(), 404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _call(
        self,
        bot: SimBot,
        spec: MethodSpec,
        raw: dict[str, Any],
        uploads: dict[str, Upload],
        *,
        over_network: bool,
    ) -> tuple[int, dict[str, Any]]:
        params = Params(raw, uploads)
        try:
            if over_network:
                await limits.before_call(self, bot, spec.name, params, spec.rate_limited)
            elif spec.rate_limited and bot.limiter is not None:
                limits.check_flood(self, bot, params)
            result = await spec.handler(self, bot, params)
        except ApiError as error:
            self.stats.errors += 1
            if error.code == 429:
                self.stats.rate_limited += 1
            self._record(spec.name, bot.token, raw, uploads, None, error)
            if spec.rate_limited:
                limits.log_failed_send(self, bot, spec.name, raw, error)
            return error.code, error.payload()
        except Exception as exc:
            # A sandbox bug must not look like a Telegram answer; keep it for tests to see.
            log.exception("sandbox failed on %s", spec.name)
            self.internal_errors.append(exc)
            internal = ApiError(500, "Internal Server Error")
            self._record(spec.name, bot.token, raw, uploads, None, internal)
            return 500, internal.payload()
        self._record(spec.name, bot.token, raw, uploads, result, None)
        return 200, {"ok": True, "result": result}

    async def execute_call(self, bot: SimBot, method: str, params: dict[str, Any]) -> None:
        """Run a Bot API call that came back in a webhook's response body."""
        spec = find_method(method)
        if spec is not None:
            await self._call(bot, spec, params, {}, over_network=False)

    def _record(
        self,
        method: str,
        token: str,
        raw: dict[str, Any],
        uploads: dict[str, Upload],
        result: Any,
        error: ApiError | None,
    ) -> None:
        if self.record_calls:
            params = raw
            if uploads:
                params = {**raw, **{key: upload.describe() for key, upload in uploads.items()}}
            if error is None:
                record = CallRecord(method, params, token, time.time(), True, result)
            else:
                record = CallRecord(
                    method,
                    params,
                    token,
                    time.time(),
                    False,
                    None,
                    error.code,
                    error.description,
                    error.retry_after,
                )
            self.calls.append(record)
            bucket = self._calls_by_method.get(method.lower())
            if bucket is None:
                self._calls_by_method[method.lower()] = [record]
            else:
                bucket.append(record)
        self.state.changes.fire()

    # -- the simulated users' side (bot.sandbox.core.world.World) ------------------------------

    def log(self, text: str, chat_id: int) -> None:
        """Add a line to the transcript of ``chat_id``."""
        self.state.transcript.add(text, chat_id)

    def render_transcript(self, chat_id: int | None = None, last: int | None = None) -> str:
        """The transcript (of one chat)."""
        return self.state.transcript.render(chat_id=chat_id, last=last)

    def push_update(self, bot: SimBot, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Queue an update for ``bot``; ``None`` if its type is not allowed."""
        return updates.push_update(self, bot, kind, payload)

    def push_raw(self, bot: SimBot, update: dict[str, Any]) -> None:
        """Queue an existing update again, same ``update_id``."""
        updates.push_raw(self, bot, update)

    def new_user_message(
        self, bot: SimBot, profile: UserProfile, chat: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a message a user sends and return its ``Message`` object."""
        return messages.new_user_message(self, bot, profile, chat, content)

    def store_file(
        self,
        data: bytes,
        filename: str | None,
        mime_type: str | None,
        kind: Literal["document", "photo", "video"],
    ) -> StoredFile:
        """Store an uploaded file."""
        return files.store_file(self, data, filename, mime_type, kind)

    def chat_history(self, bot: SimBot, chat_id: int) -> list[BotMessage]:
        """Current bot messages of a chat."""
        return messages.chat_history(self, bot, chat_id)

    def current_message(self, bot: SimBot, chat_id: int, message_id: int) -> BotMessage | None:
        """A bot message as it is now, ``None`` if deleted or unknown."""
        return messages.current_message(self, bot, chat_id, message_id)

    def open_query(
        self, bot: SimBot, profile: UserProfile, *, pre_checkout: bool = False
    ) -> PendingQuery:
        """Start a callback or pre-checkout query that waits for the bot's answer."""
        return callbacks.open_query(self, bot, profile, pre_checkout=pre_checkout)

    def close_query(self, query_id: str) -> None:
        """Forget a query nobody answered in time."""
        callbacks.close_query(self, query_id)

    def resolve_invoice(self, bot: SimBot, invoice: BotMessage | str) -> InvoiceInfo:
        """The invoice of a message or an invoice link."""
        return payments.resolve_invoice(self, bot, invoice)

    async def take_payment(
        self,
        bot: SimBot,
        profile: UserProfile,
        info: InvoiceInfo,
        order_info: dict[str, Any],
        provider_charge_id: str | None,
    ) -> Charge:
        """Charge the user for an invoice (the provider's side included)."""
        return await payments.take_payment(self, bot, profile, info, order_info, provider_charge_id)

    def payment_chat(self, profile: UserProfile, info: InvoiceInfo) -> dict[str, Any]:
        """The chat a ``successful_payment`` message appears in."""
        return payments.payment_chat(self, profile, info)

    def find_charge(self, charge_id: str) -> Charge | None:
        """A charge by its ``telegram_payment_charge_id``."""
        return payments.find_charge(self, charge_id)

    def refund_charge(self, charge: Charge, source: Literal["bot", "telegram"]) -> None:
        """Mark a Stars charge refunded."""
        payments.refund_charge(self, charge, source)

    def open_invite_link(
        self, profile: UserProfile, link: str
    ) -> Literal["pending", "joined", "member"]:
        """A user opens an invite link."""
        return chats.open_invite_link(self, profile, link)


def respond(body: dict[str, Any], status: int = 200) -> web.Response:
    """A Bot API answer as Telegram sends it: JSON, with the error code as the HTTP status."""
    return web.Response(body=dumps(body), status=status, content_type="application/json")
