"""aiogram routers. Each parses an update, calls a service, renders a localized reply."""

from __future__ import annotations

import copy

from aiogram import Router


def get_routers() -> list[Router]:
    """All routers, in the order they are matched: specific ones first.

    Modules declare their routers once, the aiogram way; a router can belong to one Dispatcher
    only, so the first Dispatcher of a process (the only one ``python -m bot`` builds) takes
    them as they are and each later one (tests, demo and benchmarks build several) gets copies.
    """
    global _handed_out
    routers = _module_routers()
    if not _handed_out:
        _handed_out = True
        return routers
    return [_detached_copy(router) for router in routers]


def _detached_copy(router: Router) -> Router:
    # The original may belong to the first Dispatcher: its copy belongs to none (the memo makes
    # deepcopy put None where the parent was, instead of copying that whole Dispatcher).
    return copy.deepcopy(router, {id(router.parent_router): None} if router.parent_router else {})


_handed_out = False


def _module_routers() -> list[Router]:
    from handlers import (
        admin,
        broadcast,
        common,
        feedback,
        my,
        participant,
        payments,
        reconcile,
        refunds,
        timezone,
    )

    # Payment updates first: they match nothing else, and they are the ones a rush must not slow.
    # Then the rest of a purchase (the webinar's deep link, the buy buttons): its handlers match
    # only their own deep-link prefix and callback data, and ahead of the admin router a buyer's
    # update no longer walks its thirteen sub-routers' filters (4% of a rush's CPU).
    sales = [my.router, timezone.router, refunds.router, feedback.router]
    # The owners' /reconcile before the admin wizards, which would take it for stray input.
    return [
        payments.router,
        participant.router,
        reconcile.router,
        admin.router,
        *sales,
        broadcast.router,
        common.router,
    ]
