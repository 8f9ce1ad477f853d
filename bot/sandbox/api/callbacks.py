"""Callback queries and keyboards: inline and reply markup checks, queries awaiting answers."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from bot.sandbox.core.errors import QUERY_TOO_OLD, bad
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import CallbackAnswer, PendingQuery, SimBot, UserProfile

__all__ = ["check_reply_markup", "close_query", "open_query", "take_query"]

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
_BUTTON_URL_RE = re.compile(r"^(?:https?|tg)://\S+$")


def check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise bad('can\'t parse inline keyboard button: Field "text" must be of type String')
    if not _BUTTON_ACTIONS.intersection(button):
        raise bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
            raise bad("BUTTON_DATA_INVALID")
    if "url" in button and not (
        isinstance(button["url"], str) and _BUTTON_URL_RE.match(button["url"])
    ):
        raise bad("BUTTON_URL_INVALID")


def check_reply_markup(value: Any, *, inline_only: bool = False) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in value:
        rows = value["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad(
                'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
            )
        for row in rows:
            for button in row:
                check_inline_button(button)
        return value
    if inline_only:
        raise bad("inline keyboard expected")
    if "keyboard" in value:
        rows = value["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad('field "keyboard" of the ReplyKeyboardMarkup should be an Array of Arrays')
        for row in rows:
            for button in row:
                text = button.get("text") if isinstance(button, dict) else button
                if not isinstance(text, str) or not text:
                    raise bad('can\'t parse keyboard button: Field "text" must be of type String')
        return value
    if value.get("remove_keyboard") or value.get("force_reply"):
        return value
    raise bad("can't parse reply keyboard markup JSON object")


def open_query(
    server: Host, bot: SimBot, user: UserProfile, *, pre_checkout: bool = False
) -> PendingQuery:
    query_id = str(secrets.randbits(63))
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    query = PendingQuery(query_id, bot.token, user.id, user.first_name, future, pre_checkout)
    server.state.queries[query_id] = query
    return query


def close_query(server: Host, query_id: str) -> None:
    server.state.queries.pop(query_id, None)


def take_query(
    server: Host, bot: SimBot, query_id: str | None, *, pre_checkout: bool
) -> PendingQuery:
    query = server.state.queries.get(query_id or "")
    if (
        query is None
        or query.bot_token != bot.token
        or query.pre_checkout != pre_checkout
        or query.future.done()
    ):
        raise bad(QUERY_TOO_OLD)
    del server.state.queries[query.id]
    return query


@api("answerCallbackQuery")
async def answer_callback_query(server: Host, bot: SimBot, params: Params) -> bool:
    query_id = params.string("callback_query_id", required=True)
    text = params.string("text")
    if text and len(text) > 200:
        raise bad("MESSAGE_TOO_LONG")
    query = take_query(server, bot, query_id, pre_checkout=False)
    answer = CallbackAnswer(
        text=text or None,
        show_alert=params.flag("show_alert"),
        url=params.string("url"),
        cache_time=params.integer("cache_time") or 0,
    )
    query.future.set_result(answer)
    if answer.text:
        kind = "⚠ alert " if answer.show_alert else ""
        server.state.transcript.add(f"🤖 ↩ {query.user_name}: {kind}“{answer.text}”", query.user_id)
    return True
