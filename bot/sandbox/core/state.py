"""The sandbox's world: bots, users, chats, messages, files, invoices and charges.

Plain records, plus :class:`SandboxState`, the one mutable store every area of the API reads
and writes. Nothing here speaks HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.sandbox.core.queue import Signal, UpdateQueue
from bot.sandbox.ratelimit import RateLimiter
from bot.sandbox.transcript import Transcript, describe_message

__all__ = [
    "BotMessage",
    "CallRecord",
    "CallbackAnswer",
    "Charge",
    "Chatter",
    "InviteLink",
    "InvoiceInfo",
    "JoinRequest",
    "PaymentResult",
    "PendingQuery",
    "PreCheckoutAnswer",
    "RefundEvent",
    "SandboxState",
    "ServerStats",
    "SimBot",
    "SimChat",
    "StarTransaction",
    "Stoppable",
    "StoredFile",
    "UserProfile",
    "WebhookConfig",
]


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


@dataclass(frozen=True, slots=True)
class CallbackAnswer:
    """What the bot passed to ``answerCallbackQuery``."""

    text: str | None = None
    show_alert: bool = False
    url: str | None = None
    cache_time: int = 0


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """Outcome of :meth:`SimUser.pay`.

    ``error_message`` is the bot's pre-checkout refusal text, or ``"timeout"``
    when the bot did not answer within the server's ``precheckout_timeout``.
    ``precheckout_latency_s`` is ``None`` when there was no pre-checkout answer.
    """

    ok: bool
    error_message: str | None
    precheckout_latency_s: float | None
    telegram_payment_charge_id: str | None
    provider_payment_charge_id: str | None
    total_amount: int
    currency: str
    invoice_payload: str = ""


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
    kind: Literal["document", "photo", "video"]
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

    def video_dict(self) -> dict[str, Any]:
        """A ``Video`` object (the sandbox does not decode video: size and length are 0)."""
        return {**self.document_dict(), "width": 0, "height": 0, "duration": 0}

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
    def video(self) -> dict[str, Any] | None:
        """The ``Video`` object, if any."""
        return self.data.get("video")

    @property
    def invoice(self) -> dict[str, Any] | None:
        """The ``Invoice`` object, if any."""
        return self.data.get("invoice")

    @property
    def file_bytes(self) -> bytes | None:
        """Content of the attached document, video or photo."""
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
    # The bot's admin rights there, when it is an admin (``can_invite_users`` and so on).
    bot_rights: dict[str, bool] = field(default_factory=dict)
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
class PendingQuery:
    """A callback or pre-checkout query waiting for the bot's answer."""

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


@dataclass(slots=True, eq=False)
class SimBot:
    """A bot registered on the server, with everything Telegram stores for it."""

    token: str
    username: str
    first_name: str
    limiter: RateLimiter | None = None
    updates: UpdateQueue = field(default_factory=UpdateQueue)
    webhook: WebhookConfig | None = None
    # A load balancer in front of replicas (tests and benches): webhook posts go round-robin to
    # these URLs instead of the registered one. Empty: the registered URL, as Telegram does.
    webhook_spread: list[str] = field(default_factory=list)
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


@dataclass(frozen=True, slots=True)
class StarTransaction:
    """One movement of a bot's Stars: a payment in, or a refund out (same id as its payment)."""

    id: str
    bot_token: str
    amount: int
    date: int
    user_id: int
    invoice_payload: str
    incoming: bool


class Chatter(Protocol):
    """What the world needs of a simulated user (:class:`bot.sandbox.users.SimUser`)."""

    profile: UserProfile
    started: bool
    blocked: bool

    @property
    def id(self) -> int: ...

    @property
    def first_name(self) -> str: ...

    def deliver(self, message: BotMessage) -> None:
        """Put a bot message into the user's inbox."""

    def emit(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send the bot an update of ``kind`` on the user's behalf."""


class Stoppable(Protocol):
    """A background worker (a webhook's delivery loop)."""

    async def stop(self) -> None: ...


@dataclass(slots=True, eq=False)
class SandboxState:
    """Everything the server knows, shared by every area of the API."""

    bots: dict[str, SimBot] = field(default_factory=dict)
    profiles: dict[int, UserProfile] = field(default_factory=dict)
    users: dict[tuple[str, int], Chatter] = field(default_factory=dict)
    chats: dict[int, SimChat] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    files_by_path: dict[str, StoredFile] = field(default_factory=dict)
    invoices: dict[tuple[str, int, int], InvoiceInfo] = field(default_factory=dict)
    invoice_links: dict[str, InvoiceInfo] = field(default_factory=dict)
    invite_links: dict[str, InviteLink] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    star_transactions: list[StarTransaction] = field(default_factory=list)
    queries: dict[str, PendingQuery] = field(default_factory=dict)
    webhooks: dict[str, Stoppable] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    transcript: Transcript = field(default_factory=Transcript)
    changes: Signal = field(default_factory=Signal)
