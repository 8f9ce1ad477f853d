"""``python -m bot demo``: the whole product on this machine, no Telegram and no token.

It starts the sandbox Bot API server, the real bot against it (a temporary SQLite database,
migrations, scheduler and outbox included) and two scripted people: an organizer who creates an
organization and a webinar, and a participant who opens the share link, pays with Stars and gets
access. The conversation is printed as a transcript.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.application import BotApplication
from bot.clock import SystemClock
from bot.sandbox import BotMessage, SandboxServer, SimUser
from bot.settings import Settings

DEMO_TOKEN = "100000001:sandbox-demo-token"
ORGANIZER_ID = 7001
PARTICIPANT_ID = 7002
SHARE_LINK = re.compile(r"https://t\.me/\S+\?start=(w_[A-Za-z0-9_-]+)")


class DemoError(RuntimeError):
    """The scripted conversation did not go as expected."""


async def expect(user: SimUser, predicate: Callable[[BotMessage], bool], what: str) -> BotMessage:
    """Read the user's next messages until one matches."""
    while True:
        try:
            message = await user.next_message(timeout=10.0)
        except AssertionError as error:
            raise DemoError(f"waited for {what}, but nothing came") from error
        if predicate(message):
            return message


def has_text(fragment: str) -> Callable[[BotMessage], bool]:
    return lambda message: fragment in (message.text or message.caption or "")


def has_button(fragment: str) -> Callable[[BotMessage], bool]:
    return lambda message: any(fragment in text for text in message.button_texts)


def button(message: BotMessage, fragment: str) -> str:
    for text in message.button_texts:
        if fragment in text:
            return text
    raise DemoError(f"no button with {fragment!r} in {message.button_texts}")


async def organizer_script(maria: SimUser, starts: str) -> str:
    """Create an organization that speaks Spanish and a webinar; return the share payload."""
    await maria.start()
    await expect(maria, has_text("Hello"), "the greeting")
    await maria.command("/neworg")
    await expect(maria, has_text("Step 1"), "the organization's name question")
    await maria.send("Academia Demo")
    await expect(maria, has_text("Step 2"), "the e-mail question")
    await maria.send("hola@academia.example")
    language = await expect(maria, has_button("Español"), "the language buttons")
    await maria.press(language, text=button(language, "Español"))
    currency = await expect(maria, has_button("EUR"), "the currency buttons")
    await maria.press(currency, text=button(currency, "EUR"))
    zones = await expect(maria, has_button("Europe/Madrid"), "the time zone question")
    await maria.press(zones, text="Europe/Madrid")
    await expect(maria, has_text("Academia Demo"), "the organization card")

    await maria.command("/newwebinar")
    await expect(maria, has_text("Step 1"), "the title question")
    await maria.send("Precios que venden")
    await expect(maria, has_text("Step 2"), "the description question")
    await maria.send("Cómo fijar precios para un producto digital, con ejemplos reales.")
    await expect(maria, has_text("Step 3"), "the date question")
    await maria.send(starts)
    await expect(maria, has_text("Step 4"), "the duration question")
    await maria.send("1:30")
    await expect(maria, has_text("Step 5"), "the card price question")
    await maria.send("19,99")
    await expect(maria, has_text("Step 6"), "the Stars price question")
    await maria.send("150")
    await expect(maria, has_text("Step 7"), "the seats question")
    await maria.send("50")
    mode = await expect(maria, has_button("password"), "the access modes")
    await maria.press(mode, text=button(mode, "password"))
    await expect(maria, has_text("https://"), "the room link question")
    await maria.send("https://meet.example.org/room/precios")
    await expect(maria, has_text("password"), "the room password question")
    await maria.send("vende2026")
    reminders = await expect(maria, has_button("Usual"), "the reminder choices")
    await maria.press(reminders, text=button(reminders, "Usual"))
    card = await expect(maria, has_button("Publish"), "the webinar card")
    await maria.press(card, text=button(card, "Publish"))
    shared = await expect(maria, has_text("?start=w_"), "the share link")
    match = SHARE_LINK.search(shared.text or "")
    if match is None:
        raise DemoError("the share link message has no link")
    return match.group(1)


async def participant_script(luca: SimUser, payload: str) -> None:
    """Open the share link, pay with Stars, get access; then look at /my."""
    await luca.start(payload)
    card = await expect(luca, has_button("⭐"), "the webinar card")
    await luca.press(card, text=button(card, "⭐"))
    invoice = await expect(luca, lambda message: message.invoice is not None, "the invoice")
    result = await luca.pay(invoice)
    if not result.ok:
        raise DemoError(f"the payment failed: {result.error_message}")
    # The access message: the calendar file, with the access as its caption.
    await expect(luca, lambda message: message.document is not None, "the access message")
    await luca.command("/my")
    await expect(luca, has_text("Precios que venden"), "the list of tickets")


async def run_demo(*, quiet: bool = False) -> int:
    say = (lambda *_: None) if quiet else (lambda text: print(text, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="webinarpass-demo-") as directory:
        async with SandboxServer() as server:
            server.add_bot(DEMO_TOKEN, username="webinarpass_demo_bot", first_name="WebinarPass")
            settings = Settings(
                _env_file=None,
                bot_token=DEMO_TOKEN,
                telegram_api_url=server.url,
                database_url=f"sqlite+aiosqlite:///{Path(directory) / 'demo.db'}",
                bot_owner_ids=frozenset({ORGANIZER_ID}),
            )
            say(f"sandbox Bot API server at {server.url}; database in {directory}")
            application = BotApplication(settings)
            await application.setup()
            await application.start_polling()
            maria = server.user(
                ORGANIZER_ID, first_name="María", username="maria", language_code="en"
            )
            luca = server.user(
                PARTICIPANT_ID, first_name="Luca", username="luca", language_code="it"
            )
            starts = (SystemClock().now() + timedelta(days=10)).astimezone(
                ZoneInfo("Europe/Madrid")
            )
            try:
                payload = await organizer_script(maria, starts.strftime("%Y-%m-%d 18:30"))
                await participant_script(luca, payload)
            except DemoError as error:
                print(server.transcript())
                print(f"\ndemo stopped: {error}", file=sys.stderr)
                return 1
            finally:
                await application.stop()
            print(server.transcript())
    say("\nThe organization speaks Spanish: Luca's client is Italian, yet every message about the")
    say("webinar reached him in Spanish. Run `make run` with a BOT_TOKEN to do this in Telegram.")
    return 0
