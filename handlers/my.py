"""/my (the participant's tickets with their access), /paysupport and /terms."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.formatting import MESSAGE_LIMIT, escape, page_bounds
from bot.i18n import _
from bot.services import Services

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")


def chunks(blocks: list[str], limit: int = MESSAGE_LIMIT) -> list[str]:
    """Join blocks into as few messages as fit Telegram's length limit, as Telegram counts it
    (HTML parsed, UTF-16 units), never cutting a block."""
    return ["\n\n".join(blocks[a:b]) for a, b in page_bounds(blocks, limit, separator="\n\n")]


@router.message(Command("my"))
async def my_tickets(message: Message, services: Services) -> None:
    """List the participant's active tickets, each with its access again."""
    assert message.from_user is not None
    items = await services.access.my_tickets(message.from_user.id)
    if not items:
        await message.answer(
            _("You have no tickets yet. Open a webinar's link to buy one right here.")
        )
        return
    blocks = [_("<b>Your webinars</b>")]
    blocks += [services.access.access_text(item) for item in items]
    for text in chunks(blocks):
        await message.answer(text)


@router.message(Command("paysupport"))
async def pay_support(message: Message, services: Services) -> None:
    """Payment help: the contact of the organization the user bought from."""
    assert message.from_user is not None
    org = await services.sales.buyer_org(message.from_user.id)
    if org is None:
        await message.answer(
            _(
                "For help with a payment, write to the organizer of your webinar: their "
                "contact is on the webinar's page. Refunds are made by the organizer, "
                "back to the way you paid."
            )
        )
        return
    contact = org.support_contact or org.contact_email
    await message.answer(
        _(
            "For help with a payment to {organization}, write to {contact}. "
            "Please mention the webinar and the date of your payment. "
            "Refunds are made by the organizer, back to the way you paid.",
            locale=org.language,
            organization=escape(org.name),
            contact=escape(contact),
        )
    )


@router.message(Command("terms"))
async def terms(message: Message, services: Services) -> None:
    """Terms of sale of the organization the user bought from, or the general ones."""
    assert message.from_user is not None
    org = await services.sales.buyer_org(message.from_user.id)
    if org is not None and org.terms_text:
        await message.answer(
            _(
                "<b>Terms of sale of {organization}</b>\n\n{terms}",
                locale=org.language,
                organization=escape(org.name),
                terms=escape(org.terms_text),
            )
        )
        return
    await message.answer(
        _(
            "<b>Terms of sale</b>\n\n"
            "A ticket gives one person access to one webinar; personal links must not be "
            "shared. You pay inside Telegram and get your access here at once. If a webinar "
            "is cancelled, every ticket is refunded. Other refunds are decided by the "
            "organizer: /paysupport shows how to reach them.",
            locale=org.language if org else None,
        )
    )
