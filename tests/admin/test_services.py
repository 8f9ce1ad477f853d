"""Organizer services against the real database: organizations, team, webinars, links,
participants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.clock import FakeClock
from bot.services import Services
from bot.services.admin_input import InvalidInput, NotAllowed, NotAvailable
from bot.services.organizations import Membership, OrgDraft, OrgField
from bot.services.reminders import moved_key_prefix
from bot.services.webinars import DisplayStatus, WebinarDraft, WebinarField
from storage.enums import (
    AccessMode,
    OrderStatus,
    OutboxKind,
    OutboxStatus,
    PaymentMethod,
    PaymentStatus,
    Role,
    TicketStatus,
    WebinarStatus,
)
from storage.models import AccessLink, Order, OrgMember, OutboxMessage, Payment, Ticket
from tests.conftest import OWNER_ID
from tests.factories import NOW, add_links, make_org, make_user, make_webinar

DRAFT = OrgDraft(
    name="Acme",
    contact_email="team@acme.org",
    language="ru",
    currency="EUR",
    timezone="Europe/Rome",
)


async def membership(services: Services, user_id: int) -> Membership:
    user = await make_user(services.session, user_id)
    found = await services.organizations.current(user)
    assert found is not None
    return found


async def sell(services: Services, webinar, user_id: int, *, stars: int = 100) -> Ticket:
    """A paid ticket as the selling flow leaves it (written straight, not through sales)."""
    session = services.session
    await make_user(session, user_id, first_name=f"P{user_id}", username=f"p{user_id}")
    order = Order(
        token=f"t{user_id}-{webinar.id}",
        webinar_id=webinar.id,
        user_id=user_id,
        method=PaymentMethod.STARS,
        amount_minor=stars,
        currency="XTR",
        status=OrderStatus.PAID,
        created_at=NOW,
    )
    session.add(order)
    await session.flush()
    payment = Payment(
        order_id=order.id,
        user_id=user_id,
        method=PaymentMethod.STARS,
        telegram_payment_charge_id=f"ch-{order.id}",
        amount_minor=stars,
        currency="XTR",
        status=PaymentStatus.SUCCEEDED,
        created_at=NOW,
    )
    session.add(payment)
    await session.flush()
    ticket = Ticket(
        order_id=order.id,
        payment_id=payment.id,
        webinar_id=webinar.id,
        user_id=user_id,
        created_at=NOW,
    )
    session.add(ticket)
    await session.flush()
    return ticket


# -- organizations and team ------------------------------------------------------------------


async def test_owner_creates_an_organization_and_acts_for_it(services: Services) -> None:
    owner = await make_user(services.session, OWNER_ID)
    org = await services.organizations.create(owner, DRAFT)
    current = await services.organizations.current(owner)
    assert current is not None
    assert (current.org.id, current.role) == (org.id, Role.OWNER)
    assert (org.language, org.currency, org.accept_stars, org.accept_stripe) == (
        "ru",
        "EUR",
        True,
        False,
    )


async def test_creating_is_for_bot_owners_unless_registration_is_open(
    services: Services,
) -> None:
    stranger = await make_user(services.session, 2000)
    with pytest.raises(NotAllowed):
        await services.organizations.create(stranger, DRAFT)
    services.app.settings = services.app.settings.model_copy(update={"open_registration": True})
    assert (await services.organizations.create(stranger, DRAFT)).created_by == 2000


async def test_invite_is_single_use_and_expires(services: Services, clock: FakeClock) -> None:
    orgs = services.organizations
    await make_org(services.session, OWNER_ID)
    owner = await membership(services, OWNER_ID)
    invite = await orgs.create_invite(owner, OWNER_ID)
    assert orgs.invite_link(invite) == f"https://t.me/webinarpass_bot?start=inv_{invite.code}"
    assert len(f"inv_{invite.code}") <= 64

    bob = await make_user(services.session, 2000)
    joined = await orgs.accept_invite(bob, invite.code)
    assert (joined.org.id, joined.role) == (owner.org.id, Role.ADMIN)
    carol = await make_user(services.session, 3000)
    with pytest.raises(InvalidInput, match="already been used"):
        await orgs.accept_invite(carol, invite.code)
    with pytest.raises(InvalidInput, match="not valid"):
        await orgs.accept_invite(carol, "forged")

    late = await orgs.create_invite(owner, OWNER_ID)
    clock.advance(hours=25)
    with pytest.raises(InvalidInput, match="expired"):
        await orgs.accept_invite(carol, late.code)
    assert await orgs.current(carol) is None


async def test_owner_removes_admins_but_is_never_removed(services: Services) -> None:
    orgs = services.organizations
    org = await make_org(services.session, OWNER_ID)
    other = await make_org(services.session, 5000, name="Other")
    bob = await make_user(services.session, 2000)
    for org_id in (other.id, org.id):
        services.session.add(
            OrgMember(org_id=org_id, user_id=2000, role=Role.ADMIN, created_at=NOW)
        )
    bob.active_org_id = org.id
    await services.session.commit()
    owner = await membership(services, OWNER_ID)
    admin = await membership(services, 2000)

    with pytest.raises(NotAllowed):
        await orgs.remove_member(admin, OWNER_ID)
    with pytest.raises(NotAllowed, match="owner cannot be removed"):
        await orgs.remove_member(owner, OWNER_ID)
    with pytest.raises(NotAvailable):
        await orgs.remove_member(owner, 5000)  # another organization's owner

    removal = await orgs.remove_member(owner, 2000)
    assert removal.still_organizer
    assert bob.active_org_id == other.id  # moved to the organization they still belong to
    assert [m.user.id for m in await orgs.team(org.id)] == [OWNER_ID]


async def test_switching_between_organizations(services: Services) -> None:
    orgs = services.organizations
    first = await make_org(services.session, OWNER_ID, name="First")
    second = await make_org(services.session, OWNER_ID, name="Second")
    stranger_org = await make_org(services.session, 5000, name="Theirs")
    await services.session.commit()
    owner = await make_user(services.session, OWNER_ID)
    assert [m.org.name for m in await orgs.memberships(OWNER_ID)] == ["First", "Second"]
    assert (await orgs.switch(owner, first.id)).org.id == first.id
    assert (await orgs.current(owner)).org.id == first.id
    with pytest.raises(NotAvailable):
        await orgs.switch(owner, stranger_org.id)
    assert second.id != first.id


async def test_org_fields_validate_and_payment_methods_need_configuration(
    services: Services,
) -> None:
    orgs = services.organizations
    await make_org(services.session, OWNER_ID)
    owner = await membership(services, OWNER_ID)
    await orgs.update(owner, OrgField.NAME, "  New   name ")
    assert owner.org.name == "New name"
    with pytest.raises(InvalidInput):
        await orgs.update(owner, OrgField.EMAIL, "nope")
    with pytest.raises(InvalidInput):
        await orgs.update(owner, OrgField.TIMEZONE, "Moon/Base")
    await orgs.update(owner, OrgField.TERMS, "No refunds after the start.")
    await orgs.update(owner, OrgField.SUPPORT, "@acme_help")
    assert (owner.org.terms_text, owner.org.support_contact) == (
        "No refunds after the start.",
        "@acme_help",
    )
    with pytest.raises(InvalidInput, match="not configured"):
        await orgs.toggle_method(owner, PaymentMethod.STRIPE)
    await orgs.toggle_method(owner, PaymentMethod.STARS)
    assert owner.org.accept_stars is False

    services.app.settings = services.app.settings.model_copy(
        update={"yookassa_provider_token": "381764678:TEST:1"}
    )
    with pytest.raises(InvalidInput, match="roubles"):
        await orgs.toggle_method(owner, PaymentMethod.YOOKASSA)
    await orgs.update(owner, OrgField.CURRENCY, "RUB")
    await orgs.toggle_method(owner, PaymentMethod.YOOKASSA)
    assert owner.org.accept_yookassa
    await orgs.update(owner, OrgField.CURRENCY, "USD")
    assert not owner.org.accept_yookassa


# -- webinars --------------------------------------------------------------------------------


async def test_create_list_publish_and_isolation(services: Services, clock: FakeClock) -> None:
    await make_org(services.session, OWNER_ID)
    theirs = await make_org(services.session, 5000, name="Theirs")
    their_webinar = await make_webinar(services.session, theirs)
    await services.session.commit()
    owner = await membership(services, OWNER_ID)
    webinars = services.webinars
    starts = webinars.parse(WebinarField.START, "2026-12-05 18:30", owner.org)
    draft = WebinarDraft(
        title="Pricing",
        starts_at=starts,
        access_mode=AccessMode.PASSWORD,
        price_stars=150,
        capacity=2,
        room_url="https://meet.example.org/r",
        room_password="pw",
    )
    webinar = await webinars.create(owner, draft, OWNER_ID)
    assert webinar.status == WebinarStatus.DRAFT
    assert webinar.starts_at == datetime(2026, 12, 5, 17, 30, tzinfo=UTC)
    assert webinars.share_link(webinar) == f"https://t.me/webinarpass_bot?start=w_{webinar.code}"
    assert not webinar.code.isdigit()

    [summary] = await webinars.summaries(owner.org.id)
    assert (summary.status, summary.sold, summary.revenue) == (DisplayStatus.DRAFT, 0, {})

    await webinars.publish(owner.org.id, webinar.id)
    await sell(services, webinar, 2001)
    await sell(services, webinar, 2002, stars=150)
    await services.session.commit()
    summary = await webinars.summary(owner.org.id, webinar.id)
    assert (summary.status, summary.sold, summary.revenue) == (
        DisplayStatus.SOLD_OUT,
        2,
        {"XTR": 250},
    )
    clock.set(webinar.starts_at + timedelta(hours=2))
    assert (await webinars.summary(owner.org.id, webinar.id)).status == DisplayStatus.FINISHED

    for call in (
        webinars.get(owner.org.id, their_webinar.id),
        webinars.publish(owner.org.id, their_webinar.id),
        webinars.cancel(owner.org.id, their_webinar.id, OWNER_ID),
        webinars.edit(owner.org.id, their_webinar.id, WebinarField.TITLE, "Mine now"),
        services.links.import_links(owner.org.id, their_webinar.id, "https://x.example.org/1"),
        services.participants.list(owner.org.id, their_webinar.id),
    ):
        with pytest.raises(NotAvailable):
            await call
    assert their_webinar.title == "Pricing for founders"
    assert [s.webinar.id for s in await webinars.summaries(owner.org.id)] == [webinar.id]


async def test_publish_needs_access_and_a_way_to_pay(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID, accept_stars=False)
    no_room = await make_webinar(
        services.session, org, status=WebinarStatus.DRAFT, room_url=None, price_stars=None
    )
    paid = await make_webinar(services.session, org, status=WebinarStatus.DRAFT)
    group = await make_webinar(
        services.session, org, status=WebinarStatus.DRAFT, access_mode=AccessMode.GROUP
    )
    await services.session.commit()
    with pytest.raises(InvalidInput, match="room link"):
        await services.webinars.publish(org.id, no_room.id)
    with pytest.raises(InvalidInput, match="Nobody could pay"):
        await services.webinars.publish(org.id, paid.id)
    with pytest.raises(InvalidInput, match="group"):
        await services.webinars.publish(org.id, group.id)


async def test_seats_cannot_drop_below_sold(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org, capacity=10)
    await sell(services, webinar, 2001)
    await sell(services, webinar, 2002)
    await services.session.commit()
    with pytest.raises(InvalidInput, match="already sold: 2"):
        await services.webinars.edit(org.id, webinar.id, WebinarField.SEATS, 1)
    outcome = await services.webinars.edit(org.id, webinar.id, WebinarField.SEATS, None)
    assert outcome.webinar.capacity is None


async def test_moving_the_start_bumps_the_schedule_version(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org)
    await services.session.commit()
    new_start = webinar.starts_at + timedelta(days=1)
    await services.webinars.edit(org.id, webinar.id, WebinarField.START, new_start)
    assert (webinar.starts_at, webinar.schedule_version) == (new_start, 2)
    await services.webinars.edit(org.id, webinar.id, WebinarField.START, new_start)
    assert webinar.schedule_version == 2  # the same time again moves nothing


async def test_changing_the_password_offers_and_sends_new_access_once(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org)
    t1 = await sell(services, webinar, 2001)
    t2 = await sell(services, webinar, 2002)
    await services.session.commit()
    outcome = await services.webinars.edit(org.id, webinar.id, WebinarField.PASSWORD, "new-pass")
    assert outcome.to_notify == 2
    assert await services.webinars.resend_access(org.id, webinar.id) == 2
    assert await services.webinars.resend_access(org.id, webinar.id) == 0  # a double press
    rows = (await services.session.scalars(select(OutboxMessage))).all()
    assert sorted((r.kind, r.ticket_id, r.chat_id) for r in rows) == [
        (OutboxKind.ACCESS, t1.id, 2001),
        (OutboxKind.ACCESS, t2.id, 2002),
    ]
    unchanged = await services.webinars.edit(org.id, webinar.id, WebinarField.PASSWORD, "new-pass")
    assert unchanged.to_notify == 0


async def test_cancel_stops_sales_drops_reminders_and_refunds(
    services: Services,
) -> None:
    org = await make_org(services.session, OWNER_ID, language="it")
    webinar = await make_webinar(services.session, org)
    ticket = await sell(services, webinar, 2001)
    await services.outbox.enqueue(
        OutboxKind.REMINDER,
        dedupe_key="r1",
        chat_id=2001,
        webinar_id=webinar.id,
        ticket_id=ticket.id,
    )
    await services.session.commit()
    outcome = await services.webinars.cancel(org.id, webinar.id, OWNER_ID)
    assert (outcome.webinar.status, outcome.tickets) == (WebinarStatus.CANCELLED, 1)
    assert webinar.cancelled_at == NOW
    rows = {r.kind: r for r in (await services.session.scalars(select(OutboxMessage))).all()}
    assert rows[OutboxKind.REMINDER].status == OutboxStatus.DROPPED
    assert outcome.refunds is not None  # handed over to the refunds service
    with pytest.raises(InvalidInput, match="cancelled"):
        await services.webinars.edit(org.id, webinar.id, WebinarField.TITLE, "Back")
    with pytest.raises(InvalidInput, match="cancelled"):
        await services.webinars.publish(org.id, webinar.id)


async def test_cancel_drops_start_moved_notices_and_broadcasts(
    services: Services,
) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org)
    ticket = await sell(services, webinar, 2001)
    moved = f"{moved_key_prefix(webinar.id)}{ticket.id}"
    await services.outbox.notice(
        dedupe_key=moved, chat_id=2001, text="new time", webinar_id=webinar.id
    )
    await services.outbox.enqueue(
        OutboxKind.BROADCAST,
        dedupe_key="b1",
        chat_id=2001,
        webinar_id=webinar.id,
        ticket_id=ticket.id,
    )
    await services.session.commit()
    await services.webinars.cancel(org.id, webinar.id, OWNER_ID)
    rows = {r.dedupe_key: r for r in (await services.session.scalars(select(OutboxMessage))).all()}
    assert rows[moved].status == OutboxStatus.DROPPED
    assert rows["b1"].status == OutboxStatus.DROPPED


async def test_access_mode_changes_only_before_sales(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org)
    await services.session.commit()
    changed = await services.webinars.set_access(org.id, webinar.id, AccessMode.LINKS)
    assert (changed.access_mode, changed.room_url) == (AccessMode.LINKS, None)
    await sell(services, webinar, 2001)
    await services.session.commit()
    with pytest.raises(InvalidInput, match="no longer change"):
        await services.webinars.set_access(
            org.id, webinar.id, AccessMode.PASSWORD, room_url="https://x.example.org/r"
        )


# -- links and participants ------------------------------------------------------------------


async def test_link_import_counts_and_reports(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org, access_mode=AccessMode.LINKS)
    password = await make_webinar(services.session, org)
    [old] = await add_links(services.session, webinar, 1)
    ticket = await sell(services, webinar, 2001)
    services.session.add_all(
        [
            AccessLink(
                webinar_id=webinar.id, url="https://meet.example.org/t", ticket_id=ticket.id
            ),
            AccessLink(webinar_id=webinar.id, url="https://meet.example.org/f"),
        ]
    )
    await services.session.commit()

    text = f"{old.url}\nhttps://new.example.org/1\nnonsense\nhttps://new.example.org/1\n"
    outcome = await services.links.import_links(org.id, webinar.id, text)
    assert outcome.added == 1
    assert [(p.line, p.issue.value) for p in outcome.problems] == [
        (1, "in_pool"),
        (3, "not_a_link"),
        (4, "duplicate"),
    ]
    assert (outcome.pool.free, outcome.pool.assigned, outcome.pool.revoked) == (3, 1, 0)
    link = (
        await services.session.scalars(select(AccessLink).where(AccessLink.url == old.url))
    ).one()
    link.revoked_at = NOW
    await services.session.commit()
    stats = await services.links.stats(org.id, webinar.id)
    assert (stats.free, stats.assigned, stats.revoked) == (2, 1, 1)

    with pytest.raises(InvalidInput, match="unique links"):
        await services.links.import_links(org.id, password.id, "https://x.example.org/1")
    with pytest.raises(InvalidInput, match="empty"):
        await services.links.import_links(org.id, webinar.id, "  \n")


async def test_participants_and_csv(services: Services) -> None:
    org = await make_org(services.session, OWNER_ID)
    webinar = await make_webinar(services.session, org)
    first = await sell(services, webinar, 2001)
    first.access_delivered_at = NOW
    second = await sell(services, webinar, 2002, stars=150)
    second.status = TicketStatus.REFUNDED
    user = await make_user(services.session, 2002)
    user.first_name = "=HYPERLINK(1)"
    await services.session.commit()

    listing = await services.participants.list(org.id, webinar.id)
    assert [p.user_id for p in listing.active] == [2001]
    assert [(p.amount_minor, p.currency, p.method) for p in listing.participants] == [
        (100, "XTR", PaymentMethod.STARS),
        (150, "XTR", PaymentMethod.STARS),
    ]
    data = services.participants.csv(listing, "ru")
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").splitlines()
    assert len(lines) == 3
    assert lines[1].split(",")[:6] == [str(first.id), "2001", "P2001", "p2001", "active", "100"]
    assert ",'=HYPERLINK(1)," in lines[2]
    assert ",refunded," in lines[2]
