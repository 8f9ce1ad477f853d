"""/stats end to end: a sale through the sandbox, then the organizer's figures."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.application import BotApplication
from bot.sandbox import SandboxServer
from tests.conftest import OWNER_ID
from tests.factories import make_org, make_webinar


async def test_stats_show_tickets_revenue_and_methods(
    sandbox: SandboxServer, bot_app: BotApplication, session: AsyncSession
) -> None:
    org = await make_org(session, OWNER_ID, name="Acme", language="en")
    webinar = await make_webinar(session, org, title="Pricing", price_stars=100, capacity=20)
    await make_webinar(session, org, title="Later", price_stars=50)
    await session.commit()

    bob = sandbox.user(4001, first_name="Bob", language_code="en")
    await bob.command("/start", f"w_{webinar.code}")
    card = await bob.next_message()
    await bob.press(card, text=next(t for t in card.button_texts if "⭐" in t))
    result = await bob.pay(await bob.next_message())
    assert result.ok

    owner = sandbox.user(OWNER_ID, first_name="Olga", language_code="en")
    for _ in range(50):  # the payment's transaction may still be settling
        await owner.command("/stats")
        text = (await owner.next_message()).text
        if "Tickets: 1" in text:
            break
    assert "Sales of Acme" in text
    assert "Tickets: 1" in text
    assert "Revenue: 100 ⭐" in text
    assert "Stars: 1 payment, 100 ⭐" in text
    assert "• Pricing: 1/20 · 100 ⭐" in text
    assert "• Later: 0/∞ · 0" in text


async def test_stats_are_for_organizers_only(
    sandbox: SandboxServer, bot_app: BotApplication
) -> None:
    stranger = sandbox.user(4002, first_name="Ivan", language_code="en")
    await stranger.command("/stats")
    assert "for webinar organizers" in (await stranger.next_message()).text
