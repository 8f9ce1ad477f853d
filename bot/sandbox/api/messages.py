"""Messages: sending, formatting (Telegram's HTML), replies, edits, deletions, chat actions."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bot.sandbox.api.callbacks import check_reply_markup
from bot.sandbox.api.chats import Target, resolve_target
from bot.sandbox.api.files import input_file
from bot.sandbox.core.errors import NOT_MODIFIED, ApiError, bad
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import BotMessage, SimBot, StoredFile, UserProfile

__all__ = [
    "chat_history",
    "current_message",
    "html_plain_text",
    "new_user_message",
    "reply_to",
    "send",
]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
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


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _entities_error(what: str) -> ApiError:
    return bad(f"can't parse entities: {what}")


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


def formatted_text(
    server: Host, params: Params, name: str, *, required: bool, limit: int
) -> str | None:
    """Validate a text/caption parameter against ``parse_mode``; return the raw text."""
    text = params.string(name)
    what = "message text" if name == "text" else "message caption"
    if not text:
        if required:
            raise bad(f"{what} is empty")
        return None
    plain = text
    parse_mode = params.string("parse_mode")
    if parse_mode:
        mode = parse_mode.lower()
        if mode == "html":
            plain = html_plain_text(text)
        elif mode not in ("markdown", "markdownv2"):
            raise bad(f"unsupported parse_mode {parse_mode!r}")
    if not plain.strip():
        raise bad(f"{what} is empty")
    if len(plain) > limit // 2 and _utf16_length(plain) > limit:
        raise bad("message is too long" if name == "text" else "message caption is too long")
    return text


def reply_to(server: Host, bot: SimBot, target: Target, params: Params) -> dict[str, Any]:
    reply_parameters = params.structured("reply_parameters")
    message_id = params.integer("reply_to_message_id")
    allow_missing = params.flag("allow_sending_without_reply")
    if isinstance(reply_parameters, dict):
        message_id = reply_parameters.get("message_id", message_id)
        allow_missing = allow_missing or bool(reply_parameters.get("allow_sending_without_reply"))
    if not message_id:
        return {}
    key = (target.chat_id, int(message_id))
    stored = bot.messages.get(key)
    original = stored.data if stored and not stored.deleted else bot.user_messages.get(key)
    if original is None:
        if allow_missing:
            return {}
        raise bad("message to be replied not found")
    return {"reply_to_message": {k: v for k, v in original.items() if k != "reply_to_message"}}


def send(
    server: Host,
    bot: SimBot,
    target: Target,
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
    server.state.transcript.add(f"🤖 → {target.label}: {message.summary}", target.chat_id)
    if target.user is not None:
        target.user.deliver(message)
    return data


def editable_message(server: Host, bot: SimBot, target: Target, params: Params) -> BotMessage:
    if params.has("inline_message_id"):
        raise bad("MESSAGE_ID_INVALID")
    message_id = params.integer("message_id", required=True)
    assert message_id is not None
    key = (target.chat_id, message_id)
    message = bot.messages.get(key)
    if message is None or message.deleted:
        if key in bot.user_messages:
            raise bad("message can't be edited")
        raise bad("message to edit not found")
    return message


def replace_message(
    server: Host, bot: SimBot, target: Target, message: BotMessage
) -> dict[str, Any]:
    bot.messages[(target.chat_id, message.message_id)] = message
    server.state.transcript.add(f"🤖 ✎ {target.label}: {message.summary}", target.chat_id)
    if target.user is not None:
        target.user.deliver(message)
    return message.data


def chat_history(server: Host, bot: SimBot, chat_id: int) -> list[BotMessage]:
    history = []
    for message_id in bot.history.get(chat_id, ()):
        message = bot.messages[(chat_id, message_id)]
        if not message.deleted:
            history.append(message)
    return history


def current_message(server: Host, bot: SimBot, chat_id: int, message_id: int) -> BotMessage | None:
    message = bot.messages.get((chat_id, message_id))
    return None if message is None or message.deleted else message


def new_user_message(
    server: Host,
    bot: SimBot,
    user: UserProfile,
    chat: dict[str, Any],
    content: dict[str, Any],
) -> dict[str, Any]:
    message_id = bot.next_message_id(chat["id"])
    data: dict[str, Any] = {
        "message_id": message_id,
        "from": user.user_dict(),
        "chat": chat,
        "date": int(time.time()),
        **content,
    }
    bot.user_messages[(chat["id"], message_id)] = data
    return data


@api("sendMessage", rate_limited=True)
async def send_message(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=True)
    text = formatted_text(server, params, "text", required=True, limit=MAX_TEXT_LENGTH)
    markup = check_reply_markup(params.structured("reply_markup"))
    content: dict[str, Any] = {**reply_to(server, bot, target, params), "text": text}
    return send(server, bot, target, content, markup)


@api("sendDocument", rate_limited=True)
async def send_document(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    return await send_file(server, bot, params, "document", StoredFile.document_dict)


@api("sendVideo", rate_limited=True)
async def send_video(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    return await send_file(server, bot, params, "video", StoredFile.video_dict)


@api("sendPhoto", rate_limited=True)
async def send_photo(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    return await send_file(server, bot, params, "photo", StoredFile.photo_sizes)


async def send_file(
    server: Host,
    bot: SimBot,
    params: Params,
    field: str,
    describe: Callable[[StoredFile], Any],
) -> dict[str, Any]:
    """sendDocument, sendVideo and sendPhoto: an uploaded (or known) file with an optional
    caption."""
    target = resolve_target(server, bot, params, send=True)
    caption = formatted_text(server, params, "caption", required=False, limit=MAX_CAPTION_LENGTH)
    markup = check_reply_markup(params.structured("reply_markup"))
    stored = await input_file(server, params, field)
    content: dict[str, Any] = {**reply_to(server, bot, target, params), field: describe(stored)}
    if caption:
        content["caption"] = caption
    return send(server, bot, target, content, markup, stored)


@api("editMessageText", rate_limited=True)
async def edit_message_text(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=True)
    message = editable_message(server, bot, target, params)
    text = formatted_text(server, params, "text", required=True, limit=MAX_TEXT_LENGTH)
    markup = check_reply_markup(params.structured("reply_markup"), inline_only=True)
    if message.text is None:
        raise bad("there is no text in the message to edit")
    return apply_edit(server, bot, target, message, {"text": text}, markup)


@api("editMessageCaption", rate_limited=True)
async def edit_message_caption(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=True)
    message = editable_message(server, bot, target, params)
    caption = formatted_text(server, params, "caption", required=False, limit=MAX_CAPTION_LENGTH)
    markup = check_reply_markup(params.structured("reply_markup"), inline_only=True)
    if message.file is None:
        raise bad("there is no caption in the message to edit")
    return apply_edit(server, bot, target, message, {"caption": caption}, markup)


@api("editMessageReplyMarkup", rate_limited=True)
async def edit_message_reply_markup(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=True)
    message = editable_message(server, bot, target, params)
    markup = check_reply_markup(params.structured("reply_markup"), inline_only=True)
    return apply_edit(server, bot, target, message, {}, markup)


def apply_edit(
    server: Host,
    bot: SimBot,
    target: Target,
    message: BotMessage,
    changes: dict[str, Any],
    markup: dict[str, Any] | None,
) -> dict[str, Any]:
    # Like Telegram, an edit without reply_markup removes the inline keyboard.
    old_markup = message.markup if message.inline_keyboard else None
    unchanged = all(message.data.get(key) == value for key, value in changes.items())
    if unchanged and old_markup == markup:
        raise bad(NOT_MODIFIED)
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
    return replace_message(server, bot, target, edited)


@api("deleteMessage")
async def delete_message(server: Host, bot: SimBot, params: Params) -> bool:
    target = resolve_target(server, bot, params, send=False)
    message_id = params.integer("message_id", required=True)
    assert message_id is not None
    key = (target.chat_id, message_id)
    message = bot.messages.get(key)
    if message is not None and not message.deleted:
        bot.messages[key] = replace(message, deleted=True)
        server.state.transcript.add(
            f"🤖 🗑 {target.label}: deleted #{message_id} ({message.summary[:40]})",
            target.chat_id,
        )
        return True
    if bot.user_messages.pop(key, None) is not None:
        return True
    raise bad("message to delete not found")


@api("sendChatAction")
async def send_chat_action(server: Host, bot: SimBot, params: Params) -> bool:
    resolve_target(server, bot, params, send=True)
    if params.string("action", required=True) not in CHAT_ACTIONS:
        raise bad("wrong parameter action in request")
    return True
