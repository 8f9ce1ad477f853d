"""aiogram routers. Each parses an update, calls a service, renders a localized reply."""

from __future__ import annotations

import copy

from aiogram import Router


def get_routers() -> list[Router]:
    """Fresh copies of all routers, in the order they are matched: specific ones first.

    Modules declare their routers once, the aiogram way; a router can belong to one Dispatcher
    only, so each Dispatcher (tests, demo and benchmarks build several per process) gets copies.
    """
    return [copy.deepcopy(router) for router in _module_routers()]


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
    sales = [participant.router, my.router, timezone.router, refunds.router, feedback.router]
    # The owners' /reconcile before the admin wizards, which would take it for stray input.
    return [
        payments.router,
        reconcile.router,
        admin.router,
        *sales,
        broadcast.router,
        common.router,
    ]
