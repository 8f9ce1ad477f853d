"""What a simulated user needs of the server: the world's side of a user's actions.

:class:`bot.sandbox.users.SimUser` is written against this protocol only, so the users module
never imports the server; :class:`bot.sandbox.server.SandboxServer` implements it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from bot.sandbox.core.state import (
    BotMessage,
    Charge,
    InvoiceInfo,
    PendingQuery,
    SimBot,
    StoredFile,
    UserProfile,
)

__all__ = ["World"]


class World(Protocol):
    """The server as a simulated user sees it."""

    @property
    def precheckout_timeout(self) -> float:
        """Seconds the bot has to answer a ``pre_checkout_query``."""
        ...

    def log(self, text: str, chat_id: int) -> None:
        """Add a line to the transcript of ``chat_id``."""

    def render_transcript(self, chat_id: int | None = None, last: int | None = None) -> str:
        """The transcript (of one chat)."""
        ...

    def push_update(self, bot: SimBot, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Queue an update for ``bot``; ``None`` if its type is not allowed."""
        ...

    def push_raw(self, bot: SimBot, update: dict[str, Any]) -> None:
        """Queue an existing update again, same ``update_id``."""

    def new_user_message(
        self, bot: SimBot, profile: UserProfile, chat: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a message a user sends and return its ``Message`` object."""
        ...

    def store_file(
        self,
        data: bytes,
        filename: str | None,
        mime_type: str | None,
        kind: Literal["document", "photo", "video"],
    ) -> StoredFile:
        """Store an uploaded file."""
        ...

    def chat_history(self, bot: SimBot, chat_id: int) -> list[BotMessage]:
        """Current bot messages of a chat."""
        ...

    def current_message(self, bot: SimBot, chat_id: int, message_id: int) -> BotMessage | None:
        """A bot message as it is now, ``None`` if deleted or unknown."""
        ...

    def open_query(
        self, bot: SimBot, profile: UserProfile, *, pre_checkout: bool = False
    ) -> PendingQuery:
        """Start a callback or pre-checkout query that waits for the bot's answer."""
        ...

    def close_query(self, query_id: str) -> None:
        """Forget a query nobody answered in time."""

    def resolve_invoice(self, bot: SimBot, invoice: BotMessage | str) -> InvoiceInfo:
        """The invoice of a message or an invoice link."""
        ...

    async def take_payment(
        self,
        bot: SimBot,
        profile: UserProfile,
        info: InvoiceInfo,
        order_info: dict[str, Any],
        provider_charge_id: str | None,
    ) -> Charge:
        """Charge the user for an invoice (the provider's side included)."""
        ...

    def payment_chat(self, profile: UserProfile, info: InvoiceInfo) -> dict[str, Any]:
        """The chat a ``successful_payment`` message appears in."""
        ...

    def find_charge(self, charge_id: str) -> Charge | None:
        """A charge by its ``telegram_payment_charge_id``."""
        ...

    def refund_charge(self, charge: Charge, source: Literal["bot", "telegram"]) -> None:
        """Mark a Stars charge refunded."""

    def open_invite_link(
        self, profile: UserProfile, link: str
    ) -> Literal["pending", "joined", "member"]:
        """A user opens an invite link."""
        ...
