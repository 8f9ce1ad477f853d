"""aiogram routers. Each parses an update, calls a service, renders a localized reply."""

from __future__ import annotations

from aiogram import Router


def get_routers() -> list[Router]:
    """All routers in the order they are matched: specific ones first, catch-alls last."""
    from handlers import common

    return [common.router]
