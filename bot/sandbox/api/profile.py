"""The bot's own profile: ``getMe``, commands, menu button, name and descriptions."""

from __future__ import annotations

import json
import re
from typing import Any

from bot.sandbox.core.errors import bad
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import SimBot

__all__ = ["scope_key"]

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
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")


@api("getMe")
async def get_me(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    return {
        **bot.user_dict(),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


@api("setMyCommands")
async def set_my_commands(server: Host, bot: SimBot, params: Params) -> bool:
    commands = params.structured("commands", required=True)
    if not isinstance(commands, list) or len(commands) > 100:
        raise bad("can't parse commands JSON object")
    cleaned = []
    for command in commands:
        if not isinstance(command, dict):
            raise bad("can't parse BotCommand JSON object")
        name = str(command.get("command", "")).removeprefix("/")
        description = str(command.get("description", ""))
        if not _COMMAND_NAME_RE.match(name):
            raise bad("BOT_COMMAND_INVALID")
        if not 1 <= len(description) <= 256:
            raise bad("BOT_COMMAND_DESCRIPTION_INVALID")
        cleaned.append({"command": name, "description": description})
    bot.commands[commands_key(server, params)] = cleaned
    return True


@api("getMyCommands")
async def get_my_commands(server: Host, bot: SimBot, params: Params) -> list[dict[str, str]]:
    return list(bot.commands.get(commands_key(server, params), []))


@api("deleteMyCommands")
async def delete_my_commands(server: Host, bot: SimBot, params: Params) -> bool:
    bot.commands.pop(commands_key(server, params), None)
    return True


def commands_key(server: Host, params: Params) -> tuple[str, str]:
    scope = params.structured("scope")
    if scope is not None and (
        not isinstance(scope, dict) or scope.get("type") not in COMMAND_SCOPES
    ):
        raise bad("can't parse BotCommandScope JSON object")
    language = params.string("language_code") or ""
    if language and not re.fullmatch(r"[a-z]{2}", language):
        raise bad("invalid language code specified")
    return scope_key(scope), language


@api("setChatMenuButton")
async def set_chat_menu_button(server: Host, bot: SimBot, params: Params) -> bool:
    chat_id = params.integer("chat_id")
    button = params.structured("menu_button") or {"type": "default"}
    if not isinstance(button, dict) or button.get("type") not in (
        "default",
        "commands",
        "web_app",
    ):
        raise bad("can't parse menu button JSON object")
    if button["type"] == "web_app" and not (
        button.get("text") and isinstance(button.get("web_app"), dict)
    ):
        raise bad("can't parse menu button JSON object")
    bot.menu_buttons[chat_id] = button
    return True


@api("getChatMenuButton")
async def get_chat_menu_button(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    chat_id = params.integer("chat_id")
    return bot.menu_buttons.get(chat_id) or bot.menu_buttons.get(None) or {"type": "default"}


async def set_text(server: Host, bot: SimBot, params: Params, kind: str, limit: int) -> bool:
    value = params.string(kind) or ""
    if len(value) > limit:
        raise bad(f"{kind} is too long")
    bot.texts[(kind, params.string("language_code") or "")] = value
    return True


def get_text(server: Host, bot: SimBot, params: Params, kind: str) -> dict[str, str]:
    language = params.string("language_code") or ""
    value = bot.texts.get((kind, language), bot.texts.get((kind, ""), ""))
    if kind == "name" and not value:
        value = bot.first_name
    return {kind: value}


@api("setMyDescription")
async def set_my_description(server: Host, bot: SimBot, params: Params) -> bool:
    return await set_text(server, bot, params, "description", 512)


@api("getMyDescription")
async def get_my_description(server: Host, bot: SimBot, params: Params) -> dict[str, str]:
    return get_text(server, bot, params, "description")


@api("setMyShortDescription")
async def set_my_short_description(server: Host, bot: SimBot, params: Params) -> bool:
    return await set_text(server, bot, params, "short_description", 120)


@api("getMyShortDescription")
async def get_my_short_description(server: Host, bot: SimBot, params: Params) -> dict[str, str]:
    return get_text(server, bot, params, "short_description")


@api("setMyName")
async def set_my_name(server: Host, bot: SimBot, params: Params) -> bool:
    return await set_text(server, bot, params, "name", 64)


@api("getMyName")
async def get_my_name(server: Host, bot: SimBot, params: Params) -> dict[str, str]:
    return get_text(server, bot, params, "name")


def scope_key(scope: dict[str, Any] | None) -> str:
    return json.dumps(scope or {"type": "default"}, sort_keys=True)
