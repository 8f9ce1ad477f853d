"""The buyer behind a webinar's deep link and a paid buy button is stored by the use case itself,
in the transaction of its own it runs anyway, not by the user middleware in the session's
(``bot.services.users.Touch``). What that must not change for the buyer, end to end through the
real bot and the sandbox, and which updates it covers."""

from __future__ import annotations

from typing import Any

from aiogram.types import Update
from sqlalchemy import inspect, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.application import BotApplication
from bot.context import AppContext
from bot.i18n import Translator
from bot.sandbox import SandboxServer
from bot.services import Services
from bot.services.users import Touch
from handlers.participant import BuyCallback, BuyRecording, stores_its_user
from storage.models import User
from tests.bot.test_user_cost import traced

NOT_FOUND = "I could not find this webinar. Please check the link with the organizer."
GONE = "This webinar no longer exists."


def a_message(text: str, chat_type: str = "private") -> Update:
    sender: dict[str, Any] = {"id": 7, "is_bot": False, "first_name": "Ada"}
    chat = {"id": 7 if chat_type == "private" else -100, "type": chat_type}
    message = {"message_id": 1, "date": 0, "chat": chat, "from": sender, "text": text}
    return Update.model_validate({"update_id": 1, "message": message})


def a_button(data: str) -> Update:
    sender = {"id": 7, "is_bot": False, "first_name": "Ada"}
    query = {"id": "q", "from": sender, "chat_instance": "c", "data": data}
    return Update.model_validate({"update_id": 1, "callback_query": query})


def test_the_deep_link_and_the_paid_buy_buttons_store_their_user_themselves() -> None:
    assert stores_its_user(a_message("/start w_rush"))
    assert stores_its_user(a_button(BuyCallback(webinar_id=3, method="stars").pack()))
    assert stores_its_user(a_button(BuyCallback(webinar_id=3, method="yookassa").pack()))
    # Everything else is stored by the middleware, as before.
    assert not stores_its_user(a_message("/start"))
    assert not stores_its_user(a_message("/start i_invite"))
    assert not stores_its_user(a_message("/start w_rush", chat_type="group"))
    assert not stores_its_user(a_message("/my"))
    assert not stores_its_user(a_button(BuyCallback(webinar_id=3, method="free").pack()))
    assert not stores_its_user(a_button(BuyRecording(webinar_id=3, method="stars").pack()))
    assert not stores_its_user(a_button("lang:ru"))


async def test_a_use_case_stores_the_user_in_its_own_transaction_and_learns_their_locale(
    app_context: AppContext,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    touch = Touch(8200, "Ada", "L", "ada", "en", reachable=True, locale="en")
    async with session_factory() as session:
        users = Services(session, app_context).users
        with traced(engine) as trace:
            async with app_context.transaction() as transaction:
                user = await users.store(transaction, touch)
        assert not session.in_transaction()  # the session was never begun
    assert trace.on_users() == ["SELECT", "INSERT"], trace.statements
    assert trace.ends == ["commit"]  # the direct transaction's only: no session's begin
    assert touch.user is user
    assert inspect(user).transient  # read-only: not an object of any session
    assert (user.first_name, user.username, user.language_code) == ("Ada", "ada", "en")

    # The user chose Italian meanwhile (another update, another replica): the next touch finds it.
    async with session_factory() as session:
        await session.execute(update(User).where(User.id == 8200).values(locale="it"))
        await session.commit()
    again = Touch(8200, "Ada", "L", "ada_l", "en", reachable=True, locale="en")
    async with app_context.transaction() as transaction:
        await users.store(transaction, again)
    assert again.locale == "it"
    async with session_factory() as session:
        stored = await session.get(User, 8200)
    assert stored is not None
    assert stored.username == "ada_l"  # the changed profile is written


async def test_a_wrong_deep_link_and_a_vanished_webinar_are_answered_in_the_buyers_language(
    sandbox: SandboxServer, bot_app: BotApplication, translator: Translator
) -> None:
    """The middleware's guess of the locale is this process's last finding, from before the
    user chose Russian: what the buyer is told follows the row the use case has just stored."""
    lena = sandbox.user(3103, first_name="Lena", language_code="en")
    await lena.command("/language")
    await lena.press(await lena.next_message(), text="Русский")
    await lena.next_message()

    await lena.start("w_nosuchcode")
    assert (await lena.next_message()).text == translator.translate(NOT_FOUND, "ru")
    answer = await lena.forge_callback(BuyCallback(webinar_id=999_999, method="stars").pack())
    assert answer is not None
    assert answer.text == translator.translate(GONE, "ru")
