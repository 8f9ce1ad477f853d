"""Deterministic crash points, so tests can kill the real bot exactly where a crash hurts most.

``crash_point("intake.stored")`` ends the process at once (``os._exit(137)``, as a SIGKILL would
look: no cleanup, no flush, no ``finally``) when the environment variable ``WEBINARPASS_CRASH_AT``
names that point; otherwise it does nothing. The variable is read once, at import, so a point
that is not armed costs one comparison.

Points: ``intake.stored`` (updates stored and committed, not handled yet),
``payments.recorded`` (a successful payment committed, the buyer not answered yet),
``intake.handled`` (an update handled and answered, not yet marked done).
"""

from __future__ import annotations

import os

ENV = "WEBINARPASS_CRASH_AT"
EXIT_CODE = 137

_armed = os.environ.get(ENV) or None


def crash_point(name: str) -> None:
    if _armed is not None and _armed == name:
        os._exit(EXIT_CODE)
