"""Test data written straight through the models, for tests that need a world to act in."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from storage.enums import AccessMode, Role, WebinarStatus
from storage.models import AccessLink, Organization, OrgMember, User, Webinar

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # FakeClock's default start


async def make_user(
    session: AsyncSession,
    user_id: int,
    *,
    first_name: str = "User",
    username: str | None = None,
    language_code: str | None = "en",
) -> User:
    user = await session.get(User, user_id)
    if user is None:
        user = User(
            id=user_id,
            first_name=first_name,
            username=username,
            language_code=language_code,
            created_at=NOW,
        )
        session.add(user)
        await session.flush()
    return user


async def make_org(
    session: AsyncSession,
    owner_id: int,
    *,
    name: str = "Acme Webinars",
    language: str = "en",
    currency: str = "USD",
    timezone: str = "Europe/Rome",
    accept_stars: bool = True,
    accept_stripe: bool = False,
    accept_yookassa: bool = False,
    **fields: object,
) -> Organization:
    owner = await make_user(session, owner_id, first_name="Owner")
    org = Organization(
        name=name,
        contact_email="team@example.org",
        language=language,
        currency=currency,
        timezone=timezone,
        accept_stars=accept_stars,
        accept_stripe=accept_stripe,
        accept_yookassa=accept_yookassa,
        created_by=owner_id,
        created_at=NOW,
        **fields,
    )
    session.add(org)
    await session.flush()
    session.add(OrgMember(org_id=org.id, user_id=owner_id, role=Role.OWNER, created_at=NOW))
    owner.active_org_id = org.id
    await session.flush()
    return org


async def make_webinar(
    session: AsyncSession,
    org: Organization,
    *,
    title: str = "Pricing for founders",
    starts_at: datetime | None = None,
    price_stars: int | None = 100,
    price_minor: int | None = None,
    capacity: int | None = None,
    access_mode: AccessMode = AccessMode.PASSWORD,
    status: WebinarStatus = WebinarStatus.PUBLISHED,
    reminder_offsets: list[int] | None = None,
    **fields: object,
) -> Webinar:
    defaults: dict[str, object] = {}
    if access_mode == AccessMode.PASSWORD:
        defaults = {"room_url": "https://meet.example.org/room/42", "room_password": "s3cret"}
    defaults.update(fields)
    webinar = Webinar(
        org_id=org.id,
        code=secrets.token_urlsafe(9),
        title=title,
        description="How to set prices that sell.",
        starts_at=starts_at or NOW + timedelta(days=7),
        duration_minutes=90,
        currency=org.currency,
        price_minor=price_minor,
        price_stars=price_stars,
        capacity=capacity,
        access_mode=access_mode,
        status=status,
        reminder_offsets=[1440, 60, 10] if reminder_offsets is None else reminder_offsets,
        created_by=org.created_by,
        created_at=NOW,
        **defaults,
    )
    session.add(webinar)
    await session.flush()
    return webinar


async def add_links(session: AsyncSession, webinar: Webinar, count: int) -> list[AccessLink]:
    links = [
        AccessLink(
            webinar_id=webinar.id,
            url=f"https://meet.example.org/j/{webinar.id}-{i}",
            created_at=NOW,
        )
        for i in range(count)
    ]
    session.add_all(links)
    await session.flush()
    return links
