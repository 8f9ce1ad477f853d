"""Organizer admin: organizations, team, webinars, link pools, participants.

One parent router for private chats. Routers whose handlers act for an organization carry the
``IsOrganizer`` filter on the router itself, so every handler there gets the caller's membership
and nothing else; refusals for everybody else live in ``fallbacks``, matched last.
"""

from __future__ import annotations

from aiogram import F, Router

from handlers.admin import (
    edit,
    fallbacks,
    invites,
    links,
    neworg,
    newwebinar,
    org,
    participants,
    recordings,
    stats,
    team,
    webinars,
    wizard,
)
from handlers.admin.base import AdminErrors

router = Router(name=__name__)
router.message.filter(F.chat.type == "private")
router.message.outer_middleware(AdminErrors())
router.callback_query.outer_middleware(AdminErrors())
router.include_routers(
    wizard.router,
    invites.router,
    neworg.router,
    org.router,
    team.router,
    newwebinar.router,
    edit.router,
    webinars.router,
    recordings.router,
    links.router,
    participants.router,
    stats.router,
    fallbacks.router,
)
