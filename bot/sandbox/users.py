"""Simulated Telegram users that talk to a bot through the sandbox server.

A :class:`SimUser` lives in the same event loop as the server. Whatever the
user does becomes an update for the bot (delivered by long polling or webhook,
exactly like Telegram), and whatever the bot sends to the user's private chat
lands in the user's inbox, where a test reads it with :meth:`SimUser.next_message`.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Literal

from bot.sandbox.core.state import (
    BotMessage,
    CallbackAnswer,
    Charge,
    InvoiceInfo,
    PaymentResult,
    SimBot,
    UserProfile,
)
from bot.sandbox.core.world import World
from bot.sandbox.transcript import format_amount

__all__ = ["CallbackAnswer", "PaymentResult", "SimUser"]

_COMMAND_RE = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


class SimUser:
    """One Telegram user chatting privately with one bot.

    Obtain instances with :meth:`SandboxServer.user`; the private chat id equals
    the user id, as in Telegram.
    """

    def __init__(self, world: World, bot: SimBot, profile: UserProfile) -> None:
        self._world = world
        self.bot = bot
        self.profile = profile
        self.started = False
        self.blocked = False
        self._inbox: asyncio.Queue[BotMessage] = asyncio.Queue()
        self._last_update: dict[str, Any] | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """Telegram user id (also the private chat id)."""
        return self.profile.id

    @property
    def first_name(self) -> str:
        """First name as shown in the transcript."""
        return self.profile.first_name

    @property
    def username(self) -> str | None:
        """Username without ``@``."""
        return self.profile.username

    @property
    def language_code(self) -> str | None:
        """IETF language tag sent in every update (``from.language_code``)."""
        return self.profile.language_code

    def __repr__(self) -> str:
        return f"SimUser(id={self.id}, first_name={self.first_name!r}, bot={self.bot.username!r})"

    # -- messages to the bot ----------------------------------------------------------------

    async def send(self, text: str) -> dict[str, Any]:
        """Send a text message; ``/commands`` get a ``bot_command`` entity like in the apps."""
        content: dict[str, Any] = {"text": text}
        match = _COMMAND_RE.match(text)
        if match:
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": match.end()}]
        self._log(f"👤 {self.first_name} → {text}")
        return self._send_content(content)

    async def command(self, command: str, args: str | None = None) -> dict[str, Any]:
        """Send ``/command args`` (the leading slash is optional)."""
        if not command.startswith("/"):
            command = "/" + command
        return await self.send(f"{command} {args}" if args else command)

    async def start(self, payload: str | None = None) -> dict[str, Any]:
        """Press *Start*, optionally through a ``t.me/bot?start=payload`` deep link."""
        return await self.command("/start", payload)

    async def send_document(
        self,
        filename: str,
        data: bytes,
        mime_type: str | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """Upload a document the bot can fetch with ``getFile`` and download."""
        stored = self._world.store_file(data, filename, mime_type, kind="document")
        content: dict[str, Any] = {"document": stored.document_dict()}
        if caption:
            content["caption"] = caption
        self._log(f"👤 {self.first_name} → 📄 {filename} (document)")
        return self._send_content(content)

    async def send_video(
        self, filename: str, data: bytes, caption: str | None = None
    ) -> dict[str, Any]:
        """Send a video (uploaded from the phone's gallery, say)."""
        stored = self._world.store_file(data, filename, "video/mp4", kind="video")
        content: dict[str, Any] = {"video": stored.video_dict()}
        if caption:
            content["caption"] = caption
        self._log(f"👤 {self.first_name} → 🎬 {filename} (video)")
        return self._send_content(content)

    async def send_location(self, latitude: float, longitude: float) -> dict[str, Any]:
        """Share a location (the reply keyboard's "request_location" button, say)."""
        self._log(f"👤 {self.first_name} → 📍 {latitude}, {longitude}")
        return self._send_content({"location": {"latitude": latitude, "longitude": longitude}})

    def _send_content(self, content: dict[str, Any]) -> dict[str, Any]:
        if self.blocked:
            # Telegram's "Restart bot" button unblocks before sending.
            self.unblock()
        self.started = True
        chat = self.profile.private_chat()
        message = self._world.new_user_message(self.bot, self.profile, chat, content)
        self.emit("message", message)
        return message

    def emit(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send the bot an update of ``kind`` from this user."""
        update = self._world.push_update(self.bot, kind, payload)
        if update is not None:
            self._last_update = update
        return update

    async def replay_last_update(self) -> dict[str, Any]:
        """Deliver the last update again, same ``update_id`` (tests idempotency)."""
        if self._last_update is None:
            raise AssertionError(f"{self.first_name} has produced no delivered update yet")
        self._log(f"↻ update {self._last_update['update_id']} delivered again")
        self._world.push_raw(self.bot, self._last_update)
        return self._last_update

    # -- messages from the bot --------------------------------------------------------------

    def deliver(self, message: BotMessage) -> None:
        """Put a bot message into the inbox (the server calls this)."""
        self._inbox.put_nowait(message)

    async def next_message(self, timeout: float = 5.0) -> BotMessage:  # noqa: ASYNC109
        """The next bot message (new or edited) in this chat not consumed yet.

        Raises ``AssertionError`` with the tail of the conversation on timeout.
        """
        try:
            return await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.first_name} received no message from the bot within {timeout:g} s.\n"
                f"Last events in this chat:\n{self.transcript(last=15) or '(none)'}"
            ) from None

    async def expect_silence(self, timeout: float = 0.2) -> None:  # noqa: ASYNC109
        """Assert the bot sends nothing (new or edited) to this chat within ``timeout``."""
        try:
            message = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            return
        raise AssertionError(f"{self.first_name} unexpectedly received: {message.summary}")

    def drain(self) -> list[BotMessage]:
        """Consume and return every message waiting in the inbox."""
        drained = []
        while not self._inbox.empty():
            drained.append(self._inbox.get_nowait())
        return drained

    @property
    def messages(self) -> list[BotMessage]:
        """All bot messages in this chat, in order, with edits applied, deleted ones left out."""
        return self._world.chat_history(self.bot, self.id)

    @property
    def last_message(self) -> BotMessage | None:
        """The most recent bot message still present in this chat."""
        history = self.messages
        return history[-1] if history else None

    def transcript(self, last: int | None = None) -> str:
        """This chat's part of the server transcript."""
        return self._world.render_transcript(chat_id=self.id, last=last)

    # -- buttons ----------------------------------------------------------------------------

    async def press(
        self,
        message: BotMessage,
        text: str | None = None,
        callback_data: str | None = None,
        timeout: float = 2.0,  # noqa: ASYNC109 - how long the app waits for the answer
    ) -> CallbackAnswer | None:
        """Press a button of ``message`` (matched by exact ``text`` or ``callback_data``).

        Inline callback buttons send a ``callback_query``; the call returns the
        bot's ``answerCallbackQuery`` answer, or ``None`` if none came within
        ``timeout``. Reply-keyboard buttons send their text as a message and
        return ``None``. The message's *current* keyboard is used, as in the app.
        """
        if text is None and callback_data is None:
            raise ValueError("pass text= or callback_data=")
        current = self._world.current_message(self.bot, message.chat_id, message.message_id)
        if current is None:
            raise AssertionError(f"message {message.message_id} was deleted; nothing to press")
        button = current.find_button(text=text, callback_data=callback_data)
        if button is None:
            if text is not None and text in current.reply_keyboard_texts:
                await self.send(text)
                return None
            raise AssertionError(
                f"no button text={text!r} callback_data={callback_data!r} in message "
                f"{current.message_id}; buttons: {current.button_texts}"
            )
        if "callback_data" not in button:
            raise AssertionError(
                f"button {button['text']!r} is not a callback button ({sorted(button)}); "
                "use pay() for pay buttons"
            )
        query = self._world.open_query(self.bot, self.profile)
        self._log(f"👤 {self.first_name} ⏵ [{button['text']}]")
        self.emit(
            "callback_query",
            {
                "id": query.id,
                "from": self.profile.user_dict(),
                "message": current.data,
                "chat_instance": f"{self.bot.id}{self.id}",
                "data": button["callback_data"],
            },
        )
        if timeout <= 0:
            return None
        try:
            answer: CallbackAnswer = await asyncio.wait_for(asyncio.shield(query.future), timeout)
        except TimeoutError:
            return None
        return answer

    # -- payments ---------------------------------------------------------------------------

    async def forge_callback(
        self,
        data: str,
        message: BotMessage | None = None,
        timeout: float = 2.0,  # noqa: ASYNC109 - how long the app waits for the answer
    ) -> CallbackAnswer | None:
        """Send a ``callback_query`` with ``data`` that no button carries: a forged, stale or
        foreign callback, as a modified client could send. Returns the bot's answer."""
        query = self._world.open_query(self.bot, self.profile)
        self._log(f"👤 {self.first_name} ⏵ forged callback {data!r}")
        payload: dict[str, Any] = {
            "id": query.id,
            "from": self.profile.user_dict(),
            "chat_instance": f"{self.bot.id}{self.id}",
            "data": data,
        }
        if message is not None:
            payload["message"] = message.data
        self.emit("callback_query", payload)
        try:
            answer: CallbackAnswer = await asyncio.wait_for(asyncio.shield(query.future), timeout)
        except TimeoutError:
            return None
        return answer

    async def pay(
        self,
        invoice: BotMessage | str,
        email: str | None = None,
        provider_payment_charge_id: str | None = None,
    ) -> PaymentResult:
        """Pay an invoice message or an invoice link the way the Telegram app does.

        Sends a ``pre_checkout_query`` and waits up to the server's
        ``precheckout_timeout`` for ``answerPreCheckoutQuery``. On ``ok=True``
        the bot receives a ``successful_payment`` message with fresh charge ids.
        """
        info = self._world.resolve_invoice(self.bot, invoice)
        order_info = self._order_info(info, email)
        query = self._world.open_query(self.bot, self.profile, pre_checkout=True)
        payload: dict[str, Any] = {
            "id": query.id,
            "from": self.profile.user_dict(),
            "currency": info.currency,
            "total_amount": info.total_amount,
            "invoice_payload": info.payload,
        }
        if order_info:
            payload["order_info"] = order_info
        amount = format_amount(info.total_amount, info.currency)
        started = time.monotonic()
        self.emit("pre_checkout_query", payload)
        timeout = self._world.precheckout_timeout
        try:
            answer = await asyncio.wait_for(asyncio.shield(query.future), timeout)
        except TimeoutError:
            self._world.close_query(query.id)
            self._log(f"👤 {self.first_name} pays {amount} → pre-checkout timeout ({timeout:g} s)")
            return PaymentResult(
                False, "timeout", None, None, None, info.total_amount, info.currency, info.payload
            )
        latency = answer.answered_at - started
        latency_ms = f"{latency * 1000:.0f} ms"
        if not answer.ok:
            self._log(
                f"👤 {self.first_name} pays {amount} → pre-checkout refused: "
                f"{answer.error_message!r} ({latency_ms})"
            )
            return PaymentResult(
                False,
                answer.error_message,
                latency,
                None,
                None,
                info.total_amount,
                info.currency,
                info.payload,
            )
        charge = await self._complete_payment(info, order_info, provider_payment_charge_id)
        self._log(
            f"👤 {self.first_name} pays {amount} → pre-checkout ok ({latency_ms})"
            f" → payment {charge.telegram_payment_charge_id}"
        )
        return charge.result(latency)

    async def pay_again(
        self, result: PaymentResult, provider_payment_charge_id: str | None = None
    ) -> PaymentResult:
        """Deliver a second ``successful_payment`` for the same invoice (a duplicate charge).

        No pre-checkout happens; the new payment has new charge ids.
        """
        if not result.ok or result.telegram_payment_charge_id is None:
            raise ValueError("pay_again() needs a successful PaymentResult")
        original = self._world.find_charge(result.telegram_payment_charge_id)
        if original is None:
            raise ValueError(f"unknown charge {result.telegram_payment_charge_id}")
        charge = await self._complete_payment(
            original.invoice, original.order_info, provider_payment_charge_id
        )
        amount = format_amount(charge.total_amount, charge.currency)
        self._log(
            f"👤 {self.first_name} pays {amount} again (duplicate) → payment "
            f"{charge.telegram_payment_charge_id}"
        )
        return charge.result(None)

    def _order_info(self, info: InvoiceInfo, email: str | None) -> dict[str, Any]:
        order: dict[str, Any] = {}
        if info.need_name:
            order["name"] = self.first_name
        if info.need_email:
            order["email"] = email or f"{self.username or f'user{self.id}'}@example.com"
        if info.need_phone_number:
            order["phone_number"] = f"+1555{self.id % 10_000_000:07d}"
        return order

    async def _complete_payment(
        self, info: InvoiceInfo, order_info: dict[str, Any], provider_charge_id: str | None
    ) -> Charge:
        charge = await self._world.take_payment(
            self.bot, self.profile, info, order_info, provider_charge_id
        )
        chat = self._world.payment_chat(self.profile, info)
        message = self._world.new_user_message(
            self.bot, self.profile, chat, {"successful_payment": charge.successful_payment_dict()}
        )
        self.started = True
        self.emit("message", message)
        return charge

    async def refunded_payment(self, charge: PaymentResult | str) -> dict[str, Any]:
        """Simulate a Stars refund made outside the bot (e.g. by Telegram support).

        Marks the charge refunded, records it in ``server.refund_events`` and
        sends the bot a ``refunded_payment`` service message.
        """
        charge_id = charge if isinstance(charge, str) else charge.telegram_payment_charge_id
        stored = self._world.find_charge(charge_id or "")
        if stored is None or stored.user_id != self.id:
            raise ValueError(f"{self.first_name} has no charge {charge_id!r}")
        if stored.currency != "XTR":
            raise ValueError("refunded_payment service messages exist only for Stars payments")
        self._world.refund_charge(stored, source="telegram")
        message = self._world.new_user_message(
            self.bot,
            self.profile,
            self.profile.private_chat(),
            {"refunded_payment": stored.refund_dict()},
        )
        self.emit("message", message)
        return message

    # -- blocking ---------------------------------------------------------------------------

    def block(self) -> None:
        """Block the bot: its sends to this user now fail with 403."""
        if self.blocked:
            return
        self.blocked = True
        self._log(f"👤 {self.first_name} blocked the bot")
        self.emit("my_chat_member", self._membership_change("member", "kicked"))

    def unblock(self) -> None:
        """Unblock the bot."""
        if not self.blocked:
            return
        self.blocked = False
        self._log(f"👤 {self.first_name} unblocked the bot")
        self.emit("my_chat_member", self._membership_change("kicked", "member"))

    def _membership_change(self, old: str, new: str) -> dict[str, Any]:
        def member(status: str) -> dict[str, Any]:
            data: dict[str, Any] = {"status": status, "user": self.bot.user_dict()}
            if status == "kicked":
                data["until_date"] = 0
            return data

        return {
            "chat": self.profile.private_chat(),
            "from": self.profile.user_dict(),
            "date": int(time.time()),
            "old_chat_member": member(old),
            "new_chat_member": member(new),
        }

    # -- groups -----------------------------------------------------------------------------

    async def join_via(self, invite_link: str) -> Literal["pending", "joined", "member"]:
        """Open an invite link.

        Returns ``"pending"`` after sending a ``chat_join_request`` (links that
        create join requests), ``"joined"`` when the link admits directly, or
        ``"member"`` if already in the chat. Raises ``ValueError`` for revoked,
        expired, exhausted or unknown links and for banned users.
        """
        return self._world.open_invite_link(self.profile, invite_link)

    # -- helpers ----------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        self._world.log(text, self.id)
