"""/team: members and roles, one-time invite links, removing a co-organizer or leaving."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.commands import clear_organizer_commands
from bot.formatting import escape, local_datetime
from bot.i18n import _
from bot.services import Services
from bot.services.organizations import Membership, TeamMember
from handlers.admin.base import IsOrganizer, TeamAction, reply, show
from handlers.admin.org import role_name
from storage.enums import Role
from storage.models import User

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())


def member_line(member: TeamMember) -> str:
    username = f" (@{member.user.username})" if member.user.username else ""
    return f"{escape(member.user.full_name)}{escape(username)}: {role_name(member.role)}"


async def render(
    membership: Membership, services: Services, viewer: User
) -> tuple[str, InlineKeyboardMarkup]:
    team = await services.organizations.team(membership.org.id)
    lines = [f"{number}. {member_line(member)}" for number, member in enumerate(team, start=1)]
    text = _(
        "👥 Team of <b>{org}</b>\n\n{members}\n\n"
        "Owners and admins manage webinars, participants and settings; "
        "only the owner removes members.",
        org=escape(membership.org.name),
        members="\n".join(lines),
    )
    builder = InlineKeyboardBuilder()
    builder.button(text=_("➕ Invite a co-organizer"), callback_data=TeamAction(action="invite"))
    if membership.is_owner:
        for member in team:
            if member.role != Role.OWNER:
                builder.button(
                    text=_("Remove {name}", name=member.user.full_name),
                    callback_data=TeamAction(action="remove", user_id=member.user.id),
                )
    else:
        builder.button(text=_("🚪 Leave the team"), callback_data=TeamAction(action="leave"))
    builder.adjust(1)
    return text, builder.as_markup()


@router.message(Command("team"))
async def team(message: Message, membership: Membership, services: Services, user: User) -> None:
    """List the members, with the invite and remove buttons."""
    text, markup = await render(membership, services, user)
    await message.answer(text, reply_markup=markup)


@router.callback_query(TeamAction.filter(F.action == "show"))
async def back(
    query: CallbackQuery, membership: Membership, services: Services, user: User
) -> None:
    """The team list again, in place."""
    await query.answer()
    await show(query, *await render(membership, services, user))


@router.callback_query(TeamAction.filter(F.action == "invite"))
async def invite(
    query: CallbackQuery, membership: Membership, services: Services, user: User, locale: str
) -> None:
    """Make a one-time invite link."""
    created = await services.organizations.create_invite(membership, user.id)
    await query.answer()
    await reply(
        query,
        _(
            "Send this link to your co-organizer. It works once, until {expires}:\n\n{link}",
            expires=local_datetime(created.expires_at, membership.org.timezone, locale),
            link=services.organizations.invite_link(created),
        ),
    )


def confirm(yes: TeamAction) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=_("Yes"), callback_data=yes)
    builder.button(text=_("No"), callback_data=TeamAction(action="show"))
    return builder.as_markup()


@router.callback_query(TeamAction.filter(F.action == "remove"))
async def ask_remove(
    query: CallbackQuery, callback_data: TeamAction, membership: Membership, services: Services
) -> None:
    """Ask before removing a member."""
    members = {m.user.id: m for m in await services.organizations.team(membership.org.id)}
    member = members.get(callback_data.user_id)
    if member is None or not membership.is_owner:
        await query.answer(_("This is no longer available."), show_alert=True)
        return
    await query.answer()
    text = _("Remove {name} from the team?", name=escape(member.user.full_name))
    await show(query, text, confirm(TeamAction(action="remove_yes", user_id=member.user.id)))


@router.callback_query(TeamAction.filter(F.action == "remove_yes"))
async def remove(
    query: CallbackQuery,
    callback_data: TeamAction,
    membership: Membership,
    services: Services,
    user: User,
    bot: Bot,
) -> None:
    """Remove the member; they lose the organizer menu if this was their only organization."""
    removal = await services.organizations.remove_member(membership, callback_data.user_id)
    if not removal.still_organizer:
        await clear_organizer_commands(bot, removal.user.id)
    await query.answer(_("Removed."))
    await show(query, *await render(membership, services, user))


@router.callback_query(TeamAction.filter(F.action == "leave"))
async def ask_leave(query: CallbackQuery, membership: Membership) -> None:
    """Ask before leaving the team."""
    await query.answer()
    text = _("Leave the team of {org}?", org=escape(membership.org.name))
    await show(query, text, confirm(TeamAction(action="leave_yes")))


@router.callback_query(TeamAction.filter(F.action == "leave_yes"))
async def leave(
    query: CallbackQuery, membership: Membership, services: Services, user: User, bot: Bot
) -> None:
    """Leave the team."""
    removal = await services.organizations.leave(membership, user)
    if not removal.still_organizer:
        await clear_organizer_commands(bot, user.id)
    await query.answer()
    await show(query, _("You left the team of {org}.", org=escape(membership.org.name)), None)
