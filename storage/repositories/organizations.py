from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update

from storage.enums import Role
from storage.models import Organization, OrgInvite, OrgMember, Ticket, User, Webinar
from storage.repositories.base import Repository


class OrganizationRepository(Repository):
    async def get(self, org_id: int) -> Organization | None:
        return await self.session.get(Organization, org_id)

    async def add(self, org: Organization) -> Organization:
        self.session.add(org)
        await self.session.flush()
        return org

    async def add_member(self, org_id: int, user_id: int, role: Role, now: datetime) -> OrgMember:
        member = OrgMember(org_id=org_id, user_id=user_id, role=role, created_at=now)
        self.session.add(member)
        await self.session.flush()
        return member

    async def membership(self, user_id: int, org_id: int) -> tuple[Organization, Role] | None:
        row = (
            await self.session.execute(
                select(Organization, OrgMember.role)
                .join(OrgMember, OrgMember.org_id == Organization.id)
                .where(OrgMember.user_id == user_id, OrgMember.org_id == org_id)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def is_ticket_member(self, user_id: int, ticket_id: int) -> bool:
        """Whether ``user_id`` organizes the organization that sold ``ticket_id``."""
        found = await self.session.scalar(
            select(OrgMember.id)
            .join(Webinar, Webinar.org_id == OrgMember.org_id)
            .join(Ticket, Ticket.webinar_id == Webinar.id)
            .where(Ticket.id == ticket_id, OrgMember.user_id == user_id)
            .limit(1)
        )
        return found is not None

    async def memberships(self, user_id: int) -> list[tuple[Organization, Role]]:
        rows = await self.session.execute(
            select(Organization, OrgMember.role)
            .join(OrgMember, OrgMember.org_id == Organization.id)
            .where(OrgMember.user_id == user_id)
            .order_by(Organization.name, Organization.id)
        )
        return [(org, role) for org, role in rows]

    async def members(self, org_id: int) -> list[tuple[OrgMember, User]]:
        rows = await self.session.execute(
            select(OrgMember, User)
            .join(User, User.id == OrgMember.user_id)
            .where(OrgMember.org_id == org_id)
            .order_by(OrgMember.created_at, OrgMember.id)
        )
        return [(member, user) for member, user in rows]

    async def remove_member(self, org_id: int, user_id: int) -> bool:
        result = await self.session.execute(
            delete(OrgMember).where(
                OrgMember.org_id == org_id,
                OrgMember.user_id == user_id,
                OrgMember.role != Role.OWNER,
            )
        )
        return bool(result.rowcount)

    async def add_invite(self, invite: OrgInvite) -> OrgInvite:
        self.session.add(invite)
        await self.session.flush()
        return invite

    async def invite_by_code(self, code: str) -> OrgInvite | None:
        return await self.session.scalar(select(OrgInvite).where(OrgInvite.code == code))

    async def claim_invite(self, invite_id: int, user_id: int, now: datetime) -> bool:
        """Use an invite once: a conditional write, so two people racing for it cannot both win."""
        result = await self.session.execute(
            update(OrgInvite)
            .where(
                OrgInvite.id == invite_id,
                OrgInvite.used_by.is_(None),
                OrgInvite.expires_at > now,
            )
            .values(used_by=user_id, used_at=now)
        )
        return bool(result.rowcount)
