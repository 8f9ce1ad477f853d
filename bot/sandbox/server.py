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
import contextlib
import html
import itertools
import json
import logging
import mimetypes
import re
import secrets
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self

import aiohttp
from aiohttp import web

from bot.sandbox.ratelimit import RateLimit, RateLimiter
from bot.sandbox.transcript import Transcript, describe_message, format_amount
from bot.sandbox.users import CallbackAnswer, PaymentResult, SimUser

__all__ = [
    "ApiError",
    "BotMessage",
    "CallRecord",
    "Charge",
    "InviteLink",
    "InvoiceInfo",
    "RefundEvent",
    "SandboxServer",
    "ServerStats",
    "SimBot",
    "SimChat",
    "StoredFile",
    "UserProfile",
]

log = logging.getLogger(__name__)

ALL_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
# What Telegram delivers when allowed_updates is empty or was never set.
DEFAULT_UPDATE_TYPES = ALL_UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}

# Currencies accepted by Telegram Payments (core.telegram.org/bots/payments#supported-currencies).
# A compact string of ISO codes reads better than a hundred-line list literal.
CURRENCIES = frozenset(
    """AED AFN ALL AMD ARS AUD AZN BAM BDT BGN BHD BND BOB BRL BYN CAD CHF CLP CNY COP CRC CZK
    DKK DOP DZD EGP ETB EUR GBP GEL GHS GTQ HKD HNL HRK HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KRW KZT LBP LKR MAD MDL MMK MNT MOP MUR MVR MXN MYR MZN NGN NIO NOK NPR NZD PAB PEN
    PHP PKR PLN PYG QAR RON RSD RUB SAR SEK SGD SYP THB TJS TRY TTD TWD TZS UAH UGX USD UYU UZS
    VEF VND YER ZAR XTR""".split()  # noqa: SIM905
)

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

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
JOIN_REQUEST_CHAT_WINDOW_S = 300  # a join request lets the bot message the user for 5 minutes
STARS_SUBSCRIPTION_PERIOD = 2592000

QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
COMMAND_SCOPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
_BUTTON_ACTIONS = frozenset(
    {
        "callback_data",
        "url",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)
_TOKEN_RE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_BUTTON_URL_RE = re.compile(r"^(?:https?|tg)://\S+$")
_HTML_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^<>]*)?)>")
_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "tg-time",
        "blockquote",
    }
)


# ---------------------------------------------------------------------------------------------
# Errors and records
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A Bot API error, rendered as ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        """The JSON body Telegram sends for this error."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


def _forbidden(what: str) -> ApiError:
    return ApiError(403, f"Forbidden: {what}")


@dataclass(slots=True)
class CallRecord:
    """One Bot API call as the server saw it."""

    method: str
    params: dict[str, Any]
    token: str
    timestamp: float
    ok: bool
    result: Any = None
    error_code: int | None = None
    description: str | None = None
    retry_after: int | None = None

    @property
    def error(self) -> str | None:
        """``"<code> <description>"`` for failed calls, ``None`` otherwise."""
        return None if self.ok else f"{self.error_code} {self.description}"


@dataclass(slots=True)
class ServerStats:
    """Counters kept by the server (cheap enough for benchmarks)."""

    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    updates: int = 0
    updates_dropped: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0
    faults: int = 0  # calls answered with an injected transport failure


_REDIRECT_MARK = "sandbox_redirect"
FaultKind = Literal["redirect_loop", "disconnect", "bad_gateway"]


@dataclass
class _Fault:
    kind: FaultKind
    methods: frozenset[str] | None
    remaining: int | None


@dataclass(frozen=True, slots=True)
class RefundEvent:
    """A Stars refund, made by the bot (``source="bot"``) or simulated (``"telegram"``)."""

    telegram_payment_charge_id: str
    user_id: int
    total_amount: int
    currency: str
    invoice_payload: str
    source: Literal["bot", "telegram"]
    timestamp: float


# ---------------------------------------------------------------------------------------------
# World state
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class UserProfile:
    """A Telegram account, shared by all bots the user talks to."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_premium: bool = False

    def user_dict(self) -> dict[str, Any]:
        """The ``User`` object Telegram sends in updates."""
        data: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        if self.is_premium:
            data["is_premium"] = True
        return data

    def private_chat(self) -> dict[str, Any]:
        """The ``Chat`` object of the user's private chat with a bot."""
        data: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        return data


@dataclass(slots=True, eq=False)
class StoredFile:
    """A file uploaded by a bot or a user, downloadable through ``getFile``."""

    file_id: str
    file_unique_id: str
    kind: Literal["document", "photo"]
    data: bytes
    file_name: str | None
    mime_type: str | None
    file_path: str
    width: int = 0
    height: int = 0

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def document_dict(self) -> dict[str, Any]:
        """A ``Document`` object."""
        data: dict[str, Any] = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.size,
        }
        if self.file_name:
            data["file_name"] = self.file_name
        if self.mime_type:
            data["mime_type"] = self.mime_type
        return data

    def photo_sizes(self) -> list[dict[str, Any]]:
        """The ``PhotoSize`` array of a photo message (a single, original size)."""
        return [
            {
                "file_id": self.file_id,
                "file_unique_id": self.file_unique_id,
                "width": self.width,
                "height": self.height,
                "file_size": self.size,
            }
        ]

    def file_dict(self) -> dict[str, Any]:
        """A ``File`` object as returned by ``getFile``."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.size,
            "file_path": self.file_path,
        }


@dataclass(frozen=True, slots=True, eq=False)
class BotMessage:
    """An immutable snapshot of a message the bot sent.

    ``data`` is the Telegram ``Message`` object. ``markup`` is the reply markup
    of any kind (Telegram echoes only inline keyboards inside ``data``).
    Edits and deletions produce new snapshots; old ones keep their content.
    """

    data: dict[str, Any]
    markup: dict[str, Any] | None = None
    file: StoredFile | None = None
    edited: bool = False
    deleted: bool = False

    @property
    def message_id(self) -> int:
        """Message id within its chat."""
        return int(self.data["message_id"])

    @property
    def chat_id(self) -> int:
        """Id of the chat the message is in."""
        return int(self.data["chat"]["id"])

    @property
    def text(self) -> str | None:
        """Raw text as sent (HTML tags kept)."""
        return self.data.get("text")

    @property
    def caption(self) -> str | None:
        """Raw caption of a document or photo."""
        return self.data.get("caption")

    @property
    def body(self) -> str:
        """Text or caption, whichever exists, else ``""``."""
        return self.data.get("text") or self.data.get("caption") or ""

    @property
    def document(self) -> dict[str, Any] | None:
        """The ``Document`` object, if any."""
        return self.data.get("document")

    @property
    def photo(self) -> list[dict[str, Any]] | None:
        """The ``PhotoSize`` list, if any."""
        return self.data.get("photo")

    @property
    def invoice(self) -> dict[str, Any] | None:
        """The ``Invoice`` object, if any."""
        return self.data.get("invoice")

    @property
    def file_bytes(self) -> bytes | None:
        """Content of the attached document or photo."""
        return self.file.data if self.file else None

    @property
    def inline_keyboard(self) -> list[list[dict[str, Any]]]:
        """Rows of inline buttons (empty if none)."""
        if self.markup and "inline_keyboard" in self.markup:
            rows: list[list[dict[str, Any]]] = self.markup["inline_keyboard"]
            return rows
        return []

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """All inline buttons, row by row."""
        return [button for row in self.inline_keyboard for button in row]

    @property
    def button_texts(self) -> list[str]:
        """Texts of the inline buttons, or of the reply keyboard if there is no inline one."""
        if self.inline_keyboard:
            return [button["text"] for button in self.buttons]
        return self.reply_keyboard_texts

    @property
    def reply_keyboard_texts(self) -> list[str]:
        """Texts of a reply keyboard's buttons."""
        if not self.markup or "keyboard" not in self.markup:
            return []
        return [
            button["text"] if isinstance(button, dict) else str(button)
            for row in self.markup["keyboard"]
            for button in row
        ]

    @property
    def summary(self) -> str:
        """One-line description, as in the transcript."""
        return describe_message(self.data, self.markup)

    def find_button(
        self, text: str | None = None, callback_data: str | None = None
    ) -> dict[str, Any] | None:
        """The first inline button whose text / callback data match exactly."""
        for button in self.buttons:
            if text is not None and button.get("text") != text:
                continue
            if callback_data is not None and button.get("callback_data") != callback_data:
                continue
            return button
        return None

    def __repr__(self) -> str:
        flags = " edited" if self.edited else ""
        return f"<BotMessage {self.chat_id}/{self.message_id}{flags}: {self.summary[:80]!r}>"


@dataclass(slots=True, eq=False)
class InviteLink:
    """A chat invite link created with ``createChatInviteLink``."""

    invite_link: str
    chat_id: int
    bot_token: str
    creator: dict[str, Any]
    creates_join_request: bool = False
    name: str | None = None
    expire_date: int | None = None
    member_limit: int | None = None
    is_revoked: bool = False
    joined: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The ``ChatInviteLink`` object."""
        data: dict[str, Any] = {
            "invite_link": self.invite_link,
            "creator": self.creator,
            "creates_join_request": self.creates_join_request,
            "is_primary": False,
            "is_revoked": self.is_revoked,
        }
        if self.name:
            data["name"] = self.name
        if self.expire_date is not None:
            data["expire_date"] = self.expire_date
        if self.member_limit is not None:
            data["member_limit"] = self.member_limit
        return data


@dataclass(slots=True)
class JoinRequest:
    """A pending ``chat_join_request``."""

    user_id: int
    invite_link: InviteLink | None
    date: int


@dataclass(slots=True, eq=False)
class SimChat:
    """A group, supergroup or channel the bots may belong to."""

    id: int
    title: str
    type: Literal["group", "supergroup", "channel"] = "supergroup"
    username: str | None = None
    bot_is_admin: bool = True
    bot_is_member: bool = True
    members: set[int] = field(default_factory=set)
    admins: set[int] = field(default_factory=set)  # users (not the bot) who administer the chat
    banned: set[int] = field(default_factory=set)
    join_requests: dict[int, JoinRequest] = field(default_factory=dict)

    def chat_dict(self) -> dict[str, Any]:
        """The ``Chat`` object."""
        data: dict[str, Any] = {"id": self.id, "type": self.type, "title": self.title}
        if self.username:
            data["username"] = self.username
        return data


@dataclass(slots=True, eq=False)
class InvoiceInfo:
    """Everything a bot put into ``sendInvoice`` / ``createInvoiceLink``."""

    bot_token: str
    title: str
    description: str
    payload: str
    currency: str
    prices: list[dict[str, Any]]
    provider_token: str = ""
    start_parameter: str = ""
    provider_data: str | None = None
    photo_url: str | None = None
    need_name: bool = False
    need_email: bool = False
    need_phone_number: bool = False
    need_shipping_address: bool = False
    send_email_to_provider: bool = False
    send_phone_number_to_provider: bool = False
    subscription_period: int | None = None
    chat_id: int | None = None
    message_id: int | None = None
    link: str | None = None

    @property
    def total_amount(self) -> int:
        """Sum of all price items, in the currency's smallest units."""
        return sum(int(price["amount"]) for price in self.prices)

    def invoice_dict(self) -> dict[str, Any]:
        """The ``Invoice`` object of an invoice message."""
        return {
            "title": self.title,
            "description": self.description,
            "start_parameter": self.start_parameter,
            "currency": self.currency,
            "total_amount": self.total_amount,
        }


@dataclass(slots=True, eq=False)
class Charge:
    """A completed payment."""

    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    bot_token: str
    user_id: int
    invoice: InvoiceInfo
    order_info: dict[str, Any]
    created: float
    refunded: bool = False

    @property
    def total_amount(self) -> int:
        """Amount paid."""
        return self.invoice.total_amount

    @property
    def currency(self) -> str:
        """Currency paid in."""
        return self.invoice.currency

    def successful_payment_dict(self) -> dict[str, Any]:
        """The ``SuccessfulPayment`` object."""
        data: dict[str, Any] = {
            "currency": self.currency,
            "total_amount": self.total_amount,
            "invoice_payload": self.invoice.payload,
            "telegram_payment_charge_id": self.telegram_payment_charge_id,
            "provider_payment_charge_id": self.provider_payment_charge_id,
        }
        if self.order_info:
            data["order_info"] = self.order_info
        if self.invoice.subscription_period:
            data["subscription_expiration_date"] = int(
                self.created + self.invoice.subscription_period
            )
            data["is_recurring"] = True
            data["is_first_recurring"] = True
        return data

    def refund_dict(self) -> dict[str, Any]:
        """The ``RefundedPayment`` object."""
        return {
            "currency": self.currency,
            "total_amount": self.total_amount,
            "invoice_payload": self.invoice.payload,
            "telegram_payment_charge_id": self.telegram_payment_charge_id,
            "provider_payment_charge_id": self.provider_payment_charge_id,
        }

    def result(self, latency: float | None) -> PaymentResult:
        """The :class:`PaymentResult` describing this charge."""
        return PaymentResult(
            ok=True,
            error_message=None,
            precheckout_latency_s=latency,
            telegram_payment_charge_id=self.telegram_payment_charge_id,
            provider_payment_charge_id=self.provider_payment_charge_id,
            total_amount=self.total_amount,
            currency=self.currency,
            invoice_payload=self.invoice.payload,
        )


@dataclass(frozen=True, slots=True)
class PreCheckoutAnswer:
    """What the bot passed to ``answerPreCheckoutQuery``."""

    ok: bool
    error_message: str | None
    answered_at: float  # time.monotonic()


@dataclass(slots=True, eq=False)
class _PendingQuery:
    id: str
    bot_token: str
    user_id: int
    user_name: str
    future: asyncio.Future[Any]
    pre_checkout: bool


@dataclass(slots=True)
class WebhookConfig:
    """A bot's webhook settings and delivery status (``getWebhookInfo``)."""

    url: str
    secret_token: str | None = None
    max_connections: int = 40
    ip_address: str | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None


# ---------------------------------------------------------------------------------------------
# Updates: queue, long polling, webhook delivery
# ---------------------------------------------------------------------------------------------


class _Signal:
    """Wakes every current waiter; cheap when nobody waits."""

    __slots__ = ("_event", "_waiters")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._waiters = 0

    def fire(self) -> None:
        if self._waiters:
            event, self._event = self._event, asyncio.Event()
            event.set()

    async def wait(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait for the next :meth:`fire`; ``False`` on timeout."""
        event = self._event
        self._waiters += 1
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        return True


@dataclass(slots=True, eq=False)
class _QueuedUpdate:
    update: dict[str, Any]
    delivered: bool = False


class UpdateQueue:
    """One bot's unconfirmed updates, with Telegram's ``getUpdates`` semantics."""

    def __init__(self) -> None:
        self._pending: deque[_QueuedUpdate] = deque()
        # Telegram's update ids are large and never start at 0; neither do ours.
        self._next_id = 700_000_001
        self.allowed: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.allowed_list: list[str] | None = None
        self.signal = _Signal()
        self._last_batch: list[_QueuedUpdate] = []
        self._generation = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def set_allowed(self, types: list[str]) -> None:
        """Apply ``allowed_updates``; an empty list restores the default set."""
        self.allowed_list = list(types)
        self.allowed = frozenset(types) if types else DEFAULT_UPDATE_TYPES

    def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Create an update, or drop it (``None``) if its type is not allowed."""
        if kind not in self.allowed:
            return None
        update = {"update_id": self._next_id, kind: payload}
        self._next_id += 1
        self._pending.append(_QueuedUpdate(update))
        self.signal.fire()
        return update

    def push_raw(self, update: dict[str, Any]) -> None:
        """Queue an existing update again (same ``update_id``)."""
        self._pending.append(_QueuedUpdate(update))
        self.signal.fire()

    def first(self) -> _QueuedUpdate | None:
        """The oldest unconfirmed update."""
        return self._pending[0] if self._pending else None

    def remove(self, entry: _QueuedUpdate) -> None:
        """Confirm one update (webhook delivery succeeded)."""
        if self._pending and self._pending[0] is entry:
            self._pending.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._pending.remove(entry)

    def clear(self) -> None:
        """Drop every pending update (``drop_pending_updates``)."""
        self._pending.clear()
        self._last_batch = []

    def close(self) -> None:
        """Release long pollers (server shutdown)."""
        self.closed = True
        self.signal.fire()

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            while len(self._pending) > -offset:
                self._pending.popleft()
            return
        if offset == 0:
            return
        # Delivered updates always form a prefix of the queue. Besides the usual
        # "id < offset" rule, a batch is confirmed by offset == its last id + 1:
        # that keeps a replayed (older id) update at the end of a batch from
        # making the newer updates before it look unconfirmed.
        batch = self._last_batch
        whole_batch = bool(batch) and offset == batch[-1].update["update_id"] + 1
        in_batch = {id(entry) for entry in batch} if whole_batch else set()
        pending = self._pending
        while pending and pending[0].delivered:
            head = pending[0]
            if head.update["update_id"] < offset or id(head) in in_batch:
                pending.popleft()
            else:
                break

    async def poll(
        self,
        offset: int,
        limit: int,
        timeout: float,  # noqa: ASYNC109 - getUpdates' own parameter
        webhook_active: Callable[[], bool],
    ) -> list[dict[str, Any]]:
        """Serve one ``getUpdates`` call."""
        self._generation += 1
        generation = self._generation
        self.signal.fire()  # an older poller, if any, must now fail with 409
        self._confirm(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if webhook_active():
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            if self._pending or self.closed:
                batch = list(itertools.islice(self._pending, limit))
                for entry in batch:
                    entry.delivered = True
                self._last_batch = batch
                return [entry.update for entry in batch]
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._last_batch = []
                return []
            await self.signal.wait(remaining)


class _WebhookWorker:
    """Posts one bot's updates to its webhook, in order, retrying with backoff."""

    def __init__(self, server: SandboxServer, bot: SimBot, config: WebhookConfig) -> None:
        self._server = server
        self._bot = bot
        self.config = config
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"webhook:{self._bot.username}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        server = self._server
        queue = self._bot.updates
        delay = server.webhook_retry_delay
        while True:
            entry = queue.first()
            if entry is None:
                await queue.signal.wait(None)
                continue
            error = await self._post(entry.update)
            if error is None:
                queue.remove(entry)
                server.stats.webhook_deliveries += 1
                delay = server.webhook_retry_delay
                continue
            server.stats.webhook_failures += 1
            self.config.last_error_date = int(time.time())
            self.config.last_error_message = error
            log.debug("webhook %s failed: %s; retry in %.2fs", self.config.url, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, server.webhook_max_retry_delay)

    async def _post(self, update: dict[str, Any]) -> str | None:
        """Deliver one update; return an error message or ``None`` on success."""
        headers = {"Content-Type": "application/json"}
        if self.config.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.config.secret_token
        timeout = aiohttp.ClientTimeout(total=self._server.webhook_timeout)
        try:
            async with self._server._client().post(
                self.config.url, data=_dumps(update), headers=headers, timeout=timeout
            ) as response:
                if not 200 <= response.status < 300:
                    return f"Wrong response from the webhook: {response.status} {response.reason}"
                try:
                    reply = await _read_webhook_reply(response)
                except (aiohttp.ClientError, ValueError):
                    reply = None  # the update was accepted; an unreadable reply is ignored
        except TimeoutError:
            return "Read timeout expired"
        except aiohttp.ClientConnectorError:
            return "Connection refused"
        except aiohttp.ClientError as error:
            return f"{type(error).__name__}: {error}"
        if reply is not None:
            await self._server._execute_webhook_reply(self._bot, *reply)
        return None


async def _read_webhook_reply(
    response: aiohttp.ClientResponse,
) -> tuple[str, dict[str, Any]] | None:
    """A Bot API call carried in a webhook response body, as Telegram allows."""
    if response.content_type == "application/json":
        body = await response.json(loads=json.loads)
        if isinstance(body, dict) and isinstance(body.get("method"), str):
            params = {key: value for key, value in body.items() if key != "method"}
            return body["method"], params
        return None
    if response.content_type == "multipart/form-data":
        reader = aiohttp.MultipartReader(response.headers, response.content)
        fields: dict[str, Any] = {}
        while (part := await reader.next()) is not None:
            if isinstance(part, aiohttp.BodyPartReader) and part.name:
                fields[part.name] = _coerce(part.name, await part.text())
        method = fields.pop("method", None)
        if isinstance(method, str):
            return method, fields
    return None


# ---------------------------------------------------------------------------------------------
# Bots
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class SimBot:
    """A bot registered on the server, with everything Telegram stores for it."""

    token: str
    username: str
    first_name: str
    limiter: RateLimiter | None = None
    updates: UpdateQueue = field(default_factory=UpdateQueue)
    webhook: WebhookConfig | None = None
    commands: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)
    menu_buttons: dict[int | None, dict[str, Any]] = field(default_factory=dict)
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    messages: dict[tuple[int, int], BotMessage] = field(default_factory=dict)
    user_messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    history: dict[int, list[int]] = field(default_factory=dict)
    _message_ids: dict[int, int] = field(default_factory=dict)
    _user: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> int:
        """The bot's user id (the token's numeric prefix)."""
        return int(self.token.split(":", 1)[0])

    @property
    def webhook_url(self) -> str:
        """Current webhook URL, ``""`` when polling."""
        return self.webhook.url if self.webhook else ""

    def user_dict(self) -> dict[str, Any]:
        """The bot's ``User`` object."""
        if not self._user:
            self._user = {
                "id": self.id,
                "is_bot": True,
                "first_name": self.first_name,
                "username": self.username,
            }
        return self._user

    def next_message_id(self, chat_id: int) -> int:
        """Allocate the next message id of a chat (ids are per chat, as in Telegram)."""
        message_id = self._message_ids.get(chat_id, 0) + 1
        self._message_ids[chat_id] = message_id
        return message_id


# ---------------------------------------------------------------------------------------------
# Request parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart request."""

    filename: str | None
    data: bytes
    content_type: str | None

    def describe(self) -> dict[str, Any]:
        """What :attr:`CallRecord.params` shows instead of the bytes."""
        return {"filename": self.filename, "size": len(self.data), "mime_type": self.content_type}


def _coerce(name: str, value: str) -> Any:
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
                raise _bad(f"{name} is empty")
            return None if value is None else ""
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _bad(f'field "{name}" must be of type String')

    def integer(self, name: str, *, required: bool = False) -> int | None:
        """An integer parameter."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name} is empty")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value)
        raise _bad(f'field "{name}" must be of type Integer')

    def flag(self, name: str, *, required: bool = False) -> bool:
        """A boolean parameter (absent → ``False``)."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name} is empty")
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise _bad(f'field "{name}" must be of type Boolean')

    def structured(self, name: str, *, required: bool = False) -> Any:
        """A JSON-serialized object or array parameter."""
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name} is empty")
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise _bad(f"can't parse {name} JSON object") from None
        return value

    def chat_id(self, name: str = "chat_id") -> int | str:
        """A chat identifier: an integer id or an ``@username``."""
        value = self.raw.get(name)
        if value is None or value == "":
            raise _bad(f"{name} is empty")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.startswith("@"):
                return value
            with contextlib.suppress(ValueError):
                return int(value)
        raise _bad("chat not found")


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    raw: dict[str, Any] = {key: _coerce(key, value) for key, value in request.query.items()}
    files: dict[str, Upload] = {}
    if not request.body_exists:
        return raw, files
    content_type = request.content_type
    if content_type == "application/json":
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise _bad("can't parse JSON encoded request parameters") from None
        if not isinstance(body, dict):
            raise _bad("can't parse JSON encoded request parameters")
        raw.update(body)
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = Upload(value.filename, value.file.read(), value.content_type)
            elif isinstance(value, str):
                raw[key] = _coerce(key, value)
    return raw, files


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Content validation
# ---------------------------------------------------------------------------------------------


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _entities_error(what: str) -> ApiError:
    return _bad(f"can't parse entities: {what}")


def html_plain_text(text: str) -> str:
    """Validate Telegram-flavoured HTML and return the visible text.

    Raises :class:`ApiError` with Telegram's wording for unsupported or
    unbalanced tags.
    """
    stack: list[str] = []
    plain: list[str] = []
    pos = 0
    while (start := text.find("<", pos)) != -1:
        plain.append(text[pos:start])
        match = _HTML_TAG_RE.match(text, start)
        offset = _byte_offset(text, start)
        if match is None:
            bad = re.match(r"</?([^\s<>]*)", text[start:])
            tag = bad.group(1) if bad else ""
            raise _entities_error(f'Unsupported start tag "{tag}" at byte offset {offset}')
        closing, name, attributes = match.groups()
        name = name.lower()
        if name not in _HTML_TAGS:
            kind = "end" if closing else "start"
            raise _entities_error(f'Unsupported {kind} tag "{name}" at byte offset {offset}')
        if closing:
            if not stack:
                raise _entities_error(f"Unexpected end tag at byte offset {offset}")
            if stack[-1] != name:
                raise _entities_error(
                    f'Unmatched end tag at byte offset {offset}, expected "</{stack[-1]}>", '
                    f'found "</{name}>"'
                )
            stack.pop()
        else:
            if name == "span" and "tg-spoiler" not in attributes:
                raise _entities_error('Tag "span" must have class "tg-spoiler"')
            stack.append(name)
        pos = match.end()
    plain.append(text[pos:])
    if stack:
        raise _entities_error(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return html.unescape("".join(plain))


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise _bad('can\'t parse inline keyboard button: Field "text" must be of type String')
    if not _BUTTON_ACTIONS.intersection(button):
        raise _bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
            raise _bad("BUTTON_DATA_INVALID")
    if "url" in button and not (
        isinstance(button["url"], str) and _BUTTON_URL_RE.match(button["url"])
    ):
        raise _bad("BUTTON_URL_INVALID")


def _check_reply_markup(value: Any, *, inline_only: bool = False) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in value:
        rows = value["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad(
                'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
            )
        for row in rows:
            for button in row:
                _check_inline_button(button)
        return value
    if inline_only:
        raise _bad("inline keyboard expected")
    if "keyboard" in value:
        rows = value["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad('field "keyboard" of the ReplyKeyboardMarkup should be an Array of Arrays')
        for row in rows:
            for button in row:
                text = button.get("text") if isinstance(button, dict) else button
                if not isinstance(text, str) or not text:
                    raise _bad('can\'t parse keyboard button: Field "text" must be of type String')
        return value
    if value.get("remove_keyboard") or value.get("force_reply"):
        return value
    raise _bad("can't parse reply keyboard markup JSON object")


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, JPEG, GIF or WebP image, ``None`` if unrecognised."""
    size: tuple[int, int] | None = None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        size = struct.unpack(">II", data[16:24])
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        size = struct.unpack("<HH", data[6:10])
    elif data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b = data[21:25]
        width = 1 + (((b[1] & 0x3F) << 8) | b[0])
        height = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return width, height
    return None


# ---------------------------------------------------------------------------------------------
# Method registry
# ---------------------------------------------------------------------------------------------

_Handler = Callable[["SandboxServer", SimBot, Params], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _MethodSpec:
    name: str
    handler: _Handler
    rate_limited: bool


_METHODS: dict[str, _MethodSpec] = {}


def _api(name: str, *, rate_limited: bool = False) -> Callable[[_Handler], _Handler]:
    """Register a Bot API method handler under its (case-insensitive) name."""

    def register(handler: _Handler) -> _Handler:
        _METHODS[name.lower()] = _MethodSpec(name, handler, rate_limited)
        return handler

    return register


@dataclass(frozen=True, slots=True)
class _Target:
    chat_id: int
    chat: dict[str, Any]
    label: str
    user: SimUser | None = None
    group: SimChat | None = None


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


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
    ) -> None:
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.precheckout_timeout = precheckout_timeout
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_max_retry_delay = webhook_max_retry_delay
        self.webhook_timeout = webhook_timeout
        self.record_calls = record_calls

        self.calls: list[CallRecord] = []
        self.stats = ServerStats()
        self._faults: list[_Fault] = []
        self.refund_events: list[RefundEvent] = []
        self.internal_errors: list[BaseException] = []

        self._calls_by_method: dict[str, list[CallRecord]] = {}
        self._transcript = Transcript()
        self._changes = _Signal()
        self._bots: dict[str, SimBot] = {}
        self._profiles: dict[int, UserProfile] = {}
        self._users: dict[tuple[str, int], SimUser] = {}
        self._chats: dict[int, SimChat] = {}
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._invoices: dict[tuple[str, int, int], InvoiceInfo] = {}
        self._invoice_links: dict[str, InvoiceInfo] = {}
        self._invite_links: dict[str, InviteLink] = {}
        self._charges: dict[str, Charge] = {}
        self._queries: dict[str, _PendingQuery] = {}
        self._webhooks: dict[str, _WebhookWorker] = {}
        self._counter = itertools.count(1)
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
        for bot in self._bots.values():
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
        for bot in self._bots.values():
            bot.updates.close()
        for worker in list(self._webhooks.values()):
            await worker.stop()
        self._webhooks.clear()
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

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- world setup ------------------------------------------------------------------------

    def add_bot(self, token: str, username: str, first_name: str = "Bot") -> SimBot:
        """Register a bot; ``token`` must look like ``<digits>:<secret>``."""
        if not _TOKEN_RE.match(token):
            raise ValueError(f"malformed bot token {token!r}; expected '<digits>:<secret>'")
        if token in self._bots:
            raise ValueError(f"bot {token!r} already exists")
        limiter = RateLimiter(self.rate_limit) if self.rate_limit is not None else None
        bot = SimBot(token=token, username=username, first_name=first_name, limiter=limiter)
        self._bots[token] = bot
        return bot

    def bot(self, token: str | None = None) -> SimBot:
        """A registered bot; without ``token``, the only one."""
        if token is not None:
            try:
                return self._bots[token]
            except KeyError:
                raise KeyError(f"no bot with token {token!r}") from None
        if len(self._bots) != 1:
            raise ValueError(f"{len(self._bots)} bots registered; pass the bot token")
        return next(iter(self._bots.values()))

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
        profile = self._profiles.get(user_id)
        if profile is None:
            profile = UserProfile(user_id, first_name or f"User{user_id}")
            self._profiles[user_id] = profile
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
        sim_user = self._users.get(key)
        if sim_user is None:
            sim_user = SimUser(self, sim_bot, profile)
            self._users[key] = sim_user
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
    ) -> SimChat:
        """Create a group, supergroup or channel (ids are negative, like Telegram's).

        ``admins`` are users who administer it (they count as members too).
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
        )
        chat.members |= chat.admins
        self._chats[chat_id] = chat
        return chat

    def chat(self, chat_id: int) -> SimChat:
        """A chat created with :meth:`add_chat`."""
        return self._chats[chat_id]

    def is_member(self, chat_id: int, user_id: int) -> bool:
        """Whether the user is currently a member of the group/channel."""
        chat = self._chats.get(chat_id)
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
        return self._transcript.render(chat_id=chat_id, last=last)

    def messages(self, chat_id: int, bot: SimBot | str | None = None) -> list[BotMessage]:
        """Current bot messages of any chat (private or group), deleted ones left out."""
        sim_bot = bot if isinstance(bot, SimBot) else self.bot(bot)
        return self._chat_history(sim_bot, chat_id)

    def file(self, file_id: str) -> StoredFile:
        """A stored file (uploaded by a bot or a user)."""
        return self._files[file_id]

    def commands(
        self,
        scope: dict[str, Any] | None = None,
        language_code: str = "",
        bot: SimBot | str | None = None,
    ) -> list[dict[str, str]]:
        """Commands set with ``setMyCommands`` for a scope and language."""
        sim_bot = bot if isinstance(bot, SimBot) else self.bot(bot)
        return list(sim_bot.commands.get((_scope_key(scope), language_code), []))

    @property
    def charges(self) -> list[Charge]:
        """Every payment made, in order."""
        return list(self._charges.values())

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
            await self._changes.wait(min(remaining, 0.05))

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
        kind: FaultKind = "redirect_loop",
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
        self._faults.append(_Fault(kind, names, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.methods is not None and method.lower() not in fault.methods:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    async def _faulty_answer(self, request: web.Request, fault: _Fault) -> web.StreamResponse:
        self.stats.faults += 1
        if fault.kind == "redirect_loop":
            raise web.HTTPFound(str(request.url.with_query({_REDIRECT_MARK: "1"})))
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
        if _REDIRECT_MARK in request.query:  # the rest of an injected redirect loop
            raise web.HTTPFound(str(request.url))
        if self._faults:
            fault = self._take_fault(method)
            if fault is not None:
                return await self._faulty_answer(request, fault)
        bot = self._bots.get(token)
        spec = _METHODS.get(method.lower())
        try:
            if bot is None:
                raise ApiError(401, "Unauthorized")
            if spec is None:
                raise ApiError(404, "Not Found")
            try:
                raw, files = await _read_params(request)
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(413, "Request Entity Too Large") from None
        except ApiError as error:
            self.stats.errors += 1
            self._record(spec.name if spec else method, token, {}, {}, None, error)
            return _respond(error.payload(), error.code)
        status, body = await self._call(bot, spec, raw, files)
        return _respond(body, status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self._bots:
            return _respond(ApiError(401, "Unauthorized").payload(), 401)
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return _respond(ApiError(404, "Not Found").payload(), 404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _call(
        self, bot: SimBot, spec: _MethodSpec, raw: dict[str, Any], files: dict[str, Upload]
    ) -> tuple[int, dict[str, Any]]:
        params = Params(raw, files)
        try:
            if spec.rate_limited and bot.limiter is not None:
                self._check_flood(bot, params)
            result = await spec.handler(self, bot, params)
        except ApiError as error:
            self.stats.errors += 1
            if error.code == 429:
                self.stats.rate_limited += 1
            self._record(spec.name, bot.token, raw, files, None, error)
            if spec.rate_limited:
                self._log_failed_send(bot, spec.name, raw, error)
            return error.code, error.payload()
        except Exception as exc:
            # A sandbox bug must not look like a Telegram answer; keep it for tests to see.
            log.exception("sandbox failed on %s", spec.name)
            self.internal_errors.append(exc)
            internal = ApiError(500, "Internal Server Error")
            self._record(spec.name, bot.token, raw, files, None, internal)
            return 500, internal.payload()
        self._record(spec.name, bot.token, raw, files, result, None)
        return 200, {"ok": True, "result": result}

    async def _execute_webhook_reply(
        self, bot: SimBot, method: str, params: dict[str, Any]
    ) -> None:
        spec = _METHODS.get(method.lower())
        if spec is not None:
            await self._call(bot, spec, params, {})

    def _check_flood(self, bot: SimBot, params: Params) -> None:
        assert bot.limiter is not None
        chat = params.raw.get("chat_id")
        key: int | str = chat if isinstance(chat, (int, str)) else str(chat)
        retry_after = bot.limiter.acquire(key)
        if retry_after is not None:
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)

    def _record(
        self,
        method: str,
        token: str,
        raw: dict[str, Any],
        files: dict[str, Upload],
        result: Any,
        error: ApiError | None,
    ) -> None:
        if self.record_calls:
            params = raw
            if files:
                params = {**raw, **{key: upload.describe() for key, upload in files.items()}}
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
        self._changes.fire()

    def _log_failed_send(
        self, bot: SimBot, method: str, raw: dict[str, Any], error: ApiError
    ) -> None:
        chat_id = raw.get("chat_id")
        if not isinstance(chat_id, int):
            return
        icon = "⏳" if error.code == 429 else "✗"
        self._transcript.add(
            f"🤖 {icon} → {self._label(bot, chat_id)}: {method} → {error.code} {error.description}",
            chat_id,
        )

    # -- chats and messages -----------------------------------------------------------------

    def _label(self, bot: SimBot, chat_id: int) -> str:
        user = self._users.get((bot.token, chat_id))
        if user is not None:
            return user.first_name
        chat = self._chats.get(chat_id)
        return chat.title if chat is not None else str(chat_id)

    def _target(self, bot: SimBot, params: Params, *, send: bool) -> _Target:
        """Resolve ``chat_id``; ``send`` applies the checks for writing to the chat."""
        chat_id = params.chat_id()
        if isinstance(chat_id, str):
            found = next(
                (chat for chat in self._chats.values() if f"@{chat.username}" == chat_id), None
            )
            if found is None:
                raise _bad("chat not found")
            chat_id = found.id
        if chat_id > 0:
            user = self._users.get((bot.token, chat_id))
            if user is None:
                raise _bad("chat not found")
            if send:
                if user.blocked:
                    raise _forbidden("bot was blocked by the user")
                if not user.started and not self._join_window_open(user.id):
                    raise _forbidden("bot can't initiate conversation with a user")
            elif not (user.started or user.blocked or self._join_window_open(user.id)):
                raise _bad("chat not found")
            return _Target(chat_id, user.profile.private_chat(), user.first_name, user=user)
        group = self._chats.get(chat_id)
        if group is None or not group.bot_is_member:
            raise _bad("chat not found")
        if send and group.type == "channel" and not group.bot_is_admin:
            raise _bad("need administrator rights in the channel chat")
        return _Target(chat_id, group.chat_dict(), group.title, group=group)

    def _group(self, bot: SimBot, params: Params) -> SimChat:
        target = self._target(bot, params, send=False)
        if target.group is None:
            raise _bad("method is available only for supergroups and channel")
        return target.group

    def _join_window_open(self, user_id: int) -> bool:
        horizon = time.time() - JOIN_REQUEST_CHAT_WINDOW_S
        return any(
            (request := chat.join_requests.get(user_id)) is not None and request.date >= horizon
            for chat in self._chats.values()
        )

    def _formatted(self, params: Params, name: str, *, required: bool, limit: int) -> str | None:
        """Validate a text/caption parameter against ``parse_mode``; return the raw text."""
        text = params.string(name)
        what = "message text" if name == "text" else "message caption"
        if not text:
            if required:
                raise _bad(f"{what} is empty")
            return None
        plain = text
        parse_mode = params.string("parse_mode")
        if parse_mode:
            mode = parse_mode.lower()
            if mode == "html":
                plain = html_plain_text(text)
            elif mode not in ("markdown", "markdownv2"):
                raise _bad(f"unsupported parse_mode {parse_mode!r}")
        if not plain.strip():
            raise _bad(f"{what} is empty")
        if len(plain) > limit // 2 and _utf16_length(plain) > limit:
            raise _bad("message is too long" if name == "text" else "message caption is too long")
        return text

    def _reply_to(self, bot: SimBot, target: _Target, params: Params) -> dict[str, Any]:
        reply_parameters = params.structured("reply_parameters")
        message_id = params.integer("reply_to_message_id")
        allow_missing = params.flag("allow_sending_without_reply")
        if isinstance(reply_parameters, dict):
            message_id = reply_parameters.get("message_id", message_id)
            allow_missing = allow_missing or bool(
                reply_parameters.get("allow_sending_without_reply")
            )
        if not message_id:
            return {}
        key = (target.chat_id, int(message_id))
        stored = bot.messages.get(key)
        original = stored.data if stored and not stored.deleted else bot.user_messages.get(key)
        if original is None:
            if allow_missing:
                return {}
            raise _bad("message to be replied not found")
        return {"reply_to_message": {k: v for k, v in original.items() if k != "reply_to_message"}}

    def _send(
        self,
        bot: SimBot,
        target: _Target,
        content: dict[str, Any],
        markup: dict[str, Any] | None,
        file: StoredFile | None = None,
    ) -> dict[str, Any]:
        """Create a bot message in the target chat and return its ``Message`` object."""
        message_id = bot.next_message_id(target.chat_id)
        data: dict[str, Any] = {
            "message_id": message_id,
            "from": bot.user_dict(),
            "chat": target.chat,
            "date": int(time.time()),
            **content,
        }
        if markup is not None and "inline_keyboard" in markup:
            data["reply_markup"] = markup
        message = BotMessage(data, markup, file)
        bot.messages[(target.chat_id, message_id)] = message
        history = bot.history.get(target.chat_id)
        if history is None:
            bot.history[target.chat_id] = [message_id]
        else:
            history.append(message_id)
        self._transcript.add(f"🤖 → {target.label}: {message.summary}", target.chat_id)
        if target.user is not None:
            target.user._deliver(message)
        return data

    def _editable(self, bot: SimBot, target: _Target, params: Params) -> BotMessage:
        if params.has("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        message_id = params.integer("message_id", required=True)
        assert message_id is not None
        key = (target.chat_id, message_id)
        message = bot.messages.get(key)
        if message is None or message.deleted:
            if key in bot.user_messages:
                raise _bad("message can't be edited")
            raise _bad("message to edit not found")
        return message

    def _replace(self, bot: SimBot, target: _Target, message: BotMessage) -> dict[str, Any]:
        bot.messages[(target.chat_id, message.message_id)] = message
        self._transcript.add(f"🤖 ✎ {target.label}: {message.summary}", target.chat_id)
        if target.user is not None:
            target.user._deliver(message)
        return message.data

    def _chat_history(self, bot: SimBot, chat_id: int) -> list[BotMessage]:
        history = []
        for message_id in bot.history.get(chat_id, ()):
            message = bot.messages[(chat_id, message_id)]
            if not message.deleted:
                history.append(message)
        return history

    def _current_message(self, bot: SimBot, chat_id: int, message_id: int) -> BotMessage | None:
        message = bot.messages.get((chat_id, message_id))
        return None if message is None or message.deleted else message

    def _new_user_message(
        self, bot: SimBot, user: SimUser, chat: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        message_id = bot.next_message_id(chat["id"])
        data: dict[str, Any] = {
            "message_id": message_id,
            "from": user.profile.user_dict(),
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        bot.user_messages[(chat["id"], message_id)] = data
        return data

    # -- updates ----------------------------------------------------------------------------

    def _push_update(
        self, bot: SimBot, kind: str, payload: dict[str, Any]
    ) -> dict[str, Any] | None:
        update = bot.updates.push(kind, payload)
        if update is None:
            self.stats.updates_dropped += 1
        else:
            self.stats.updates += 1
        self._changes.fire()
        return update

    def _push_raw(self, bot: SimBot, update: dict[str, Any]) -> None:
        bot.updates.push_raw(update)
        self.stats.updates += 1
        self._changes.fire()

    def _open_query(
        self, bot: SimBot, user: SimUser, *, pre_checkout: bool = False
    ) -> _PendingQuery:
        query_id = str(secrets.randbits(63))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        query = _PendingQuery(query_id, bot.token, user.id, user.first_name, future, pre_checkout)
        self._queries[query_id] = query
        return query

    def _close_query(self, query_id: str) -> None:
        self._queries.pop(query_id, None)

    def _take_query(
        self, bot: SimBot, query_id: str | None, *, pre_checkout: bool
    ) -> _PendingQuery:
        query = self._queries.get(query_id or "")
        if (
            query is None
            or query.bot_token != bot.token
            or query.pre_checkout != pre_checkout
            or query.future.done()
        ):
            raise _bad(QUERY_TOO_OLD)
        del self._queries[query.id]
        return query

    # -- files ------------------------------------------------------------------------------

    def _store_file(
        self,
        data: bytes,
        filename: str | None,
        mime_type: str | None,
        kind: Literal["document", "photo"],
    ) -> StoredFile:
        if not data:
            raise _bad("file must be non-empty")
        width = height = 0
        if kind == "photo":
            size = image_size(data)
            if size is None:
                raise _bad("IMAGE_PROCESS_FAILED")
            width, height = size
        if not mime_type or mime_type == "application/octet-stream":
            mime_type = mimetypes.guess_type(filename or "")[0] or "application/octet-stream"
        number = next(self._counter)
        suffix = ""
        if filename and "." in filename:
            suffix = "." + filename.rsplit(".", 1)[1]
        if kind == "photo":
            path = f"photos/file_{number}{suffix or '.jpg'}"
            prefix = "AgACAgIAAxkBAAI"
        else:
            path = f"documents/file_{number}{suffix}"
            prefix = "BQACAgIAAxkBAAI"
        stored = StoredFile(
            file_id=prefix + secrets.token_urlsafe(30),
            file_unique_id="AgAD" + secrets.token_urlsafe(9),
            kind=kind,
            data=data,
            file_name=filename if kind == "document" else None,
            mime_type=mime_type if kind == "document" else None,
            file_path=path,
            width=width,
            height=height,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[path] = stored
        return stored

    async def _input_file(self, params: Params, name: Literal["document", "photo"]) -> StoredFile:
        """Resolve an InputFile parameter: an upload, ``attach://``, a file_id or a URL."""
        value = params.raw.get(name)
        upload = params.files.get(name)
        if upload is None and isinstance(value, str) and value.startswith("attach://"):
            upload = params.files.get(value.removeprefix("attach://"))
        if upload is not None:
            return self._store_file(upload.data, upload.filename, upload.content_type, name)
        if isinstance(value, str) and value and not value.startswith("attach://"):
            if value.startswith(("http://", "https://")):
                data = await self._download(value)
                filename = value.rsplit("/", 1)[-1].split("?", 1)[0] or None
                return self._store_file(data, filename, None, name)
            stored = self._files.get(value)
            if stored is None:
                raise _bad("wrong file identifier/HTTP URL specified")
            if stored.kind != name:
                raise _bad(f"can't use file of type {stored.kind.title()} as {name.title()}")
            return stored
        raise _bad(f"there is no {name} in the request")

    async def _download(self, url: str) -> bytes:
        try:
            async with self._client().get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status != 200:
                    raise _bad("failed to get HTTP URL content")
                return await response.read()
        except (aiohttp.ClientError, TimeoutError):
            raise _bad("failed to get HTTP URL content") from None

    # -- payments ---------------------------------------------------------------------------

    def _parse_invoice(self, bot: SimBot, params: Params, *, link: bool) -> InvoiceInfo:
        title = params.string("title", required=True) or ""
        description = params.string("description", required=True) or ""
        payload = params.string("payload", required=True) or ""
        currency = params.string("currency", required=True) or ""
        provider_token = params.string("provider_token") or ""
        if len(title) > 32:
            raise _bad("title is too long")
        if len(description) > 255:
            raise _bad("description is too long")
        if len(payload.encode()) > 128:
            raise _bad("payload is too long")
        if currency not in CURRENCIES:
            raise _bad("CURRENCY_INVALID")
        prices = params.structured("prices", required=True)
        if not isinstance(prices, list) or not prices:
            raise _bad("can't parse prices JSON object")
        for price in prices:
            if not isinstance(price, dict) or not isinstance(price.get("label"), str):
                raise _bad("can't parse prices JSON object")
            amount = price.get("amount")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                raise _bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        subscription_period = params.integer("subscription_period") if link else None
        if currency == "XTR":
            has_tips = params.integer("max_tip_amount") or params.has("suggested_tip_amounts")
            if len(prices) != 1 or provider_token or has_tips:
                raise _bad("STARS_INVOICE_INVALID")
            if subscription_period is not None and subscription_period != STARS_SUBSCRIPTION_PERIOD:
                raise _bad("SUBSCRIPTION_PERIOD_INVALID")
        else:
            if not provider_token:
                raise _bad("PAYMENT_PROVIDER_INVALID")
            if subscription_period is not None:
                raise _bad("SUBSCRIPTION_PERIOD_INVALID")
        photo_url = params.string("photo_url")
        if photo_url and not photo_url.startswith(("http://", "https://")):
            raise _bad("PHOTO_URL_INVALID")
        provider_data = params.raw.get("provider_data")
        if provider_data is not None and not isinstance(provider_data, str):
            provider_data = json.dumps(provider_data)
        return InvoiceInfo(
            bot_token=bot.token,
            title=title,
            description=description,
            payload=payload,
            currency=currency,
            prices=prices,
            provider_token=provider_token,
            start_parameter=params.string("start_parameter") or "",
            provider_data=provider_data,
            photo_url=photo_url,
            need_name=params.flag("need_name"),
            need_email=params.flag("need_email"),
            need_phone_number=params.flag("need_phone_number"),
            need_shipping_address=params.flag("need_shipping_address"),
            send_email_to_provider=params.flag("send_email_to_provider"),
            send_phone_number_to_provider=params.flag("send_phone_number_to_provider"),
            subscription_period=subscription_period,
        )

    def _resolve_invoice(self, bot: SimBot, invoice: BotMessage | str) -> InvoiceInfo:
        if isinstance(invoice, str):
            info = self._invoice_links.get(invoice)
            if info is None or info.bot_token != bot.token:
                raise ValueError(f"unknown invoice link {invoice!r}")
            return info
        found = self._invoices.get((bot.token, invoice.chat_id, invoice.message_id))
        if found is None:
            raise ValueError(f"message {invoice.message_id} has no invoice")
        return found

    def _payment_chat(self, user: SimUser, info: InvoiceInfo) -> dict[str, Any]:
        if info.chat_id is not None and info.chat_id in self._chats:
            return self._chats[info.chat_id].chat_dict()
        return user.profile.private_chat()

    def _new_charge(
        self,
        bot: SimBot,
        user: SimUser,
        info: InvoiceInfo,
        order_info: dict[str, Any],
        provider_charge_id: str | None,
    ) -> Charge:
        number = next(self._counter)
        if info.currency == "XTR":
            telegram_id = "stx" + secrets.token_urlsafe(48)
            provider_id = provider_charge_id or f"{bot.id}_{user.id}_{number}"
        else:
            telegram_id = f"{int(time.time())}_{user.id}_{number}_{secrets.token_hex(4)}"
            provider_id = provider_charge_id or "ch_" + secrets.token_hex(12)
        charge = Charge(
            telegram_payment_charge_id=telegram_id,
            provider_payment_charge_id=provider_id,
            bot_token=bot.token,
            user_id=user.id,
            invoice=info,
            order_info=order_info,
            created=time.time(),
        )
        self._charges[telegram_id] = charge
        return charge

    def _charge(self, charge_id: str) -> Charge | None:
        return self._charges.get(charge_id)

    def _refund(self, charge: Charge, source: Literal["bot", "telegram"]) -> None:
        charge.refunded = True
        self.refund_events.append(
            RefundEvent(
                charge.telegram_payment_charge_id,
                charge.user_id,
                charge.total_amount,
                charge.currency,
                charge.invoice.payload,
                source,
                time.time(),
            )
        )
        profile = self._profiles.get(charge.user_id)
        name = profile.first_name if profile else str(charge.user_id)
        by = "🤖 refunds" if source == "bot" else "💸 Telegram refunds"
        self._transcript.add(
            f"{by} {format_amount(charge.total_amount, charge.currency)} → {name} "
            f"({charge.telegram_payment_charge_id})",
            charge.user_id,
        )

    # -- invite links -----------------------------------------------------------------------

    def _open_invite_link(self, user: SimUser, link: str) -> Literal["pending", "joined", "member"]:
        found = self._invite_links.get(link)
        if found is None:
            raise ValueError("INVITE_HASH_INVALID")
        chat = self._chats[found.chat_id]
        if found.is_revoked or (found.expire_date is not None and found.expire_date <= time.time()):
            raise ValueError("INVITE_HASH_EXPIRED")
        if user.id in chat.banned:
            raise ValueError("USER_BANNED_IN_CHANNEL")
        if user.id in chat.members:
            return "member"
        bot = self._bots[found.bot_token]
        # The link's creator is the bot that hears about the request.
        requester = self.user(user.id, bot=bot)
        if found.creates_join_request:
            now = int(time.time())
            chat.join_requests[user.id] = JoinRequest(user.id, found, now)
            self._transcript.add(f"👤 {user.first_name} asks to join «{chat.title}»", user.id)
            requester._emit(
                "chat_join_request",
                {
                    "chat": chat.chat_dict(),
                    "from": user.profile.user_dict(),
                    "user_chat_id": user.id,
                    "date": now,
                    "invite_link": found.to_dict(),
                },
            )
            return "pending"
        if found.member_limit is not None and found.joined >= found.member_limit:
            raise ValueError("USERS_TOO_MUCH")
        self._admit(bot, chat, user.id, found)
        self._transcript.add(f"👤 {user.first_name} joined «{chat.title}»", user.id)
        return "joined"

    def _admit(self, bot: SimBot, chat: SimChat, user_id: int, link: InviteLink | None) -> None:
        chat.members.add(user_id)
        if link is not None:
            link.joined += 1
        profile = self._profiles.get(user_id)
        user = (profile or UserProfile(user_id, str(user_id))).user_dict()
        payload: dict[str, Any] = {
            "chat": chat.chat_dict(),
            "from": user,
            "date": int(time.time()),
            "old_chat_member": {"status": "left", "user": user},
            "new_chat_member": {"status": "member", "user": user},
        }
        if link is not None:
            payload["invite_link"] = link.to_dict()
        self._push_update(bot, "chat_member", payload)

    def _member_dict(self, bot: SimBot, chat: SimChat, user_id: int) -> dict[str, Any]:
        if user_id == bot.id:
            if chat.bot_is_admin:
                return _bot_admin_rights(bot.user_dict())
            status = "member" if chat.bot_is_member else "left"
            return {"status": status, "user": bot.user_dict()}
        profile = self._profiles.get(user_id)
        if profile is None:
            raise _bad("user not found")
        user = profile.user_dict()
        if user_id in chat.banned:
            return {"status": "kicked", "user": user, "until_date": 0}
        if user_id in chat.admins:
            return _bot_admin_rights(user)
        if user_id in chat.members:
            return {"status": "member", "user": user}
        return {"status": "left", "user": user}

    # =======================================================================================
    # Bot API methods
    # =======================================================================================

    @_api("getMe")
    async def _get_me(self, bot: SimBot, params: Params) -> dict[str, Any]:
        return {
            **bot.user_dict(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    # -- updates ----------------------------------------------------------------------------

    @_api("getUpdates")
    async def _get_updates(self, bot: SimBot, params: Params) -> list[dict[str, Any]]:
        if bot.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        allowed = params.structured("allowed_updates")
        if isinstance(allowed, list):
            bot.updates.set_allowed([str(kind) for kind in allowed])
        limit = min(max(params.integer("limit") or 100, 1), 100)
        timeout = max(params.integer("timeout") or 0, 0)
        return await bot.updates.poll(
            params.integer("offset") or 0, limit, timeout, lambda: bot.webhook is not None
        )

    @_api("setWebhook")
    async def _set_webhook(self, bot: SimBot, params: Params) -> bool:
        url = params.string("url") or ""
        if url and not url.startswith(("http://", "https://")):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.string("secret_token")
        if secret and not _SECRET_RE.match(secret):
            raise _bad("secret token contains unallowed characters")
        max_connections = params.integer("max_connections") or 40
        if not 1 <= max_connections <= 100:
            raise _bad("bad webhook: max_connections must be between 1 and 100")
        if params.flag("drop_pending_updates"):
            bot.updates.clear()
        allowed = params.structured("allowed_updates")
        if isinstance(allowed, list):
            bot.updates.set_allowed([str(kind) for kind in allowed])
        await self._stop_webhook(bot)
        if url:
            bot.webhook = WebhookConfig(
                url, secret or None, max_connections, params.string("ip_address")
            )
            worker = _WebhookWorker(self, bot, bot.webhook)
            self._webhooks[bot.token] = worker
            worker.start()
        bot.updates.signal.fire()  # a waiting long poll now fails with 409
        return True

    @_api("deleteWebhook")
    async def _delete_webhook(self, bot: SimBot, params: Params) -> bool:
        await self._stop_webhook(bot)
        if params.flag("drop_pending_updates"):
            bot.updates.clear()
        return True

    async def _stop_webhook(self, bot: SimBot) -> None:
        worker = self._webhooks.pop(bot.token, None)
        if worker is not None:
            await worker.stop()
        bot.webhook = None

    @_api("getWebhookInfo")
    async def _get_webhook_info(self, bot: SimBot, params: Params) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": bot.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(bot.updates),
        }
        if bot.webhook is not None:
            info["max_connections"] = bot.webhook.max_connections
            if bot.webhook.ip_address:
                info["ip_address"] = bot.webhook.ip_address
            if bot.webhook.last_error_date is not None:
                info["last_error_date"] = bot.webhook.last_error_date
                info["last_error_message"] = bot.webhook.last_error_message
        if bot.updates.allowed_list is not None:
            info["allowed_updates"] = bot.updates.allowed_list
        return info

    # -- messages ---------------------------------------------------------------------------

    @_api("sendMessage", rate_limited=True)
    async def _send_message(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=True)
        text = self._formatted(params, "text", required=True, limit=MAX_TEXT_LENGTH)
        markup = _check_reply_markup(params.structured("reply_markup"))
        content: dict[str, Any] = {**self._reply_to(bot, target, params), "text": text}
        return self._send(bot, target, content, markup)

    @_api("sendDocument", rate_limited=True)
    async def _send_document(self, bot: SimBot, params: Params) -> dict[str, Any]:
        return await self._send_file(bot, params, "document", StoredFile.document_dict)

    @_api("sendPhoto", rate_limited=True)
    async def _send_photo(self, bot: SimBot, params: Params) -> dict[str, Any]:
        return await self._send_file(bot, params, "photo", StoredFile.photo_sizes)

    async def _send_file(
        self,
        bot: SimBot,
        params: Params,
        field: str,
        describe: Callable[[StoredFile], Any],
    ) -> dict[str, Any]:
        """sendDocument and sendPhoto: an uploaded (or known) file with an optional caption."""
        target = self._target(bot, params, send=True)
        caption = self._formatted(params, "caption", required=False, limit=MAX_CAPTION_LENGTH)
        markup = _check_reply_markup(params.structured("reply_markup"))
        stored = await self._input_file(params, field)
        content: dict[str, Any] = {**self._reply_to(bot, target, params), field: describe(stored)}
        if caption:
            content["caption"] = caption
        return self._send(bot, target, content, markup, stored)

    @_api("editMessageText", rate_limited=True)
    async def _edit_message_text(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=True)
        message = self._editable(bot, target, params)
        text = self._formatted(params, "text", required=True, limit=MAX_TEXT_LENGTH)
        markup = _check_reply_markup(params.structured("reply_markup"), inline_only=True)
        if message.text is None:
            raise _bad("there is no text in the message to edit")
        return self._apply_edit(bot, target, message, {"text": text}, markup)

    @_api("editMessageCaption", rate_limited=True)
    async def _edit_message_caption(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=True)
        message = self._editable(bot, target, params)
        caption = self._formatted(params, "caption", required=False, limit=MAX_CAPTION_LENGTH)
        markup = _check_reply_markup(params.structured("reply_markup"), inline_only=True)
        if message.file is None:
            raise _bad("there is no caption in the message to edit")
        return self._apply_edit(bot, target, message, {"caption": caption}, markup)

    @_api("editMessageReplyMarkup", rate_limited=True)
    async def _edit_message_reply_markup(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=True)
        message = self._editable(bot, target, params)
        markup = _check_reply_markup(params.structured("reply_markup"), inline_only=True)
        return self._apply_edit(bot, target, message, {}, markup)

    def _apply_edit(
        self,
        bot: SimBot,
        target: _Target,
        message: BotMessage,
        changes: dict[str, Any],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        # Like Telegram, an edit without reply_markup removes the inline keyboard.
        old_markup = message.markup if message.inline_keyboard else None
        unchanged = all(message.data.get(key) == value for key, value in changes.items())
        if unchanged and old_markup == markup:
            raise _bad(NOT_MODIFIED)
        data = {**message.data, "edit_date": int(time.time())}
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        data.pop("reply_markup", None)
        if markup is not None:
            data["reply_markup"] = markup
        kept_markup = markup if markup is not None else (None if old_markup else message.markup)
        edited = replace(message, data=data, markup=kept_markup, edited=True)
        return self._replace(bot, target, edited)

    @_api("deleteMessage")
    async def _delete_message(self, bot: SimBot, params: Params) -> bool:
        target = self._target(bot, params, send=False)
        message_id = params.integer("message_id", required=True)
        assert message_id is not None
        key = (target.chat_id, message_id)
        message = bot.messages.get(key)
        if message is not None and not message.deleted:
            bot.messages[key] = replace(message, deleted=True)
            self._transcript.add(
                f"🤖 🗑 {target.label}: deleted #{message_id} ({message.summary[:40]})",
                target.chat_id,
            )
            return True
        if bot.user_messages.pop(key, None) is not None:
            return True
        raise _bad("message to delete not found")

    @_api("sendChatAction")
    async def _send_chat_action(self, bot: SimBot, params: Params) -> bool:
        self._target(bot, params, send=True)
        if params.string("action", required=True) not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    @_api("answerCallbackQuery")
    async def _answer_callback_query(self, bot: SimBot, params: Params) -> bool:
        query_id = params.string("callback_query_id", required=True)
        text = params.string("text")
        if text and len(text) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        query = self._take_query(bot, query_id, pre_checkout=False)
        answer = CallbackAnswer(
            text=text or None,
            show_alert=params.flag("show_alert"),
            url=params.string("url"),
            cache_time=params.integer("cache_time") or 0,
        )
        query.future.set_result(answer)
        if answer.text:
            kind = "⚠ alert " if answer.show_alert else ""
            self._transcript.add(f"🤖 ↩ {query.user_name}: {kind}“{answer.text}”", query.user_id)
        return True

    # -- files ------------------------------------------------------------------------------

    @_api("getFile")
    async def _get_file(self, bot: SimBot, params: Params) -> dict[str, Any]:
        stored = self._files.get(params.string("file_id", required=True) or "")
        if stored is None:
            raise _bad("invalid file_id")
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise _bad("file is too big")
        return stored.file_dict()

    # -- payments ---------------------------------------------------------------------------

    @_api("sendInvoice", rate_limited=True)
    async def _send_invoice(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=True)
        info = self._parse_invoice(bot, params, link=False)
        markup = _check_reply_markup(params.structured("reply_markup"), inline_only=True)
        if markup is not None and not markup["inline_keyboard"][0][0].get("pay"):
            raise _bad("REPLY_MARKUP_BUY_EMPTY")
        content = {**self._reply_to(bot, target, params), "invoice": info.invoice_dict()}
        data = self._send(bot, target, content, markup)
        info.chat_id = target.chat_id
        info.message_id = data["message_id"]
        self._invoices[(bot.token, target.chat_id, data["message_id"])] = info
        return data

    @_api("createInvoiceLink")
    async def _create_invoice_link(self, bot: SimBot, params: Params) -> str:
        info = self._parse_invoice(bot, params, link=True)
        info.link = "https://t.me/$" + secrets.token_urlsafe(24)
        self._invoice_links[info.link] = info
        return info.link

    @_api("answerPreCheckoutQuery")
    async def _answer_pre_checkout_query(self, bot: SimBot, params: Params) -> bool:
        query_id = params.string("pre_checkout_query_id", required=True)
        ok = params.flag("ok", required=True)
        error_message = params.string("error_message")
        if not ok and not error_message:
            raise _bad("ERROR_MESSAGE_EMPTY")
        query = self._take_query(bot, query_id, pre_checkout=True)
        query.future.set_result(
            PreCheckoutAnswer(ok, None if ok else error_message, time.monotonic())
        )
        return True

    @_api("refundStarPayment")
    async def _refund_star_payment(self, bot: SimBot, params: Params) -> bool:
        user_id = params.integer("user_id", required=True)
        charge_id = params.string("telegram_payment_charge_id", required=True) or ""
        charge = self._charges.get(charge_id)
        if (
            charge is None
            or charge.user_id != user_id
            or charge.bot_token != bot.token
            or charge.currency != "XTR"
        ):
            raise _bad("CHARGE_NOT_FOUND")
        if charge.refunded:
            raise _bad("CHARGE_ALREADY_REFUNDED")
        self._refund(charge, source="bot")
        return True

    # -- chats ------------------------------------------------------------------------------

    @_api("getChat")
    async def _get_chat(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=False)
        return {
            **target.chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }

    @_api("getChatMember")
    async def _get_chat_member(self, bot: SimBot, params: Params) -> dict[str, Any]:
        target = self._target(bot, params, send=False)
        user_id = params.integer("user_id", required=True)
        assert user_id is not None
        if target.group is not None:
            return self._member_dict(bot, target.group, user_id)
        if user_id == bot.id:
            return {"status": "member", "user": bot.user_dict()}
        if user_id != target.chat_id:
            raise _bad("user not found")
        assert target.user is not None
        return {"status": "member", "user": target.user.profile.user_dict()}

    @_api("createChatInviteLink")
    async def _create_chat_invite_link(self, bot: SimBot, params: Params) -> dict[str, Any]:
        chat = self._group(bot, params)
        if not chat.bot_is_admin:
            raise _bad("not enough rights to manage chat invite links")
        name = params.string("name")
        if name and len(name) > 32:
            raise _bad("name is too long")
        member_limit = params.integer("member_limit")
        creates_join_request = params.flag("creates_join_request")
        if member_limit is not None:
            if creates_join_request:
                raise _bad(
                    "member limit can't be specified for links requiring administrator approval"
                )
            if not 1 <= member_limit <= 99999:
                raise _bad("USAGE_LIMIT_INVALID")
        expire_date = params.integer("expire_date")
        if expire_date is not None and expire_date <= time.time():
            raise _bad("EXPIRE_DATE_INVALID")
        link = InviteLink(
            invite_link="https://t.me/+" + secrets.token_urlsafe(12),
            chat_id=chat.id,
            bot_token=bot.token,
            creator=bot.user_dict(),
            creates_join_request=creates_join_request,
            name=name or None,
            expire_date=expire_date,
            member_limit=member_limit,
        )
        self._invite_links[link.invite_link] = link
        return link.to_dict()

    @_api("revokeChatInviteLink")
    async def _revoke_chat_invite_link(self, bot: SimBot, params: Params) -> dict[str, Any]:
        chat = self._group(bot, params)
        if not chat.bot_is_admin:
            raise _bad("not enough rights to manage chat invite links")
        link = self._invite_links.get(params.string("invite_link", required=True) or "")
        if link is None or link.chat_id != chat.id:
            raise _bad("INVITE_HASH_EXPIRED")
        link.is_revoked = True
        return link.to_dict()

    @_api("approveChatJoinRequest")
    async def _approve_chat_join_request(self, bot: SimBot, params: Params) -> bool:
        chat, user_id = self._join_request_target(bot, params)
        request = chat.join_requests.pop(user_id, None)
        if request is None:
            raise _bad("HIDE_REQUESTER_MISSING")
        if user_id in chat.members:
            raise _bad("USER_ALREADY_PARTICIPANT")
        self._admit(bot, chat, user_id, request.invite_link)
        self._transcript.add(f"🤖 ✓ admits {self._label(bot, user_id)} to «{chat.title}»", user_id)
        return True

    @_api("declineChatJoinRequest")
    async def _decline_chat_join_request(self, bot: SimBot, params: Params) -> bool:
        chat, user_id = self._join_request_target(bot, params)
        if chat.join_requests.pop(user_id, None) is None:
            raise _bad("HIDE_REQUESTER_MISSING")
        self._transcript.add(
            f"🤖 ✗ declines {self._label(bot, user_id)} for «{chat.title}»", user_id
        )
        return True

    def _join_request_target(self, bot: SimBot, params: Params) -> tuple[SimChat, int]:
        chat = self._group(bot, params)
        if not chat.bot_is_admin:
            raise _bad("not enough rights")
        user_id = params.integer("user_id", required=True)
        assert user_id is not None
        return chat, user_id

    @_api("banChatMember")
    async def _ban_chat_member(self, bot: SimBot, params: Params) -> bool:
        chat, user_id = self._join_request_target(bot, params)
        chat.members.discard(user_id)
        chat.banned.add(user_id)
        self._transcript.add(f"🤖 ⛔ bans {self._label(bot, user_id)} from «{chat.title}»", user_id)
        return True

    @_api("unbanChatMember")
    async def _unban_chat_member(self, bot: SimBot, params: Params) -> bool:
        chat, user_id = self._join_request_target(bot, params)
        if params.flag("only_if_banned") and user_id not in chat.banned:
            return True
        chat.banned.discard(user_id)
        chat.members.discard(user_id)  # unbanning a member removes them, as in Telegram
        return True

    # -- bot settings -----------------------------------------------------------------------

    @_api("setMyCommands")
    async def _set_my_commands(self, bot: SimBot, params: Params) -> bool:
        commands = params.structured("commands", required=True)
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("can't parse commands JSON object")
        cleaned = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("can't parse BotCommand JSON object")
            name = str(command.get("command", "")).removeprefix("/")
            description = str(command.get("description", ""))
            if not _COMMAND_NAME_RE.match(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        bot.commands[self._commands_key(params)] = cleaned
        return True

    @_api("getMyCommands")
    async def _get_my_commands(self, bot: SimBot, params: Params) -> list[dict[str, str]]:
        return list(bot.commands.get(self._commands_key(params), []))

    @_api("deleteMyCommands")
    async def _delete_my_commands(self, bot: SimBot, params: Params) -> bool:
        bot.commands.pop(self._commands_key(params), None)
        return True

    def _commands_key(self, params: Params) -> tuple[str, str]:
        scope = params.structured("scope")
        if scope is not None and (
            not isinstance(scope, dict) or scope.get("type") not in COMMAND_SCOPES
        ):
            raise _bad("can't parse BotCommandScope JSON object")
        language = params.string("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise _bad("invalid language code specified")
        return _scope_key(scope), language

    @_api("setChatMenuButton")
    async def _set_chat_menu_button(self, bot: SimBot, params: Params) -> bool:
        chat_id = params.integer("chat_id")
        button = params.structured("menu_button") or {"type": "default"}
        if not isinstance(button, dict) or button.get("type") not in (
            "default",
            "commands",
            "web_app",
        ):
            raise _bad("can't parse menu button JSON object")
        if button["type"] == "web_app" and not (
            button.get("text") and isinstance(button.get("web_app"), dict)
        ):
            raise _bad("can't parse menu button JSON object")
        bot.menu_buttons[chat_id] = button
        return True

    @_api("getChatMenuButton")
    async def _get_chat_menu_button(self, bot: SimBot, params: Params) -> dict[str, Any]:
        chat_id = params.integer("chat_id")
        return bot.menu_buttons.get(chat_id) or bot.menu_buttons.get(None) or {"type": "default"}

    async def _set_text(self, bot: SimBot, params: Params, kind: str, limit: int) -> bool:
        value = params.string(kind) or ""
        if len(value) > limit:
            raise _bad(f"{kind} is too long")
        bot.texts[(kind, params.string("language_code") or "")] = value
        return True

    def _get_text(self, bot: SimBot, params: Params, kind: str) -> dict[str, str]:
        language = params.string("language_code") or ""
        value = bot.texts.get((kind, language), bot.texts.get((kind, ""), ""))
        if kind == "name" and not value:
            value = bot.first_name
        return {kind: value}

    @_api("setMyDescription")
    async def _set_my_description(self, bot: SimBot, params: Params) -> bool:
        return await self._set_text(bot, params, "description", 512)

    @_api("getMyDescription")
    async def _get_my_description(self, bot: SimBot, params: Params) -> dict[str, str]:
        return self._get_text(bot, params, "description")

    @_api("setMyShortDescription")
    async def _set_my_short_description(self, bot: SimBot, params: Params) -> bool:
        return await self._set_text(bot, params, "short_description", 120)

    @_api("getMyShortDescription")
    async def _get_my_short_description(self, bot: SimBot, params: Params) -> dict[str, str]:
        return self._get_text(bot, params, "short_description")

    @_api("setMyName")
    async def _set_my_name(self, bot: SimBot, params: Params) -> bool:
        return await self._set_text(bot, params, "name", 64)

    @_api("getMyName")
    async def _get_my_name(self, bot: SimBot, params: Params) -> dict[str, str]:
        return self._get_text(bot, params, "name")


def _scope_key(scope: dict[str, Any] | None) -> str:
    return json.dumps(scope or {"type": "default"}, sort_keys=True)


def _bot_admin_rights(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "administrator",
        "user": user,
        "can_be_edited": False,
        "is_anonymous": False,
        "can_manage_chat": True,
        "can_delete_messages": True,
        "can_manage_video_chats": True,
        "can_restrict_members": True,
        "can_promote_members": False,
        "can_change_info": True,
        "can_invite_users": True,
        "can_post_stories": False,
        "can_edit_stories": False,
        "can_delete_stories": False,
        "can_send_welcome_messages": False,
        "can_pin_messages": True,
    }


def _respond(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type="application/json")
