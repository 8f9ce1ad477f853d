"""Faults queued for the next Bot API calls: 5xx answers and slow answers (client timeouts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["REDIRECT_MARK", "Fault", "Faults", "TransportFault", "TransportFaultKind"]

REDIRECT_MARK = "sandbox_redirect"
TransportFaultKind = Literal["redirect_loop", "disconnect", "bad_gateway"]


@dataclass
class TransportFault:
    """A failure below the Bot API: a proxy's redirect loop, a dropped connection, an HTML 502."""

    kind: TransportFaultKind
    methods: frozenset[str] | None
    remaining: int | None


@dataclass(slots=True)
class Fault:
    """One injected fault: an error answer, a delay before answering, or both."""

    method: str | None  # lower-case method name, None for any method
    status: int | None
    description: str
    delay: float


class Faults:
    """Faults queued for the next calls, taken first come, first served.

    ``server.faults.fail_next("sendMessage", status=502)`` answers the next ``sendMessage``
    with ``502 Bad Gateway``; ``server.faults.delay_next("getMe", seconds=3)`` makes the next
    ``getMe`` wait 3 s, past a client's shorter timeout.
    """

    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def fail_next(
        self,
        method: str | None = None,
        *,
        status: int = 502,
        description: str = "Bad Gateway",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls (of ``method``, or any) with ``status``."""
        key = method.lower() if method else None
        self._pending.extend(Fault(key, status, description, 0.0) for _ in range(times))

    def delay_next(self, method: str | None = None, *, seconds: float, times: int = 1) -> None:
        """Wait ``seconds`` before answering the next ``times`` calls (of ``method``, or any)."""
        key = method.lower() if method else None
        self._pending.extend(Fault(key, None, "", seconds) for _ in range(times))

    def clear(self) -> None:
        """Drop every fault not used yet."""
        self._pending.clear()

    def take(self, method: str) -> Fault | None:
        """The first pending fault for ``method``, removed from the queue."""
        key = method.lower()
        for index, fault in enumerate(self._pending):
            if fault.method is None or fault.method == key:
                return self._pending.pop(index)
        return None
