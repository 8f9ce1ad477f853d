"""SQLAlchemy's sync code run from asyncio on greenlets kept between calls.

SQLAlchemy's asyncio layer runs its sync code (a pool's checkout and check-in, say) in a greenlet,
which switches back to the event loop whenever that code awaits the driver
(``sqlalchemy.util.greenlet_spawn``). It makes a new greenlet for every call, and a new
greenlet's first Python frame takes a fresh 16 KB chunk of frame stack from the operating system
(an ``mmap``, and a ``munmap`` when the greenlet ends): 7.5 of the 8.5 us of CPU a call costs
here, where a switch into a greenlet that already runs is 0.5 us. ``storage.direct`` makes two
such calls per transaction, some thirteen per purchase in a rush.

:func:`in_greenlet` is ``greenlet_spawn`` on a greenlet kept from an earlier call: the same
protocol (SQLAlchemy's ``await_`` switches to the caller with the awaitable, which is awaited in
the caller's task and its result or exception sent back), the caller's context variables (the
connection's urgency, ``storage.pool``), and the function's exception raised in the caller.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

__all__ = ["in_greenlet"]

T = TypeVar("T")

# Greenlets kept per thread once their call ended; more at once (calls waiting for a pooled
# connection, each in its greenlet) are let go when they end.
KEPT = 32


class _Worker(greenlet):
    """A greenlet that runs one sync call after another, each for the task that switched to it."""

    # What SQLAlchemy's ``await_`` asks of the greenlet it runs in.
    __sqlalchemy_greenlet_provider__ = True


class _Done:
    """A call's end, switched to the caller: its value, or the exception it raised."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


def _serve(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A worker's life: run a call, hand its end to the caller, wait for the next call."""
    while True:
        try:
            done = _Done(fn(*args), None)
        except GreenletExit:
            raise  # the worker itself is being collected: it ends
        except BaseException as error:  # the caller's to raise, in its own task
            done = _Done(None, error)
        del fn, args  # nothing of the call is held while the worker waits (nor in ``done``,
        # which the caller empties)
        fn, args = getcurrent().parent.switch(done)


class _Idle(threading.local):
    def __init__(self) -> None:
        self.workers: list[_Worker] = []


_idle = _Idle()


async def in_greenlet(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)``, which may ``await_`` the driver, as ``greenlet_spawn`` would."""
    idle = _idle.workers
    worker = idle.pop() if idle else _Worker(_serve)
    caller = getcurrent()
    worker.parent = caller
    worker.gr_context = caller.gr_context  # the task's context variables, as in the task
    result = worker.switch(fn, args)
    while not isinstance(result, _Done):
        try:
            value = await result
        except BaseException:
            result = worker.throw(*sys.exc_info())
        else:
            result = worker.switch(value)
    if len(idle) < KEPT:
        idle.append(worker)
    value, error = result.value, result.error
    result.value = result.error = None
    if error is not None:
        raise error
    return value  # type: ignore[no-any-return]
