"""The buyer's side: a webinar's deep link shows its card, a button sends the invoice; join
requests to a webinar's group are approved for ticket holders only."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    CallbackQuery,
    ChatJoinRequest,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)

from bot.faults import crash_point
from bot.formatting import escape, money
from bot.i18n import _, _n
from bot.services import Services
from bot.services.purchases import PaymentResult
from bot.services.sales import Offer, Price, SaleState
from bot.services.timezones import show_time
from bot.services.users import Touch
from bot.telegram_session import unread_answer
from storage.enums import PaymentMethod, Product

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")
log = logging.getLogger(__name__)

DEEP_LINK_PREFIX = "w_"
FREE = "free"


class BuyCallback(CallbackData, prefix="buy"):
    webinar_id: int
    method: str  # a PaymentMethod value, or "free"


class BuyRecording(CallbackData, prefix="buyrec"):
    webinar_id: int
    method: str  # a PaymentMethod value


_CARD_LINK = f"/start {DEEP_LINK_PREFIX}"
_PAID_BUTTON = f"{BuyCallback.__prefix__}{BuyCallback.__separator__}"
_FREE_BUTTON = f"{BuyCallback.__separator__}{FREE}"


def stores_its_user(update: Update) -> bool:
    """Whether ``update`` is a webinar's deep link or a paid buy button in a private chat: the
    two updates of every purchase whose handlers (:func:`webinar_card`, :func:`buy`) have their
    use case store the user in its own transaction, from the user middleware's ``touch``
    (``bot.middlewares.UserMiddleware``). Read from the update as the routes' filters read it;
    an update picked here that no such handler takes is simply not stored."""
    message = update.message
    if message is not None:
        text = message.text
        return text is not None and text.startswith(_CARD_LINK) and message.chat.type == "private"
    query = update.callback_query
    if query is None or query.data is None:
        return False
    return query.data.startswith(_PAID_BUTTON) and not query.data.endswith(_FREE_BUTTON)


def recording_label(price: Price, lang: str) -> str:
    amount = money(price.amount_minor, price.currency, lang)
    if price.method == PaymentMethod.STARS:
        return _("🎬 Buy the recording with Stars: {amount}", locale=lang, amount=amount)
    return _("🎬 Buy the recording by card: {amount}", locale=lang, amount=amount)


def method_label(price: Price, lang: str) -> str:
    amount = money(price.amount_minor, price.currency, lang)
    if price.method == PaymentMethod.STARS:
        return _("⭐ Pay with Telegram Stars: {amount}", locale=lang, amount=amount)
    if price.method == PaymentMethod.STRIPE:
        return _("💳 Pay by card: {amount}", locale=lang, amount=amount)
    return _("💳 Pay with YooKassa: {amount}", locale=lang, amount=amount)


def price_line(price: Price, lang: str) -> str:
    amount = money(price.amount_minor, price.currency, lang)
    if price.method == PaymentMethod.STARS:
        return _("⭐ Telegram Stars: {amount}", locale=lang, amount=amount)
    if price.method == PaymentMethod.STRIPE:
        return _("💳 Card: {amount}", locale=lang, amount=amount)
    return _("💳 YooKassa: {amount}", locale=lang, amount=amount)


def render_card(offer: Offer) -> tuple[str, InlineKeyboardMarkup | None]:
    """The webinar card, in the organization's language, with one button per method."""
    webinar, org = offer.webinar, offer.org
    lang = org.language
    lines = [f"<b>{escape(webinar.title)}</b>"]
    if webinar.description:
        lines.append(escape(webinar.description))
    lines.append("")
    lines.append(
        _(
            "🗓 {starts}",
            locale=lang,
            starts=show_time(webinar.starts_at, org, offer.viewer_timezone),
        )
    )
    lines.append(
        _n(
            "⏱ Duration: {n} minute",
            "⏱ Duration: {n} minutes",
            webinar.duration_minutes,
            locale=lang,
        )
    )
    lines.append(_("👤 Organizer: {name}", locale=lang, name=escape(org.name)))
    if webinar.is_free:
        lines.append(_("🎁 Free", locale=lang))
    elif offer.prices and not offer.recording_prices:
        lines.append(_("Price:", locale=lang))
        lines.extend(price_line(price, lang) for price in offer.prices)
    if offer.seats_left is not None and offer.state == SaleState.ON_SALE:
        lines.append(_n("🎟 {n} seat left", "🎟 {n} seats left", offer.seats_left, locale=lang))

    status = {
        SaleState.SOLD_OUT: _("😔 Sold out: all seats are taken.", locale=lang),
        SaleState.STARTED: _("This webinar has already started: sales are closed.", locale=lang),
        SaleState.CANCELLED: _("This webinar has been cancelled.", locale=lang),
        SaleState.NOT_ON_SALE: _("This webinar is not on sale yet.", locale=lang),
    }
    # One button a row, built as the markup itself: aiogram's keyboard builder deep-copies its
    # buttons at every export, three times per card (56 us for one button, against 14 us).
    buttons: list[InlineKeyboardButton] = []
    if offer.own_ticket_id is not None:
        lines += ["", _("✅ You have a ticket. /my shows your access.", locale=lang)]
    elif offer.recording_prices:
        lines += ["", _("🎬 The webinar is over. Its recording is for sale:", locale=lang)]
        lines.extend(price_line(price, lang) for price in offer.recording_prices)
        buttons.extend(
            InlineKeyboardButton(
                text=recording_label(price, lang),
                callback_data=BuyRecording(webinar_id=webinar.id, method=price.method.value).pack(),
            )
            for price in offer.recording_prices
        )
    elif offer.state != SaleState.ON_SALE:
        lines += ["", status[offer.state]]
    elif webinar.is_free:
        buttons.append(
            InlineKeyboardButton(
                text=_("🎟 Get a free ticket", locale=lang),
                callback_data=BuyCallback(webinar_id=webinar.id, method=FREE).pack(),
            )
        )
    elif not offer.prices:
        lines += ["", _("Payments for this webinar are not open yet.", locale=lang)]
    else:
        buttons.extend(
            InlineKeyboardButton(
                text=method_label(price, lang),
                callback_data=BuyCallback(webinar_id=webinar.id, method=price.method.value).pack(),
            )
            for price in offer.prices
        )
    markup = InlineKeyboardMarkup(inline_keyboard=[[button] for button in buttons])
    return "\n".join(lines), (markup if buttons else None)


@router.message(CommandStart(deep_link=True, magic=F.args.startswith(DEEP_LINK_PREFIX)))
async def webinar_card(
    message: Message, command: CommandObject, services: Services, touch: Touch | None = None
) -> None:
    """Show the card of the webinar behind a ``t.me/<bot>?start=w_<code>`` link."""
    code = (command.args or "")[len(DEEP_LINK_PREFIX) :]
    assert message.from_user is not None
    offer = await services.sales.offer(code, message.from_user.id, touch=touch)
    if offer is None:
        await message.answer(
            _(
                "I could not find this webinar. Please check the link with the organizer.",
                locale=touch.locale if touch is not None else None,
            )
        )
        return
    text, markup = render_card(offer)
    with unread_answer():  # the hot path: the Message Telegram returns is not parsed
        await message.answer(text, reply_markup=markup)


@router.callback_query(
    BuyCallback.filter(F.method.in_([*(method.value for method in PaymentMethod), FREE]))
)
async def buy(
    query: CallbackQuery,
    callback_data: BuyCallback,
    services: Services,
    bot: Bot,
    touch: Touch | None = None,
) -> None:
    """Send the invoice of the chosen payment method (or issue a free ticket)."""
    user_id = query.from_user.id
    if callback_data.method == FREE:
        outcome = await services.purchases.register_free(user_id, callback_data.webinar_id)
        refusal = outcome.extra.get("refusal")
        if refusal:
            await query.answer(refusal, show_alert=True)
            return
        await query.answer()
        if outcome.result == PaymentResult.REPLAY and outcome.org is not None:
            await bot.send_message(
                user_id,
                _("✅ You have a ticket. /my shows your access.", locale=outcome.org.language),
            )
        return
    result = await services.sales.create_invoice(
        user_id, callback_data.webinar_id, PaymentMethod(callback_data.method), touch=touch
    )
    crash_point("sales.ordered")
    if result.invoice is None:
        await query.answer(result.refusal, show_alert=True)
        return
    await query.answer()
    with unread_answer():
        await bot.send_invoice(**result.invoice)


@router.callback_query(BuyRecording.filter(F.method.in_([m.value for m in PaymentMethod])))
async def buy_recording(
    query: CallbackQuery, callback_data: BuyRecording, services: Services, bot: Bot
) -> None:
    """Send the invoice for a past webinar's recording."""
    result = await services.sales.create_invoice(
        query.from_user.id,
        callback_data.webinar_id,
        PaymentMethod(callback_data.method),
        Product.RECORDING,
    )
    if result.invoice is None:
        await query.answer(result.refusal, show_alert=True)
        return
    await query.answer()
    with unread_answer():
        await bot.send_invoice(**result.invoice)


@router.chat_join_request()
async def join_request(request: ChatJoinRequest, services: Services) -> None:
    """Approve ticket holders' requests to join a webinar's group, decline everyone else's;
    leave requests to other chats alone (their own admins decide)."""
    allowed = await services.access.may_join(request.chat.id, request.from_user.id)
    if allowed is None:
        return
    if allowed:
        await request.approve()
    else:
        await request.decline()
