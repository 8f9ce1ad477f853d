"""The method registry: each area module registers its Bot API methods with :func:`api`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.state import SimBot

__all__ = ["METHODS", "Handler", "MethodSpec", "api", "find_method"]

Handler = Callable[[Host, SimBot, Params], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A Bot API method: its canonical name, its handler, and whether flood limits apply."""

    name: str
    handler: Handler
    rate_limited: bool


METHODS: dict[str, MethodSpec] = {}


def api(name: str, *, rate_limited: bool = False) -> Callable[[Handler], Handler]:
    """Register a Bot API method handler under its (case-insensitive) name."""

    def register(handler: Handler) -> Handler:
        key = name.lower()
        if key in METHODS and METHODS[key].handler is not handler:
            raise RuntimeError(f"Bot API method {name} registered twice")
        METHODS[key] = MethodSpec(name, handler, rate_limited)
        return handler

    return register


def find_method(name: str) -> MethodSpec | None:
    """The registered method called ``name`` (any case), if any."""
    return METHODS.get(name.lower())
