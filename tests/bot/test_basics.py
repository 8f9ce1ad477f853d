"""The commands everyone has, end to end: the real Dispatcher against the sandbox Bot API."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.sandbox import SandboxServer
from storage.models import User
from tests.conftest import OWNER_ID
from tests.factories import make_org


async def test_start_greets_in_the_client_language(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    ana = sandbox.user(3001, first_name="Ana", language_code="pt-br")
    await ana.start()
    reply = await ana.next_message()
    assert "Olá, Ana!" in reply.text


async def test_unsupported_client_language_falls_back_to_english(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    hans = sandbox.user(3002, first_name="Hans", language_code="de")
    await hans.start()
    assert "Hello, Hans!" in (await hans.next_message()).text


async def test_language_choice_is_stored_and_used(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    lena = sandbox.user(3003, first_name="Lena", language_code="en")
    await lena.command("/language")
    menu = await lena.next_message()
    assert "Русский" in menu.button_texts
    await lena.press(menu, text="Русский")
    confirmation = await lena.next_message()
    assert confirmation.text == "Готово: буду говорить с вами по-русски."
    await lena.command("/help")
    assert "Организаторам" in (await lena.next_message()).text
    async with session_factory() as session:
        stored = await session.scalar(select(User).where(User.id == 3003))
    assert stored is not None
    assert stored.locale == "ru"


async def test_unknown_command_is_answered(sandbox: SandboxServer, bot_app: BotApplication) -> None:
    kim = sandbox.user(3004, first_name="Kim", language_code="es")
    await kim.command("/frobnicate")
    assert "No conozco este comando" in (await kim.next_message()).text


async def test_a_stale_or_forged_button_is_answered(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    kim = sandbox.user(3008, first_name="Kim", language_code="es")
    answer = await kim.forge_callback("obsolete:42")
    assert answer is not None
    assert answer.text == "Este botón ya no está activo."


async def test_cancel_without_a_wizard_says_so(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    it = sandbox.user(3005, first_name="Gio", language_code="it")
    await it.command("/cancel")
    assert (await it.next_message()).text == "Non c'è nulla da annullare."


async def test_command_menu_is_registered_in_every_language(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    calls = sandbox.calls_of("setMyCommands")
    languages = {call.params.get("language_code") for call in calls}
    assert {None, "en", "ru", "it", "pt", "es"} <= languages


async def test_blocking_and_unblocking_the_bot_is_recorded(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    eve = sandbox.user(3006, first_name="Eve", language_code="en")
    await eve.start()
    await eve.next_message()

    async def blocked_at() -> object:
        async with session_factory() as session:
            return await session.scalar(select(User.blocked_at).where(User.id == 3006))

    async def settles(blocked: bool) -> bool:
        for _ in range(200):
            if (await blocked_at() is not None) == blocked:
                return True
            await asyncio.sleep(0.02)
        return False

    eve.block()
    assert await settles(blocked=True), "the block is recorded"
    eve.unblock()
    assert await settles(blocked=False), "the unblock is recorded"


async def test_an_unexpected_failure_is_apologised_for_in_the_users_language(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    broken = Router(name="broken")

    @broken.message(Command("explode"))
    async def explode(message: Message) -> None:
        raise RuntimeError("a bug")

    bot_app.dispatcher.sub_routers.insert(0, broken)
    broken._parent_router = bot_app.dispatcher
    ivan = sandbox.user(3007, first_name="Ivan", language_code="ru")
    await ivan.command("/explode")
    reply = await ivan.next_message()
    assert reply.text == "Извините, у меня что-то пошло не так. Попробуйте ещё раз через минуту."


async def test_an_organizers_menu_follows_a_new_language(
    sandbox: SandboxServer,
    bot_app: BotApplication,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        await make_org(session, OWNER_ID)
        await session.commit()
    olga = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    await olga.command("/language")
    menu = await olga.next_message()
    await olga.press(menu, text="Italiano")
    await olga.next_message()
    call = sandbox.calls_of("setMyCommands")[-1]
    assert call.params["scope"] == {"type": "chat", "chat_id": OWNER_ID}
    assert {"command": "newwebinar", "description": "Crea un webinar"} in call.params["commands"]
