"""Listening to the real engine's events for the length of a block (the count tests' tracers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@contextmanager
def listening(
    engine: AsyncEngine, listeners: list[tuple[str, Callable[..., Any]]]
) -> Iterator[None]:
    """Each ``(event name, listener)`` is attached to the engine inside the block only."""
    for name, listener in listeners:
        event.listen(engine.sync_engine, name, listener)
    try:
        yield
    finally:
        for name, listener in listeners:
            event.remove(engine.sync_engine, name, listener)
