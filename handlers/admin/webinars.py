"""/webinars: the list with status, seats and revenue; each webinar's management card and its
actions (publish, unpublish, share link, cancel, re-send access)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.formatting import escape, local_datetime, money
from bot.i18n import _, _n, current_locale
from bot.services import Services
from bot.services.admin_input import format_duration, format_offset
from bot.services.organizations import Membership
from bot.services.webinars import DisplayStatus, WebinarSummary
from handlers.admin.base import IsOrganizer, WebinarAction, reply, show
from storage.enums import AccessMode, WebinarStatus

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

PAGE = 8


def status_name(status: DisplayStatus) -> str:
    return {
        DisplayStatus.DRAFT: _("📝 draft"),
        DisplayStatus.ON_SALE: _("🟢 on sale"),
        DisplayStatus.SOLD_OUT: _("🔴 sold out"),
        DisplayStatus.FINISHED: _("🏁 finished"),
        DisplayStatus.CANCELLED: _("❌ cancelled"),
    }[status]


def access_mode_name(mode: AccessMode) -> str:
    return {
        AccessMode.PASSWORD: _("🔑 Room link and password"),
        AccessMode.LINKS: _("🎟 A unique link per participant"),
        AccessMode.GROUP: _("👥 A private Telegram group or channel"),
        AccessMode.TEMPLATE: _("🧩 A personal link made from a template"),
    }[mode]


def revenue_text(summary: WebinarSummary, locale: str) -> str:
    if not summary.revenue:
        return "0"
    return " + ".join(
        money(amount, currency, locale) for currency, amount in sorted(summary.revenue.items())
    )


def seats_text(summary: WebinarSummary) -> str:
    capacity = summary.webinar.capacity
    return f"{summary.sold}/{capacity}" if capacity is not None else f"{summary.sold}/∞"


def price_text(summary: WebinarSummary, locale: str) -> str:
    webinar = summary.webinar
    if webinar.is_free:
        return _("free")
    prices = []
    if webinar.price_minor:
        prices.append(money(webinar.price_minor, webinar.currency, locale))
    if webinar.price_stars:
        prices.append(money(webinar.price_stars, "XTR", locale))
    return " · ".join(prices)


def access_text(summary: WebinarSummary) -> str:
    webinar = summary.webinar
    if webinar.access_mode == AccessMode.PASSWORD:
        return _(
            "{mode}\n  Link: {url}\n  Password: {password}",
            mode=access_mode_name(webinar.access_mode),
            url=escape(webinar.room_url) if webinar.room_url else _("not set"),
            password=escape(webinar.room_password) if webinar.room_password else _("none"),
        )
    if webinar.access_mode == AccessMode.LINKS:
        pool = summary.pool
        assert pool is not None
        return _(
            "{mode}\n  Links: {free} free, {assigned} given out, {revoked} revoked",
            mode=access_mode_name(webinar.access_mode),
            free=pool.free,
            assigned=pool.assigned,
            revoked=pool.revoked,
        )
    if webinar.access_mode == AccessMode.TEMPLATE:
        return _(
            "{mode}\n  Template: {template}",
            mode=access_mode_name(webinar.access_mode),
            template=escape(webinar.link_template) if webinar.link_template else _("not set"),
        )
    return _(
        "{mode}\n  Chat: {chat}",
        mode=access_mode_name(webinar.access_mode),
        chat=webinar.group_chat_id if webinar.group_chat_id is not None else _("not connected"),
    )


def card_text(summary: WebinarSummary, timezone: str, share_link: str, locale: str) -> str:
    webinar = summary.webinar
    reminders = ", ".join(format_offset(offset) for offset in webinar.reminder_offsets)
    held = _(" (+{held} paying now)", held=summary.held) if summary.held else ""
    if webinar.status == WebinarStatus.PUBLISHED:
        share = _("🔗 Share link: {link}", link=share_link)
    elif webinar.status == WebinarStatus.DRAFT:
        share = _("🔗 Share link (works once published): {link}", link=share_link)
    else:
        share = ""
    text = _(
        "<b>{title}</b>\n{status}\n\n"
        "🗓 {when}, {duration}\n"
        "💰 Price: {price}\n"
        "👥 Sold: {seats}{held}\n"
        "💵 Revenue: {revenue}\n"
        "⏰ Reminders: {reminders}\n"
        "Access: {access}",
        title=escape(webinar.title),
        status=status_name(summary.status),
        when=local_datetime(webinar.starts_at, timezone, locale),
        duration=format_duration(webinar.duration_minutes),
        price=price_text(summary, locale),
        seats=seats_text(summary),
        held=held,
        revenue=revenue_text(summary, locale),
        reminders=reminders or _("none"),
        access=access_text(summary),
    )
    if webinar.description:
        text += "\n\n" + escape(webinar.description[:500])
    return text + ("\n\n" + share if share else "")


def card_keyboard(summary: WebinarSummary) -> InlineKeyboardMarkup:
    webinar = summary.webinar
    builder = InlineKeyboardBuilder()
    sizes = []
    if webinar.status != WebinarStatus.CANCELLED:
        builder.button(text=_("✏️ Edit"), callback_data=WebinarAction(action="edit", id=webinar.id))
        if webinar.status == WebinarStatus.DRAFT:
            builder.button(
                text=_("🚀 Publish"), callback_data=WebinarAction(action="publish", id=webinar.id)
            )
        else:
            builder.button(
                text=_("⏸ Stop sales"),
                callback_data=WebinarAction(action="unpublish", id=webinar.id),
            )
        sizes.append(2)
        if webinar.access_mode == AccessMode.LINKS:
            builder.button(
                text=_("📥 Import links"),
                callback_data=WebinarAction(action="links", id=webinar.id),
            )
            sizes.append(1)
    if summary.status == DisplayStatus.FINISHED:
        builder.button(
            text=_("🎬 Recording"), callback_data=WebinarAction(action="recording", id=webinar.id)
        )
        sizes.append(1)
    builder.button(
        text=_("👥 Participants"), callback_data=WebinarAction(action="people", id=webinar.id)
    )
    if webinar.status != WebinarStatus.CANCELLED:
        builder.button(
            text=_("❌ Cancel webinar"), callback_data=WebinarAction(action="cancel", id=webinar.id)
        )
        sizes.append(2)
    else:
        sizes.append(1)
    builder.button(text=_("⬅️ All webinars"), callback_data=WebinarAction(action="list"))
    sizes.append(1)
    builder.adjust(*sizes)
    return builder.as_markup()


async def render_card(
    membership: Membership, services: Services, webinar_id: int
) -> tuple[str, InlineKeyboardMarkup]:
    """The management card of one of the caller's webinars."""
    summary = await services.webinars.summary(membership.org.id, webinar_id)
    link = services.webinars.share_link(summary.webinar)
    text = card_text(summary, membership.org.timezone, link, current_locale())
    return text, card_keyboard(summary)


async def render_list(
    membership: Membership, services: Services, page: int = 0
) -> tuple[str, InlineKeyboardMarkup | None]:
    summaries = await services.webinars.summaries(membership.org.id)
    if not summaries:
        return _("No webinars yet. /newwebinar creates the first one."), None
    pages = (len(summaries) + PAGE - 1) // PAGE
    page = min(max(page, 0), pages - 1)
    shown = summaries[page * PAGE : (page + 1) * PAGE]
    locale = current_locale()
    lines = []
    builder = InlineKeyboardBuilder()
    for number, summary in enumerate(shown, start=page * PAGE + 1):
        webinar = summary.webinar
        lines.append(
            _(
                "{number}. <b>{title}</b>\n"
                "    {when} · {status}\n"
                "    Sold {seats} · revenue {revenue}",
                number=number,
                title=escape(webinar.title),
                when=local_datetime(webinar.starts_at, membership.org.timezone, locale),
                status=status_name(summary.status),
                seats=seats_text(summary),
                revenue=revenue_text(summary, locale),
            )
        )
        builder.button(
            text=f"{number}. {webinar.title}"[:60],
            callback_data=WebinarAction(action="open", id=webinar.id),
        )
    sizes = [1] * len(shown)
    if pages > 1:
        nav = 0
        if page > 0:
            builder.button(text="⬅️", callback_data=WebinarAction(action="page", id=page - 1))
            nav += 1
        if page < pages - 1:
            builder.button(text="➡️", callback_data=WebinarAction(action="page", id=page + 1))
            nav += 1
        sizes.append(nav)
    builder.adjust(*sizes)
    header = _("🗂 Webinars of <b>{org}</b>", org=escape(membership.org.name))
    if pages > 1:
        header += f" ({page + 1}/{pages})"
    return header + "\n\n" + "\n\n".join(lines), builder.as_markup()


@router.message(Command("webinars"))
async def webinars(message: Message, membership: Membership, services: Services) -> None:
    """List the organization's webinars."""
    text, markup = await render_list(membership, services)
    await message.answer(text, reply_markup=markup)


@router.callback_query(WebinarAction.filter(F.action.in_({"list", "page"})))
async def list_page(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """The list again, or another page of it."""
    await query.answer()
    page = callback_data.id if callback_data.action == "page" else 0
    await show(query, *await render_list(membership, services, page))


@router.callback_query(WebinarAction.filter(F.action == "open"))
async def open_card(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Open a webinar's management card."""
    text, markup = await render_card(membership, services, callback_data.id)
    await query.answer()
    await show(query, text, markup)


@router.callback_query(WebinarAction.filter(F.action == "publish"))
async def publish(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Put the webinar on sale and hand out its share link."""
    webinar = await services.webinars.publish(membership.org.id, callback_data.id)
    await query.answer(_("Published: it is on sale now."))
    await show(query, *await render_card(membership, services, webinar.id))
    await reply(
        query,
        _(
            "🚀 «{title}» is on sale. Share this link: people open it, see the webinar and pay "
            "right in Telegram.\n\n{link}",
            title=escape(webinar.title),
            link=services.webinars.share_link(webinar),
        ),
    )


@router.callback_query(WebinarAction.filter(F.action == "unpublish"))
async def unpublish(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Stop sales; tickets already sold stay valid."""
    webinar = await services.webinars.unpublish(membership.org.id, callback_data.id)
    await query.answer(_("Sales stopped. Tickets already sold stay valid."), show_alert=True)
    await show(query, *await render_card(membership, services, webinar.id))


@router.callback_query(WebinarAction.filter(F.action == "cancel"))
async def ask_cancel(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Ask before cancelling: it cannot be undone."""
    summary = await services.webinars.summary(membership.org.id, callback_data.id)
    if summary.webinar.status == WebinarStatus.CANCELLED:
        await query.answer(_("This webinar is already cancelled."), show_alert=True)
        return
    builder = InlineKeyboardBuilder()
    builder.button(
        text=_("Yes, cancel and refund"),
        callback_data=WebinarAction(action="cancel_yes", id=summary.webinar.id),
    )
    builder.button(
        text=_("No, keep it"), callback_data=WebinarAction(action="open", id=summary.webinar.id)
    )
    builder.adjust(1)
    await query.answer()
    await show(
        query,
        _n(
            "Cancel «{title}»? Sales stop, reminders are dropped, and {n} participant is "
            "refunded and told. This cannot be undone.",
            "Cancel «{title}»? Sales stop, reminders are dropped, and {n} participants are "
            "refunded and told. This cannot be undone.",
            summary.sold,
            title=escape(summary.webinar.title),
        ),
        builder.as_markup(),
    )


@router.callback_query(WebinarAction.filter(F.action == "cancel_yes"))
async def cancel(
    query: CallbackQuery,
    callback_data: WebinarAction,
    membership: Membership,
    services: Services,
) -> None:
    """Cancel the webinar and refund its participants."""
    # Check first: a forged or stale button must not even hear "cancelling".
    await services.webinars.get(membership.org.id, callback_data.id)
    await query.answer(_("Cancelling…"))
    outcome = await services.webinars.cancel(
        membership.org.id, callback_data.id, requested_by=query.from_user.id
    )
    queued = outcome.refunds.queued
    await show(query, *await render_card(membership, services, outcome.webinar.id))
    text = _("«{title}» is cancelled.", title=escape(outcome.webinar.title))
    if queued:
        text += " " + _n(
            "{n} refund is on its way: the participant is told once the money is back, and "
            "you are alerted if the payment provider refuses it.",
            "{n} refunds are on their way: each participant is told once their money is "
            "back, and you are alerted if the payment provider refuses one.",
            queued,
        )
    await reply(query, text)


@router.callback_query(WebinarAction.filter(F.action == "resend"))
async def resend_access(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Send the new room link and password to everyone who paid."""
    planned = await services.webinars.resend_access(membership.org.id, callback_data.id)
    await query.answer()
    text = (
        _n(
            "The new access is on its way to {n} participant.",
            "The new access is on its way to {n} participants.",
            planned,
        )
        if planned
        else _("Already sent: nothing more to do.")
    )
    await show(query, text, None)
