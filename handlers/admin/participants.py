"""/participants: who holds a ticket for a webinar, what they paid, whether access reached them;
the full list as a CSV document."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.formatting import MESSAGE_LIMIT, escape, money, page_bounds, visible_length
from bot.i18n import _, _n, current_locale
from bot.services import Services
from bot.services.organizations import Membership
from bot.services.participants import Participant
from handlers.admin.base import IsOrganizer, WebinarAction, show
from handlers.refunds import RefundCallback
from storage.enums import PaymentMethod

router = Router(name=__name__)
router.message.filter(IsOrganizer())
router.callback_query.filter(IsOrganizer())

# Refund buttons per page: a keyboard holds 100 buttons, and a long one is hard to use.
SHOWN = 30
NAME_SHOWN = 128  # Telegram's own bound on first plus last name; longer stored names are cut
METHODS = {
    PaymentMethod.STARS: "Stars",
    PaymentMethod.STRIPE: "Stripe",
    PaymentMethod.YOOKASSA: "YooKassa",
}


def line(number: int, p: Participant, locale: str) -> str:
    who = escape(p.name[:NAME_SHOWN]) + (f" (@{escape(p.username)})" if p.username else "")
    if p.currency:
        paid = f"{money(p.amount_minor, p.currency, locale)} · {METHODS.get(p.method, '')}"  # type: ignore[arg-type]
    else:
        paid = _("free")
    access = _("✅ access delivered") if p.access_delivered_at else _("⏳ access not delivered yet")
    if p.refund_pending:
        access += " · " + _("↩️ refund in progress")
    elif p.refund_failed:
        access += " · " + _(
            "⚠️ refund refused by the provider: owed, /refund {ticket}", ticket=p.ticket_id
        )
    return f"{number}. #{p.ticket_id} {who} · {paid} · {access}"


@router.message(Command("participants"))
async def choose_webinar(message: Message, membership: Membership, services: Services) -> None:
    """Pick the webinar whose participants to show."""
    summaries = await services.webinars.summaries(membership.org.id)
    if not summaries:
        await message.answer(_("No webinars yet. /newwebinar creates the first one."))
        return
    builder = InlineKeyboardBuilder()
    for summary in summaries[:30]:
        builder.button(
            text=f"{summary.webinar.title} · 👥 {summary.sold}"[:60],
            callback_data=WebinarAction(action="people", id=summary.webinar.id),
        )
    builder.adjust(1)
    await message.answer(_("Which webinar?"), reply_markup=builder.as_markup())


def people_keyboard(
    webinar_id: int, shown: list[Participant], page: int, pages: int
) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    sizes = []
    for p in shown:
        if p.method is not None:  # free tickets have nothing to refund
            builder.button(
                text=_("↩️ Refund #{ticket} {name}", ticket=p.ticket_id, name=p.name)[:48],
                callback_data=RefundCallback(ticket_id=p.ticket_id, action="ask"),
            )
            sizes.append(1)
    if pages > 1:
        nav = [(page - 1, "⬅️"), (page + 1, "➡️")]
        for target, arrow in nav:
            if 0 <= target < pages:
                builder.button(
                    text=arrow,
                    callback_data=WebinarAction(action="people", id=webinar_id, value=str(target)),
                )
        sizes.append(2 if 0 < page < pages - 1 else 1)
    builder.button(
        text=_("📄 Export CSV"), callback_data=WebinarAction(action="csv", id=webinar_id)
    )
    builder.button(text=_("⬅️ Back"), callback_data=WebinarAction(action="open", id=webinar_id))
    builder.adjust(*sizes, 1, 1)
    return builder.as_markup()


@router.callback_query(WebinarAction.filter(F.action == "people"))
async def people(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """The paid participants of one webinar, a page at a time."""
    listing = await services.participants.list(membership.org.id, callback_data.id)
    active = listing.active
    locale = current_locale()
    header = _n(
        "👥 <b>{title}</b>: {n} participant",
        "👥 <b>{title}</b>: {n} participants",
        len(active),
        title=escape(listing.webinar.title),
    )
    lines = [line(number, p, locale) for number, p in enumerate(active, start=1)]
    # Pages are cut by what Telegram counts, never inside a line: long names fill a page sooner.
    room = MESSAGE_LIMIT - visible_length(f"{header} (9999/9999)\n\n")
    bounds = page_bounds(lines, room, most=SHOWN) or [(0, 0)]
    page = int(callback_data.value) if callback_data.value.isdigit() else 0
    page = min(page, len(bounds) - 1)
    start, end = bounds[page]
    if len(bounds) > 1:
        header += f" ({page + 1}/{len(bounds)})"
    body = "\n".join(lines[start:end]) if lines else _("Nobody yet.")
    await query.answer()
    keyboard = people_keyboard(listing.webinar.id, active[start:end], page, len(bounds))
    await show(query, f"{header}\n\n{body}", keyboard)


@router.callback_query(WebinarAction.filter(F.action == "csv"))
async def export(
    query: CallbackQuery, callback_data: WebinarAction, membership: Membership, services: Services
) -> None:
    """Every ticket as a CSV document."""
    listing = await services.participants.list(membership.org.id, callback_data.id)
    data = services.participants.csv(listing, current_locale())
    await query.answer()
    if query.bot is not None:
        await query.bot.send_document(
            query.from_user.id,
            BufferedInputFile(data, filename=f"participants-{listing.webinar.id}.csv"),
            caption=_n(
                "{title}: {n} ticket",
                "{title}: {n} tickets",
                len(listing.participants),
                title=escape(listing.webinar.title),
            ),
        )
