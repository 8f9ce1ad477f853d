"""Pure filters (``F.text``, ``F.chat.type == "private"``, FSM states) evaluated on the event loop.

aiogram calls every filter that is not a coroutine function through ``asyncio.to_thread``. A
magic filter is registered as its ``resolve`` method and a ``State`` as its ``__call__``, both
synchronous: each ``F`` expression or state met while an update travels the routers costs a
round trip through the default thread pool (a future, a lock, a wake-up of the loop) for an
attribute lookup and a comparison. Measured with ``bench/rush.py``, that pool was the largest
single item of the bot's profile.

Both are pure, fast Python, so :func:`resolve_pure_filters_inline` wraps each in an awaitable
that calls it in place; aiogram passes it the same arguments and the result is unchanged. Other
synchronous filters keep aiogram's thread. It runs once, when the dispatcher is built, and a test
checks that no filter of the bot's routers goes through a thread, so an aiogram release that
changes this shows at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiogram.fsm.state import State

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aiogram import Router
    from aiogram.dispatcher.event.handler import FilterObject


def _filters(root: Router) -> Iterator[FilterObject]:
    """Every filter of ``root``'s tree: each observer's own (``_handler``) and its handlers'."""
    for router in root.chain_tail:
        for observer in router.observers.values():
            for handler in (observer._handler, *observer.handlers):
                yield from handler.filters or ()


def _is_pure(filter_object: FilterObject) -> bool:
    return filter_object.magic is not None or isinstance(filter_object.callback, State)


def _awaitable(function: Callable[..., Any]) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return call


def resolve_pure_filters_inline(root: Router) -> int:
    """Make the magic filters and states of ``root``'s tree run without a thread."""
    changed = 0
    for filter_object in _filters(root):
        if not filter_object.awaitable and _is_pure(filter_object):
            # aiogram keeps the parameter names it read from the original callback.
            filter_object.callback = _awaitable(filter_object.callback)
            filter_object.awaitable = True
            changed += 1
    return changed


def threaded_filters(root: Router) -> list[FilterObject]:
    """Filters of ``root``'s tree that aiogram would run in a thread (the test's check)."""
    return [filter_object for filter_object in _filters(root) if not filter_object.awaitable]
