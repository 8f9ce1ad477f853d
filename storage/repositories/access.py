"""The read behind an access message: one ticket with its webinar, organization, link and the
holder's time zone, in one prebuilt Core statement.

The access message is rendered right before it is sent, once per ticket sold, so this read runs
as often as payments do. Loaded through the ORM it took four statements (the ticket, the webinar
with its organization, the link, the user), each with the identity map's bookkeeping; here it is
one statement, built once at import time and run on the driver (``storage.direct``), and the
row becomes model instances without the ORM's loading machinery: plain instances with their
column values set, attached to no session. They are read-only views for the renderer, which is
all it needs: nothing about them is written back (a new group invite is its own row, added by
the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select

from storage.direct import Prebuilt
from storage.models import AccessLink, Organization, Ticket, User, Webinar
from storage.repositories.base import DirectRepository, built

_MODELS = (Ticket, Webinar, Organization, AccessLink)
_TABLES = tuple(model.__table__ for model in _MODELS)
_KEYS = tuple(tuple(column.key for column in table.columns) for table in _TABLES)
_tickets, _webinars, _orgs, _links = _TABLES
_users = User.__table__

# One row per ticket: a ticket has at most one link (``access_links.ticket_id`` is unique) and
# one holder. The link and the user are outer joins: a ticket may wait for its link, and a holder
# row is not required for the message to go out.
_ACCESS_VIEW = Prebuilt(
    select(
        *_tickets.columns, *_webinars.columns, *_orgs.columns, *_links.columns, _users.c.timezone
    )
    .select_from(_tickets)
    .join(_webinars, _webinars.c.id == _tickets.c.webinar_id)
    .join(_orgs, _orgs.c.id == _webinars.c.org_id)
    .outerjoin(_links, _links.c.ticket_id == _tickets.c.id)
    .outerjoin(_users, _users.c.id == _tickets.c.user_id)
    .where(_tickets.c.id == bindparam("ticket_id"))
)


@dataclass(slots=True)
class AccessView:
    """One ticket with everything its access message shows (see the module docstring)."""

    ticket: Ticket
    webinar: Webinar
    org: Organization
    link: AccessLink | None
    own_zone: str | None


class AccessRepository(DirectRepository):
    async def access_view(self, ticket_id: int) -> AccessView | None:
        """The ticket and what its access shows, whatever the ticket's status (None if there is
        no such ticket); the caller decides what a refunded ticket gets."""
        values = await _ACCESS_VIEW.first(self.session, {"ticket_id": ticket_id})
        if values is None:
            return None
        objects = []
        start = 0
        for model, keys in zip(_MODELS, _KEYS, strict=True):
            part = values[start : start + len(keys)]
            start += len(keys)
            objects.append(built(model, keys, part))
        ticket, webinar, org, link = objects
        if link.id is None:  # the outer join found no link
            link = None
        return AccessView(ticket, webinar, org, link, values[start])
