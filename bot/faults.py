"""Deterministic crash points, so tests can kill the real bot exactly where a crash hurts most.

``crash_point("intake.stored")`` ends the process at once (``os._exit(137)``, as a SIGKILL would
look: no cleanup, no flush, no ``finally``) when the environment variable ``WEBINARPASS_CRASH_AT``
names that point; otherwise it does nothing. The variable is read once, at import, so a point
that is not armed costs one comparison.

Points: ``intake.stored`` (updates stored and committed, not handled nor acknowledged yet),
``payments.recorded`` (a successful payment committed, its update not finished: a recording's
confirmation not sent yet; a seat's is its access message, in the outbox),
``intake.handled`` (an update handled and answered, not yet marked done), ``sales.ordered`` (a buy
button's order committed, its invoice not sent yet). The intake's points
take the detail ``payment`` when the update is a successful or refunded payment.
"""

from __future__ import annotations

import os

ENV = "WEBINARPASS_CRASH_AT"
EXIT_CODE = 137

_armed = os.environ.get(ENV) or None
ARMED = _armed is not None  # callers may skip computing a detail when nothing is armed


def crash_point(name: str, detail: str | None = None) -> None:
    """Crash here if armed with ``name``, or with ``name:detail`` (``intake.stored:payment``:
    only where the update is a payment)."""
    if _armed is not None and (_armed == name or _armed == f"{name}:{detail}"):
        os._exit(EXIT_CODE)
