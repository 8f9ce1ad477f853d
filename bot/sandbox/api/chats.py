"""Chats and invite links: targets of every send, groups, members, admins and join requests."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from bot.sandbox.api.updates import push_update
from bot.sandbox.core.errors import bad, forbidden
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import (
    Chatter,
    InviteLink,
    JoinRequest,
    SimBot,
    SimChat,
    UserProfile,
)

__all__ = [
    "Target",
    "admit",
    "join_window_open",
    "label_of",
    "member_dict",
    "open_invite_link",
    "resolve_group",
    "resolve_target",
]

JOIN_REQUEST_CHAT_WINDOW_S = 300  # a join request lets the bot message the user for 5 minutes


@dataclass(frozen=True, slots=True)
class Target:
    """The chat a call addresses: a user's private chat or a group."""

    chat_id: int
    chat: dict[str, Any]
    label: str
    user: Chatter | None = None
    group: SimChat | None = None


def label_of(server: Host, bot: SimBot, chat_id: int) -> str:
    user = server.state.users.get((bot.token, chat_id))
    if user is not None:
        return user.first_name
    chat = server.state.chats.get(chat_id)
    return chat.title if chat is not None else str(chat_id)


def resolve_target(server: Host, bot: SimBot, params: Params, *, send: bool) -> Target:
    """Resolve ``chat_id``; ``send`` applies the checks for writing to the chat."""
    chat_id = params.chat_id()
    if isinstance(chat_id, str):
        found = next(
            (chat for chat in server.state.chats.values() if f"@{chat.username}" == chat_id), None
        )
        if found is None:
            raise bad("chat not found")
        chat_id = found.id
    if chat_id > 0:
        user = server.state.users.get((bot.token, chat_id))
        if user is None:
            raise bad("chat not found")
        if send:
            if user.blocked:
                raise forbidden("bot was blocked by the user")
            if not user.started and not join_window_open(server, user.id):
                raise forbidden("bot can't initiate conversation with a user")
        elif not (user.started or user.blocked or join_window_open(server, user.id)):
            raise bad("chat not found")
        return Target(chat_id, user.profile.private_chat(), user.first_name, user=user)
    group = server.state.chats.get(chat_id)
    if group is None or not group.bot_is_member:
        raise bad("chat not found")
    if send and group.type == "channel" and not group.bot_is_admin:
        raise bad("need administrator rights in the channel chat")
    return Target(chat_id, group.chat_dict(), group.title, group=group)


def resolve_group(server: Host, bot: SimBot, params: Params) -> SimChat:
    target = resolve_target(server, bot, params, send=False)
    if target.group is None:
        raise bad("method is available only for supergroups and channel")
    return target.group


def join_window_open(server: Host, user_id: int) -> bool:
    horizon = time.time() - JOIN_REQUEST_CHAT_WINDOW_S
    return any(
        (request := chat.join_requests.get(user_id)) is not None and request.date >= horizon
        for chat in server.state.chats.values()
    )


def open_invite_link(
    server: Host, user: UserProfile, link: str
) -> Literal["pending", "joined", "member"]:
    found = server.state.invite_links.get(link)
    if found is None:
        raise ValueError("INVITE_HASH_INVALID")
    chat = server.state.chats[found.chat_id]
    if found.is_revoked or (found.expire_date is not None and found.expire_date <= time.time()):
        raise ValueError("INVITE_HASH_EXPIRED")
    if user.id in chat.banned:
        raise ValueError("USER_BANNED_IN_CHANNEL")
    if user.id in chat.members:
        return "member"
    bot = server.state.bots[found.bot_token]
    # The link's creator is the bot that hears about the request.
    requester = server.user(user.id, bot=bot)
    if found.creates_join_request:
        now = int(time.time())
        chat.join_requests[user.id] = JoinRequest(user.id, found, now)
        server.state.transcript.add(f"👤 {user.first_name} asks to join «{chat.title}»", user.id)
        requester.emit(
            "chat_join_request",
            {
                "chat": chat.chat_dict(),
                "from": user.user_dict(),
                "user_chat_id": user.id,
                "date": now,
                "invite_link": found.to_dict(),
            },
        )
        return "pending"
    if found.member_limit is not None and found.joined >= found.member_limit:
        raise ValueError("USERS_TOO_MUCH")
    admit(server, bot, chat, user.id, found)
    server.state.transcript.add(f"👤 {user.first_name} joined «{chat.title}»", user.id)
    return "joined"


def admit(server: Host, bot: SimBot, chat: SimChat, user_id: int, link: InviteLink | None) -> None:
    chat.members.add(user_id)
    if link is not None:
        link.joined += 1
    profile = server.state.profiles.get(user_id)
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
    push_update(server, bot, "chat_member", payload)


def member_dict(server: Host, bot: SimBot, chat: SimChat, user_id: int) -> dict[str, Any]:
    if user_id == bot.id:
        if chat.bot_is_admin:
            return {**_bot_admin_rights(bot.user_dict()), **chat.bot_rights}
        status = "member" if chat.bot_is_member else "left"
        return {"status": status, "user": bot.user_dict()}
    profile = server.state.profiles.get(user_id)
    if profile is None:
        raise bad("user not found")
    user = profile.user_dict()
    if user_id in chat.banned:
        return {"status": "kicked", "user": user, "until_date": 0}
    if user_id in chat.admins:
        return _bot_admin_rights(user)
    if user_id in chat.members:
        return {"status": "member", "user": user}
    return {"status": "left", "user": user}


@api("getChat")
async def get_chat(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=False)
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


@api("getChatMember")
async def get_chat_member(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    target = resolve_target(server, bot, params, send=False)
    user_id = params.integer("user_id", required=True)
    assert user_id is not None
    if target.group is not None:
        return member_dict(server, bot, target.group, user_id)
    if user_id == bot.id:
        return {"status": "member", "user": bot.user_dict()}
    if user_id != target.chat_id:
        raise bad("user not found")
    assert target.user is not None
    return {"status": "member", "user": target.user.profile.user_dict()}


@api("createChatInviteLink")
async def create_chat_invite_link(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    chat = resolve_group(server, bot, params)
    if not chat.bot_is_admin or not chat.bot_rights.get("can_invite_users", True):
        raise bad("not enough rights to manage chat invite links")
    name = params.string("name")
    if name and len(name) > 32:
        raise bad("name is too long")
    member_limit = params.integer("member_limit")
    creates_join_request = params.flag("creates_join_request")
    if member_limit is not None:
        if creates_join_request:
            raise bad("member limit can't be specified for links requiring administrator approval")
        if not 1 <= member_limit <= 99999:
            raise bad("USAGE_LIMIT_INVALID")
    expire_date = params.integer("expire_date")
    if expire_date is not None and expire_date <= time.time():
        raise bad("EXPIRE_DATE_INVALID")
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
    server.state.invite_links[link.invite_link] = link
    return link.to_dict()


@api("revokeChatInviteLink")
async def revoke_chat_invite_link(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    chat = resolve_group(server, bot, params)
    if not chat.bot_is_admin:
        raise bad("not enough rights to manage chat invite links")
    link = server.state.invite_links.get(params.string("invite_link", required=True) or "")
    if link is None or link.chat_id != chat.id:
        raise bad("INVITE_HASH_EXPIRED")
    link.is_revoked = True
    return link.to_dict()


@api("approveChatJoinRequest")
async def approve_chat_join_request(server: Host, bot: SimBot, params: Params) -> bool:
    chat, user_id = join_request_target(server, bot, params)
    request = chat.join_requests.pop(user_id, None)
    if request is None:
        raise bad("HIDE_REQUESTER_MISSING")
    if user_id in chat.members:
        raise bad("USER_ALREADY_PARTICIPANT")
    admit(server, bot, chat, user_id, request.invite_link)
    server.state.transcript.add(
        f"🤖 ✓ admits {label_of(server, bot, user_id)} to «{chat.title}»", user_id
    )
    return True


@api("declineChatJoinRequest")
async def decline_chat_join_request(server: Host, bot: SimBot, params: Params) -> bool:
    chat, user_id = join_request_target(server, bot, params)
    if chat.join_requests.pop(user_id, None) is None:
        raise bad("HIDE_REQUESTER_MISSING")
    server.state.transcript.add(
        f"🤖 ✗ declines {label_of(server, bot, user_id)} for «{chat.title}»", user_id
    )
    return True


def join_request_target(server: Host, bot: SimBot, params: Params) -> tuple[SimChat, int]:
    chat = resolve_group(server, bot, params)
    if not chat.bot_is_admin:
        raise bad("not enough rights")
    user_id = params.integer("user_id", required=True)
    assert user_id is not None
    return chat, user_id


@api("banChatMember")
async def ban_chat_member(server: Host, bot: SimBot, params: Params) -> bool:
    chat, user_id = join_request_target(server, bot, params)
    if not chat.bot_rights.get("can_restrict_members", True):
        raise bad("not enough rights to restrict/unrestrict chat member")
    chat.members.discard(user_id)
    chat.banned.add(user_id)
    server.state.transcript.add(
        f"🤖 ⛔ bans {label_of(server, bot, user_id)} from «{chat.title}»", user_id
    )
    return True


@api("unbanChatMember")
async def unban_chat_member(server: Host, bot: SimBot, params: Params) -> bool:
    chat, user_id = join_request_target(server, bot, params)
    if not chat.bot_rights.get("can_restrict_members", True):
        raise bad("not enough rights to restrict/unrestrict chat member")
    if params.flag("only_if_banned") and user_id not in chat.banned:
        return True
    chat.banned.discard(user_id)
    chat.members.discard(user_id)  # unbanning a member removes them, as in Telegram
    return True


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
